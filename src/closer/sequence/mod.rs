//! One close sequence, step by step (see the module doc of [`super`]): the order of
//! the steps, the race of every request against the conversation's end, the wait, the
//! read and the teardown. The farewell, the disconnect, the wait for the login and the
//! wrap-up after a confirmed close are in the files beside this one.

mod confirmed;
mod disconnect;
mod farewell;
mod login;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{CloseReport, Closer, ConfirmedBy, Decision, ENSURE_WITHIN, Outcome, note_error};
use crate::genesys::api::ApiError;
use crate::genesys::budget::Priority;
use crate::rules::Rule;
use crate::step::{Call, Step};

/// First pause of the retries of a disconnect that failed for a reason that passes.
const RETRY_PAUSE_MIN: Duration = Duration::from_secs(1);
/// Longest pause between two tries of a step: a retry after a failure that passes, and
/// a fresh login after one was refused.
const RETRY_PAUSE_MAX: Duration = Duration::from_secs(30);
/// The pauses between two tries of a step: doubling from [`RETRY_PAUSE_MIN`] to
/// [`RETRY_PAUSE_MAX`], each between half and all of that (backon's jitter adds up to
/// the delay again), without end (the caller's deadline, if any, ends it).
fn retry_pauses() -> backon::ExponentialBackoff {
    use backon::BackoffBuilder as _;
    backon::ExponentialBuilder::default()
        .with_min_delay(RETRY_PAUSE_MIN / 2)
        .with_max_delay(RETRY_PAUSE_MAX / 2)
        .with_jitter()
        .without_max_times()
        .build()
}

/// How often the state map is looked at for a close once the waiter is gone (dropped
/// by someone else); while it is in place, the waiter answers at once.
const STORE_POLL: Duration = Duration::from_millis(100);

/// The confirmation waiter of a running sequence: registered before the first
/// request, kept until the sequence ends; `None` once it fired or was dropped.
type Waiter = Option<oneshot::Receiver<Instant>>;

/// How a step raced against the conversation's end came out.
enum Raced<T> {
    /// The step finished first.
    Done(T),
    /// The conversation was seen closed first (at the event's arrival when the waiter
    /// said so): the step was dropped, and with it any retry it had in store.
    Closed(Option<Instant>),
}

/// How a close sequence ended before its last step.
enum End {
    /// The conversation was seen closed: by `by`, at the event's arrival when known.
    Confirmed {
        at: Option<Instant>,
        by: ConfirmedBy,
        outcome: Outcome,
    },
    /// The daemon is stopping while no token can be had: no outcome, so the journal
    /// keeps the close for the next start.
    Unfinished,
    /// The report says how it ended (already closed, dry run, failed).
    Report,
}

impl End {
    /// Seen closed by its pushed event (or the waiter's recheck of the map).
    fn by_event(at: Option<Instant>) -> End {
        End::Confirmed {
            at,
            by: ConfirmedBy::Event,
            outcome: Outcome::Confirmed,
        }
    }

    /// Seen closed by the sequence's own read.
    fn by_read() -> End {
        End::Confirmed {
            at: None,
            by: ConfirmedBy::Read,
            outcome: Outcome::Confirmed,
        }
    }
}

/// A step's result: go on with `T`, or the sequence ends so.
type Stepped<T> = Result<T, End>;

/// One running close: the decision, its rule, the report being written and the waiter.
struct Close<'a> {
    d: &'a Decision,
    rule: Arc<Rule>,
    r: CloseReport,
    waiter: Waiter,
}

impl Closer {
    /// Runs one close to its end; `None` when it was left unfinished (the daemon stops
    /// while no token can be had): no outcome is recorded, so the journal keeps it for
    /// the next start.
    pub(super) async fn sequence(&self, d: Decision) -> Option<CloseReport> {
        let report = self.steps(&d).await;
        // Whatever way it ended, the waiter goes (a no-op when it fired).
        self.waiters.cancel(&d.conversation_id);
        report
    }

    /// The steps in order; each named step below either goes on or ends the sequence
    /// (`?`), and how it ended becomes the report here.
    async fn steps(&self, d: &Decision) -> Option<CloseReport> {
        let rule = Arc::clone(&d.verdict.rule);
        let mut c = Close {
            d,
            r: CloseReport {
                conversation_id: d.conversation_id.clone(),
                rule: Arc::clone(&rule.name),
                intent: d.verdict.intent.clone(),
                queue_id: d.queue_id.clone(),
                source: d.source,
                outcome: Outcome::Failed,
                latency: Duration::ZERO,
                sent: Vec::new(),
                confirmed_by: None,
                correlation_id: None,
                request_correlation_id: None,
                event_correlation_id: d.event_correlation_id.clone(),
                reason: None,
            },
            rule,
            waiter: None,
        };
        match self.run_steps(&mut c).await {
            Ok(()) | Err(End::Report) => Some(c.r),
            Err(End::Unfinished) => None,
            Err(End::Confirmed { at, by, outcome }) => {
                let rule = Arc::clone(&c.rule);
                self.confirmed(d, &rule, c.r, at, by, outcome).await
            }
        }
    }

    async fn run_steps(&self, c: &mut Close<'_>) -> Stepped<()> {
        let d = c.d;
        if d.already_closed {
            c.r.outcome = Outcome::AlreadyClosed;
            return Err(End::Report);
        }
        if c.rule.dry_run {
            c.r.outcome = Outcome::DryRun;
            c.r.reason = Some("dry run: would disconnect".into());
            return Err(End::Report);
        }
        // At most `max_concurrent_closes` sequences send at once; the rest queue here.
        let _turn = Arc::clone(&self.running).acquire_owned().await;
        self.resumed_read(c).await?;
        self.confirming_topic(c).await;
        let accepted_before = d.resume.as_ref().is_some_and(|s| s.disconnect_accepted());
        if !accepted_before {
            self.farewell_step(c).await;
        }
        self.register_waiter(c)?;
        let accepted = accepted_before || self.disconnect(c).await?;
        if accepted {
            self.wait_for_close(c, accepted_before).await?;
        }
        self.read_once(c).await?;
        // The teardown answers only a disconnect Genesys accepted that did not take; a
        // disconnect refused for good (a 4xx) or never answered ends here.
        if !accepted {
            c.r.latency = d.decided_at.elapsed();
            return Err(End::Report);
        }
        self.escalate(c).await
    }

    /// A close a past run left unfinished: read it once; it may have closed since.
    async fn resumed_read(&self, c: &mut Close<'_>) -> Stepped<()> {
        let Some(res) = &c.d.resume else {
            return Ok(());
        };
        let id = &*c.d.conversation_id;
        tracing::info!(conversation_id = id, rule = &*c.rule.name, steps = %res.text(),
            unreadable = res.unreadable.len(), "resuming a close a past run left unfinished");
        if matches!(self.read(id, &mut c.r).await, Ok(true)) {
            return Err(End::by_read());
        }
        Ok(())
    }

    /// Step 0 (bot phase): the confirming topic must be live before the disconnect.
    async fn confirming_topic(&self, c: &Close<'_>) {
        let id = &*c.d.conversation_id;
        if c.d.watch
            && let Err(e) = self.subs.ensure(id, ENSURE_WITHIN).await
        {
            tracing::warn!(conversation_id = id, rule = &*c.rule.name, reason = %e,
                    "confirming topic not subscribed; disconnecting anyway (the close will be \
                     confirmed by a read if no event arrives)");
        }
    }

    /// The waiter goes in place before the disconnect (register, recheck, send): a
    /// conversation seen closed already ends the sequence here.
    fn register_waiter(&self, c: &mut Close<'_>) -> Stepped<()> {
        let id = &*c.d.conversation_id;
        c.waiter = Some(self.waiters.register(id));
        if self.store.is_closed(id) {
            if !c.r.sent.is_empty() {
                return Err(End::by_event(None));
            }
            c.r.outcome = Outcome::AlreadyClosed;
            c.r.latency = c.d.decided_at.elapsed();
            return Err(End::Report);
        }
        Ok(())
    }

    /// The accepted disconnect's confirming event, within the rule's confirm time (a
    /// resumed close waits only what is left of it).
    async fn wait_for_close(&self, c: &mut Close<'_>, resumed: bool) -> Stepped<()> {
        let rule = &c.rule;
        let left = if resumed {
            rule.confirm_timeout
                .saturating_sub(c.d.decided_at.elapsed())
                .max(Duration::from_millis(500))
        } else {
            rule.confirm_timeout
        };
        let id = &*c.d.conversation_id;
        if let Ok(at) = tokio::time::timeout(left, self.closed(id, &mut c.waiter)).await {
            return Err(End::by_event(at));
        }
        c.r.reason = Some(format!(
            "no closing event within {} ms of the disconnect",
            rule.confirm_timeout.as_millis()
        ));
        Ok(())
    }

    /// Step 3: one read. Fed to the event loop so state (and any waiter) sees it. A read
    /// that could not go for want of a token waits for the login.
    async fn read_once(&self, c: &mut Close<'_>) -> Stepped<()> {
        let id = &*c.d.conversation_id;
        let read = loop {
            match self.race(id, &mut c.waiter, self.read(id, &mut c.r)).await {
                Raced::Closed(at) => return Err(End::by_event(at)),
                Raced::Done(Err(e @ ApiError::Auth(_))) => {
                    self.login_or_end(c, Call::GetConversation, &e).await?;
                }
                Raced::Done(read) => break read,
            }
        };
        if matches!(read, Ok(true)) {
            return Err(End::by_read());
        }
        Ok(())
    }

    /// Step 4: the full teardown, the documented last resort (at most once over every
    /// run), then the wait again. The waiter registered before the disconnect is still
    /// in place.
    async fn escalate(&self, c: &mut Close<'_>) -> Stepped<()> {
        let d = c.d;
        let id = &*d.conversation_id;
        if self.store.is_closed(id) {
            return Err(End::by_event(None));
        }
        let torn_before = d
            .resume
            .as_ref()
            .is_some_and(|s| s.has(&Step::Sent(Call::Teardown)));
        if !torn_before {
            self.teardown(c).await?;
        }
        let timeout = c.rule.confirm_timeout;
        match tokio::time::timeout(timeout, self.closed(id, &mut c.waiter)).await {
            Ok(at) => Err(End::Confirmed {
                at,
                by: ConfirmedBy::Event,
                outcome: Outcome::EscalatedConfirmed,
            }),
            Err(_) => {
                c.r.reason = Some(format!(
                    "still open {} ms after the full teardown",
                    timeout.as_millis()
                ));
                c.r.latency = d.decided_at.elapsed();
                Ok(())
            }
        }
    }

    /// `POST /api/v2/conversations/{id}/disconnect`, journalled before it goes.
    async fn teardown(&self, c: &mut Close<'_>) -> Stepped<()> {
        let d = c.d;
        let id = &*d.conversation_id;
        tracing::warn!(
            conversation_id = id,
            rule = &*c.rule.name,
            "escalating to POST /api/v2/conversations/{{id}}/disconnect (full teardown)"
        );
        loop {
            if let Err(e) = self
                .journal
                .step(id, &Step::AboutToSend(Call::Teardown))
                .await
            {
                fenced_off(id, &e)?;
            }
            match self.race(id, &mut c.waiter, self.api.teardown(id)).await {
                Raced::Closed(at) => {
                    self.journal.note(id, &Step::Dropped(Call::Teardown));
                    return Err(End::Confirmed {
                        at,
                        by: ConfirmedBy::Event,
                        outcome: Outcome::EscalatedConfirmed,
                    });
                }
                Raced::Done(Ok(_)) => {
                    c.r.sent.push("teardown");
                    self.journal.note(id, &Step::Sent(Call::Teardown));
                    return Ok(());
                }
                // The teardown never went: if the conversation closes meanwhile, the
                // disconnect took after all (plain `Confirmed`).
                Raced::Done(Err(e @ ApiError::Auth(_))) => {
                    self.login_or_end(c, Call::Teardown, &e).await?;
                }
                Raced::Done(Err(e @ ApiError::NotActing { .. })) => not_acting(id, &e)?,
                Raced::Done(Err(e)) => {
                    if !matches!(&e, ApiError::Transport { .. }) {
                        c.r.sent.push("teardown");
                    }
                    self.journal
                        .note(id, &Step::Failed(Call::Teardown, e.to_string()));
                    note_error(&mut c.r, &e);
                    c.r.latency = d.decided_at.elapsed();
                    return Err(End::Report);
                }
            }
        }
    }

    /// Resolves once the conversation is seen closed: by its waiter, with the closing
    /// event's arrival time (the event loop notifies it in the same breath as it marks
    /// the conversation closed in the map), or, should the waiter be gone (dropped by
    /// someone else), by the state map, looked at every [`STORE_POLL`] (`None`: the
    /// map showed it). Cancel-safe: dropped, it leaves the waiter in place.
    async fn closed(&self, id: &str, waiter: &mut Waiter) -> Option<Instant> {
        if let Some(rx) = waiter.as_mut() {
            let got = rx.await;
            *waiter = None;
            if let Ok(at) = got {
                return Some(at);
            }
        }
        loop {
            if self.store.is_closed(id) {
                return None;
            }
            tokio::time::sleep(STORE_POLL).await;
        }
    }

    /// Runs `step` unless the conversation is seen closed first, in which case `step`
    /// is dropped where it stands: a request in flight is abandoned and any retry its
    /// client had in store (time-out, 5xx, reset) never goes out. The close is looked
    /// at first on every wake-up, so a step woken together with the closing event is
    /// not polled again (polling it could send a retry).
    async fn race<T>(
        &self,
        id: &str,
        waiter: &mut Waiter,
        step: impl Future<Output = T>,
    ) -> Raced<T> {
        if self.store.is_closed(id) {
            let at = waiter.take().and_then(|mut rx| rx.try_recv().ok());
            return Raced::Closed(at);
        }
        tokio::select! {
            biased;
            at = self.closed(id, waiter) => Raced::Closed(at),
            out = step => Raced::Done(out),
        }
    }

    /// One read at close priority, fed back to the event loop; `Ok(closed)` when it
    /// was answered.
    async fn read(&self, id: &str, r: &mut CloseReport) -> Result<bool, ApiError> {
        match self
            .api
            .get_conversation_as(Priority::Close, id, &self.wanted_attributes.get())
            .await
        {
            Ok(ev) => {
                r.sent.push("get_conversation");
                let closed = !ev.participants.is_empty() && ev.participants.iter().all(|p| p.ended);
                if self.resync.send(ev).await.is_err() {
                    tracing::debug!(conversation_id = id, "event loop gone; read dropped");
                }
                self.journal.note(id, &Step::Read { closed });
                Ok(closed)
            }
            Err(e) => {
                if e.was_answered() {
                    r.sent.push("get_conversation");
                }
                note_error(r, &e);
                Err(e)
            }
        }
    }
}

/// `[ha]`: a request the send gate held back at the last moment (this instance stopped
/// acting after its step was stored): not sent, no outcome; the acting instance
/// carries the close on from the journal, reading the conversation first.
fn not_acting(id: &str, e: &ApiError) -> Stepped<()> {
    if let ApiError::NotActing { .. } = e {
        tracing::warn!(
            conversation_id = id,
            error = %e,
            "not sent: this instance no longer acts (lease); the acting instance carries \
             this close on from the journal"
        );
        return Err(End::Unfinished);
    }
    Ok(())
}

/// `[ha]`: a step the lease refused (another instance acts now, or this one's trust
/// window ended) is not sent, and the close writes no outcome: the acting instance
/// carries it on from the journal. Any other journal error is only logged by the
/// journal, and the close goes on (see the journal's module doc).
fn fenced_off(id: &str, e: &crate::journal::JournalError) -> Stepped<()> {
    if let crate::journal::JournalError::Fenced { epoch } = e {
        tracing::warn!(
            conversation_id = id,
            epoch,
            "not sent: this instance no longer acts (lease); the acting instance carries \
             this close on from the journal"
        );
        return Err(End::Unfinished);
    }
    Ok(())
}
