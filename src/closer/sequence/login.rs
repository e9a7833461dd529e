//! The wait for the login: a step that could not be sent for want of a token sent
//! nothing, so it waits for a token (no deadline) unless the conversation is seen
//! closed or the daemon stops meanwhile (the close then stays unfinished).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::closer::{CloseReport, Closer, note_error};
use crate::genesys::api::ApiError;
use crate::rules::Rule;
use crate::step::{Call, Step};

use super::{Close, End, RETRY_PAUSE_MAX, Raced, Stepped, Waiter, retry_pauses};

/// How often a wait for the login looks whether the daemon is stopping.
const DRAIN_POLL: Duration = Duration::from_millis(100);

/// How a wait for the login ended.
enum Login {
    /// A token can be had again: try the step again.
    Token,
    /// The conversation was seen closed meanwhile.
    Closed(Option<Instant>),
    /// The daemon is stopping: the close stays unfinished for the next start.
    Stopping,
}

/// A wait for the login that did not end in a token.
enum NoLogin {
    Closed(Option<Instant>),
    Stopping,
}

impl Closer {
    /// A request that found no token: wait for the login ([`wait_for_login`]); the
    /// conversation seen closed meanwhile, or the daemon stopping, ends the sequence.
    ///
    /// [`wait_for_login`]: Self::wait_for_login
    pub(super) async fn login_or_end(
        &self,
        c: &mut Close<'_>,
        call: Call,
        e: &ApiError,
    ) -> Stepped<()> {
        let rule = Arc::clone(&c.rule);
        let id = &*c.d.conversation_id;
        match self
            .wait_for_login(id, &rule, &mut c.waiter, call, e, &mut c.r)
            .await
        {
            Login::Token => Ok(()),
            Login::Closed(at) => Err(End::by_event(at)),
            Login::Stopping => Err(End::Unfinished),
        }
    }

    /// `what` could not be sent for want of a token (the login refused, e.g. a revoked
    /// client secret, or unreachable): nothing went out, so this is an unfinished
    /// close, not a failed one. Waits with a jittered backoff (capped at 30 s) for a
    /// token, with no deadline, one warning per try; a conversation seen closed
    /// meanwhile ends the wait, and so does the daemon stopping (the journal then
    /// keeps the close for the next start).
    async fn wait_for_login(
        &self,
        id: &str,
        rule: &Rule,
        waiter: &mut Waiter,
        what: Call,
        first: &ApiError,
        r: &mut CloseReport,
    ) -> Login {
        note_error(r, first);
        self.journal.note(
            id,
            &Step::WaitingLogin {
                call: what.clone(),
                error: first.to_string(),
            },
        );
        let mut pauses = retry_pauses();
        let mut error = first.to_string();
        loop {
            // Jittered, so closes waiting together spread out.
            let delay = pauses.next().unwrap_or(RETRY_PAUSE_MAX);
            tracing::warn!(conversation_id = id, rule = &*rule.name, step = what.name(), error = %error,
                retry_in_ms = delay.as_millis() as u64,
                "no access token, so nothing was sent; the close is kept and tried again \
                 until the login works");
            if let Err(why) = self
                .unless_closed_or_stopping(id, waiter, tokio::time::sleep(delay))
                .await
            {
                return self.login_wait_ended(id, why);
            }
            match self
                .unless_closed_or_stopping(id, waiter, self.api.token())
                .await
            {
                Ok(Ok(_)) => {
                    tracing::info!(
                        conversation_id = id,
                        rule = &*rule.name,
                        step = what.name(),
                        "access token obtained again; sending"
                    );
                    return Login::Token;
                }
                Ok(Err(e)) => error = e.to_string(),
                Err(why) => return self.login_wait_ended(id, why),
            }
        }
    }

    fn login_wait_ended(&self, id: &str, why: NoLogin) -> Login {
        match why {
            NoLogin::Closed(at) => Login::Closed(at),
            NoLogin::Stopping => {
                tracing::warn!(
                    conversation_id = id,
                    "stopping while no access token can be had: the close stays unfinished \
                     in the journal and the next start resumes it"
                );
                self.journal.note(id, &Step::Unfinished);
                Login::Stopping
            }
        }
    }

    /// [`race`](Self::race), also ended by the daemon stopping (its tracker closed for
    /// the drain).
    async fn unless_closed_or_stopping<T>(
        &self,
        id: &str,
        waiter: &mut Waiter,
        step: impl Future<Output = T>,
    ) -> Result<T, NoLogin> {
        let stopping = async {
            while !self.tracker.is_closed() {
                tokio::time::sleep(DRAIN_POLL).await;
            }
        };
        tokio::select! {
            biased;
            raced = self.race(id, waiter, step) => match raced {
                Raced::Done(out) => Ok(out),
                Raced::Closed(at) => Err(NoLogin::Closed(at)),
            },
            () = stopping => Err(NoLogin::Stopping),
        }
    }
}
