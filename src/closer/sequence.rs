//! One close sequence, step by step (see the module doc of [`super`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{CloseReport, Closer, ConfirmedBy, Decision, ENSURE_WITHIN, Outcome, note_error};
use crate::config::DisconnectMode;
use crate::farewell;
use crate::genesys::api::ApiError;
use crate::genesys::budget::Priority;
use crate::rules::Rule;
use crate::step::{Call, Step};

/// Notes left on a wrap-up the daemon sends.
const WRAPUP_NOTES: &str = "closed by genesys-closer on a bot intent";

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
/// How often a wait for the login looks whether the daemon is stopping.
const DRAIN_POLL: Duration = Duration::from_millis(100);

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

    /// Step 1 (optional): the farewell, before the disconnect, at most once, and never
    /// to a conversation already seen closed.
    async fn farewell_step(&self, c: &mut Close<'_>) {
        let id = &*c.d.conversation_id;
        if let Some(text) = &c.rule.farewell
            && !self.store.is_closed(id)
        {
            self.farewell(id, text, c.d.resume.as_ref(), &mut c.r).await;
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

    /// Step 2: the disconnect; `Ok(true)` when Genesys accepted it.
    ///
    /// A failure that passes (429, 5xx, transport) is retried until the rule's deadline;
    /// the teardown is never the answer to it. A disconnect that could not go for want
    /// of a token was not sent at all: it waits for the login, with no deadline. Every
    /// request and every pause races the waiter: once the conversation is seen closed,
    /// nothing more is sent (a request in flight is dropped, and its retries with it)
    /// and the close is confirmed.
    async fn disconnect(&self, c: &mut Close<'_>) -> Stepped<bool> {
        let (d, rule) = (c.d, Arc::clone(&c.rule));
        let id = &*d.conversation_id;
        let mut backoff = retry_pauses();
        let mut pause = backoff.next().unwrap_or(RETRY_PAUSE_MAX);
        // The retry deadline runs from the first attempt, not the decision: a close
        // that waited its turn behind the budget or the concurrency bound (a burst
        // larger than the budget) still gets its whole `retry_for`. Time spent waiting
        // for a token does not count: nothing could be sent meanwhile.
        let first_attempt = Instant::now();
        let mut without_login = Duration::ZERO;
        loop {
            let call = match (rule.disconnect, d.customer_id.as_deref()) {
                (DisconnectMode::Customer, Some(_)) => Call::PatchCustomer,
                _ => Call::PatchConversation,
            };
            if rule.disconnect == DisconnectMode::Customer && d.customer_id.is_none() {
                tracing::warn!(
                    conversation_id = id,
                    rule = &*rule.name,
                    "no customer participant known; disconnecting the whole conversation instead"
                );
            }
            // Stored before the request goes: with it, the decision queued before it
            // (the event loop does not wait for that one), so every disconnect sent is
            // in the journal even if the process is killed the next instant.
            let _ = self
                .journal
                .step(id, &Step::AboutToSend(call.clone()))
                .await;
            let request = async {
                match (&call, d.customer_id.as_deref()) {
                    (Call::PatchCustomer, Some(customer)) => {
                        self.api.disconnect_participant(id, customer).await
                    }
                    _ => self.api.disconnect_conversation(id).await,
                }
            };
            let sent = match self.race(id, &mut c.waiter, request).await {
                Raced::Done(sent) => sent,
                Raced::Closed(at) => {
                    // Whatever the request would have done next (time out, 5xx,
                    // reset), it is not retried. Whether Genesys answered it is
                    // unknown, so it is not counted as sent.
                    self.journal.note(id, &Step::Dropped(call));
                    return Err(End::by_event(at));
                }
            };
            // Only requests Genesys answered count as sent.
            if sent.as_ref().err().is_none_or(ApiError::was_answered) {
                c.r.sent.push(call.name());
            }
            match sent {
                Ok(answer) => {
                    c.r.request_correlation_id = answer.correlation_id;
                    self.journal.note(id, &Step::Sent(call));
                    return Ok(true);
                }
                Err(e @ ApiError::Auth(_)) => {
                    let since = Instant::now();
                    self.login_or_end(c, call.clone(), &e).await?;
                    without_login += since.elapsed();
                }
                Err(e)
                    if e.is_retryable()
                        && first_attempt.elapsed().saturating_sub(without_login) + pause
                            < rule.retry_for =>
                {
                    self.journal
                        .note(id, &Step::Failed(call.clone(), e.to_string()));
                    tracing::warn!(conversation_id = id, rule = &*rule.name, error = %e,
                        correlation_id = e.correlation_id(), retry_in_ms = pause.as_millis() as u64,
                        "disconnect failed for a reason that passes; retrying until the rule's deadline");
                    note_error(&mut c.r, &e);
                    if let Raced::Closed(at) = self
                        .race(id, &mut c.waiter, tokio::time::sleep(pause))
                        .await
                    {
                        return Err(End::by_event(at));
                    }
                    pause = backoff.next().unwrap_or(RETRY_PAUSE_MAX);
                }
                Err(e) => {
                    self.journal.note(id, &Step::Failed(call, e.to_string()));
                    tracing::warn!(conversation_id = id, rule = &*rule.name, error = %e,
                        correlation_id = e.correlation_id(), "disconnect request failed; checking the conversation");
                    note_error(&mut c.r, &e);
                    return Ok(false);
                }
            }
        }
    }

    /// A request that found no token: wait for the login ([`wait_for_login`]); the
    /// conversation seen closed meanwhile, or the daemon stopping, ends the sequence.
    ///
    /// [`wait_for_login`]: Self::wait_for_login
    async fn login_or_end(&self, c: &mut Close<'_>, call: Call, e: &ApiError) -> Stepped<()> {
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
            let _ = self
                .journal
                .step(id, &Step::AboutToSend(Call::Teardown))
                .await;
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

    /// Marks the report confirmed, then sends the rule's wrap-up (after the disconnect,
    /// as the facts sheet describes); the finished report, for the sequence to return.
    async fn confirmed(
        &self,
        d: &Decision,
        rule: &Rule,
        mut r: CloseReport,
        at: Option<Instant>,
        by: ConfirmedBy,
        outcome: Outcome,
    ) -> Option<CloseReport> {
        // Nothing more is waited for: the waiter goes before the wrap-up.
        self.waiters.cancel(&d.conversation_id);
        r.outcome = outcome;
        r.confirmed_by = Some(by);
        r.latency = at.map_or_else(
            || d.decided_at.elapsed(),
            |at| at.saturating_duration_since(d.decided_at),
        );
        r.reason = None;
        if let Some(code) = &rule.wrapup_code {
            self.wrapup(&d.conversation_id, code, &mut r).await;
        }
        Some(r)
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

    /// The farewell: journalled "about to send" (durably) before it goes, "sent" after;
    /// a past run that journalled the first and not the second may have sent it, so it
    /// is skipped. Any failure leaves the close to go on without it.
    async fn farewell(
        &self,
        id: &str,
        text: &str,
        resume: Option<&super::Resume>,
        r: &mut CloseReport,
    ) {
        if let Some(res) = resume {
            if res.has(&Step::Sent(Call::Farewell)) {
                return;
            }
            if res.farewell_may_have_gone() {
                tracing::warn!(
                    conversation_id = id,
                    "farewell skipped: a past run was about to send it when it stopped and \
                     may have (or journalled a step this version cannot read); a guest never \
                     gets it twice"
                );
                self.journal.note(
                    id,
                    &Step::Skipped(Call::Farewell, "a past run may have sent it".into()),
                );
                return;
            }
        }
        let parts = match self.api.get_communications(id).await {
            Ok(p) => {
                r.sent.push("get_conversation_communications");
                p
            }
            Err(e) => {
                tracing::warn!(conversation_id = id, error = %e, correlation_id = e.correlation_id(),
                    "farewell skipped: cannot read the conversation's communications; closing without it");
                self.journal.note(
                    id,
                    &Step::Skipped(Call::Farewell, format!("cannot read communications: {e}")),
                );
                return;
            }
        };
        if self.store.is_closed(id) {
            // It ended while its communications were read: no farewell to a closed one.
            self.journal.note(
                id,
                &Step::Skipped(Call::Farewell, "the conversation closed".into()),
            );
            return;
        }
        let (_participant, communication) = match farewell::farewell_communication(&parts) {
            Ok(c) => c,
            Err(why) => {
                tracing::warn!(conversation_id = id, reason = %why,
                    "farewell skipped: no communication to send it on; closing without it");
                self.journal
                    .note(id, &Step::Skipped(Call::Farewell, why.to_string()));
                return;
            }
        };
        if let Err(e) = self
            .journal
            .step_durable(id, &Step::AboutToSend(Call::Farewell))
            .await
        {
            // Without the record, a crash could send it twice: better none than two.
            tracing::error!(conversation_id = id, error = %e,
                "farewell skipped: it could not be journalled first");
            return;
        }
        if self.store.is_closed(id) {
            self.journal.note(
                id,
                &Step::Skipped(Call::Farewell, "the conversation closed".into()),
            );
            return;
        }
        match self.api.send_message(id, &communication, text).await {
            Ok(_) => {
                r.sent.push("farewell");
                self.journal.note(id, &Step::Sent(Call::Farewell));
            }
            Err(e) => {
                if e.was_answered() {
                    r.sent.push("farewell");
                }
                tracing::warn!(conversation_id = id, error = %e, correlation_id = e.correlation_id(),
                    "farewell not sent; closing without it");
                self.journal
                    .note(id, &Step::Failed(Call::Farewell, e.to_string()));
            }
        }
    }

    /// Wrap-up codes for the agents that need one, after the disconnect.
    async fn wrapup(&self, id: &str, code: &str, r: &mut CloseReport) {
        let parts = match self.api.get_communications(id).await {
            Ok(p) => {
                r.sent.push("get_conversation_communications");
                p
            }
            Err(e) => {
                tracing::warn!(conversation_id = id, error = %e, correlation_id = e.correlation_id(),
                    "wrap-up not sent: cannot read the conversation's participants");
                self.journal.note(
                    id,
                    &Step::Failed(
                        Call::Wrapup { participant: None },
                        format!("cannot read participants: {e}"),
                    ),
                );
                return;
            }
        };
        for (participant, communication) in farewell::wrapup_targets(&parts) {
            match self
                .api
                .send_wrapup(id, &participant, &communication, code, WRAPUP_NOTES)
                .await
            {
                Ok(_) => {
                    r.sent.push("wrapup");
                    self.journal.note(
                        id,
                        &Step::Sent(Call::Wrapup {
                            participant: Some(participant.to_string()),
                        }),
                    );
                }
                Err(e) => {
                    if e.was_answered() {
                        r.sent.push("wrapup");
                    }
                    tracing::warn!(conversation_id = id, participant_id = %participant, error = %e,
                        correlation_id = e.correlation_id(), "wrap-up code not accepted");
                    self.journal.note(
                        id,
                        &Step::Failed(
                            Call::Wrapup {
                                participant: Some(participant.to_string()),
                            },
                            e.to_string(),
                        ),
                    );
                }
            }
        }
    }
}
