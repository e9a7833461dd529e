//! One close sequence, step by step (see the module doc of [`super`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{
    CloseReport, Closer, ConfirmedBy, Decision, ENSURE_WITHIN, Outcome, note_error, step, wait,
};
use crate::config::DisconnectMode;
use crate::farewell;
use crate::genesys::api::ApiError;
use crate::genesys::budget::Priority;
use crate::rules::Rule;

/// Notes left on a wrap-up the daemon sends.
const WRAPUP_NOTES: &str = "closed by genesys-closer on a bot intent";

impl Closer {
    pub(super) async fn sequence(&self, d: Decision) -> CloseReport {
        let rule = Arc::clone(&d.verdict.rule);
        let mut r = CloseReport {
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
        };
        let id = &*d.conversation_id;
        if d.already_closed {
            r.outcome = Outcome::AlreadyClosed;
            return r;
        }
        if rule.dry_run {
            r.outcome = Outcome::DryRun;
            r.reason = Some("dry run: would disconnect".into());
            return r;
        }
        // At most `max_concurrent_closes` sequences send at once; the rest queue here.
        let _turn = Arc::clone(&self.running).acquire_owned().await;

        let resume = d.resume.clone();
        if let Some(res) = &resume {
            // A close a past run left unfinished: read it once; it may have closed since.
            tracing::info!(conversation_id = id, rule = &*rule.name, steps = %res.steps.join(","),
                "resuming a close a past run left unfinished");
            if self.read(id, &mut r).await == Some(true) {
                r.outcome = Outcome::Confirmed;
                r.confirmed_by = Some(ConfirmedBy::Read);
                r.latency = d.decided_at.elapsed();
                r.reason = None;
                return r;
            }
        }

        // Step 0 (bot phase): the confirming topic must be live before the disconnect.
        if d.watch
            && let Err(e) = self.subs.ensure(id, ENSURE_WITHIN).await
        {
            tracing::warn!(conversation_id = id, rule = &*rule.name, reason = %e,
                    "confirming topic not subscribed; disconnecting anyway (the close will be \
                     confirmed by a read if no event arrives)");
        }

        let accepted_before = resume.as_ref().is_some_and(|s| s.disconnect_accepted());
        // Step 1 (optional): the farewell, before the disconnect, at most once.
        if let Some(text) = &rule.farewell
            && !accepted_before
            && !self.store.is_closed(id)
        {
            self.farewell(id, text, resume.as_ref(), &mut r).await;
        }

        // Step 2: disconnect, with the waiter in place first.
        let mut waiter = self.waiters.register(id);
        if self.store.is_closed(id) {
            self.waiters.cancel(id);
            r.outcome = if r.sent.is_empty() {
                Outcome::AlreadyClosed
            } else {
                Outcome::Confirmed
            };
            r.latency = d.decided_at.elapsed();
            return r;
        }
        let accepted = if accepted_before {
            true
        } else {
            // A failure that passes (429, 5xx, transport, login) is retried until the
            // rule's deadline; the teardown is never the answer to it. A conversation
            // seen closed meanwhile is confirmed and nothing more is sent.
            let mut pause = Duration::from_secs(1);
            // The retry deadline runs from the first attempt, not the decision: a close
            // that waited its turn behind the budget or the concurrency bound (a burst
            // larger than the budget) still gets its whole `retry_for`.
            let first_attempt = Instant::now();
            loop {
                let (call, about, sent_step) = match (rule.disconnect, d.customer_id.as_deref()) {
                    (DisconnectMode::Customer, Some(_)) => (
                        "patch_customer",
                        step::ABOUT_TO_SEND_PATCH_CUSTOMER,
                        step::SENT_PATCH_CUSTOMER,
                    ),
                    _ => (
                        "patch_conversation",
                        step::ABOUT_TO_SEND_PATCH_CONVERSATION,
                        step::SENT_PATCH_CONVERSATION,
                    ),
                };
                if rule.disconnect == DisconnectMode::Customer && d.customer_id.is_none() {
                    tracing::warn!(
                        conversation_id = id,
                        rule = &*rule.name,
                        "no customer participant known; disconnecting the whole conversation instead"
                    );
                }
                // Stored before the request goes: with it, the decision queued before it
                // (the event loop does not wait for that one), so every disconnect sent
                // is in the journal even if the process is killed the next instant.
                let _ = self.journal.step(id, about).await;
                let sent = match (call, d.customer_id.as_deref()) {
                    ("patch_customer", Some(customer)) => {
                        self.api.disconnect_participant(id, customer).await
                    }
                    _ => self.api.disconnect_conversation(id).await,
                };
                // Only requests Genesys answered count as sent.
                if !matches!(&sent, Err(ApiError::Transport { .. } | ApiError::Auth(_))) {
                    r.sent.push(call);
                }
                match sent {
                    Ok(answer) => {
                        r.request_correlation_id = answer.correlation_id;
                        self.journal.note(id, sent_step);
                        break true;
                    }
                    Err(e)
                        if e.is_retryable() && first_attempt.elapsed() + pause < rule.retry_for =>
                    {
                        self.journal.note(id, &format!("failed:{call}: {e}"));
                        tracing::warn!(conversation_id = id, rule = &*rule.name, error = %e,
                            correlation_id = e.correlation_id(), retry_in_ms = pause.as_millis() as u64,
                            "disconnect failed for a reason that passes; retrying until the rule's deadline");
                        note_error(&mut r, &e);
                        tokio::select! {
                            at = &mut waiter => {
                                if let Ok(at) = at {
                                    r.outcome = Outcome::Confirmed;
                                    r.confirmed_by = Some(ConfirmedBy::Event);
                                    r.latency = at.saturating_duration_since(d.decided_at);
                                    r.reason = None;
                                    return r;
                                }
                                waiter = self.waiters.register(id);
                            }
                            _ = tokio::time::sleep(pause) => {}
                        }
                        if self.store.is_closed(id) {
                            self.waiters.cancel(id);
                            r.outcome = Outcome::Confirmed;
                            r.confirmed_by = Some(ConfirmedBy::Event);
                            r.latency = d.decided_at.elapsed();
                            r.reason = None;
                            return r;
                        }
                        pause = (pause * 2).min(Duration::from_secs(30));
                    }
                    Err(e) => {
                        self.journal.note(id, &format!("failed:{call}: {e}"));
                        tracing::warn!(conversation_id = id, rule = &*rule.name, error = %e,
                            correlation_id = e.correlation_id(), "disconnect request failed; checking the conversation");
                        note_error(&mut r, &e);
                        break false;
                    }
                }
            }
        };
        if accepted {
            // A resumed close waits only what is left of its confirm time.
            let left = if accepted_before {
                rule.confirm_timeout
                    .saturating_sub(d.decided_at.elapsed())
                    .max(Duration::from_millis(500))
            } else {
                rule.confirm_timeout
            };
            if let Some(at) = wait(waiter, left).await {
                self.confirmed(
                    &d,
                    &rule,
                    &mut r,
                    Some(at),
                    ConfirmedBy::Event,
                    Outcome::Confirmed,
                )
                .await;
                return r;
            }
            r.reason = Some(format!(
                "no closing event within {} ms of the disconnect",
                rule.confirm_timeout.as_millis()
            ));
        } else {
            self.waiters.cancel(id);
        }

        // Step 3: one read. Fed to the event loop so state (and any waiter) sees it.
        if self.read(id, &mut r).await == Some(true) {
            self.waiters.cancel(id);
            self.confirmed(
                &d,
                &rule,
                &mut r,
                None,
                ConfirmedBy::Read,
                Outcome::Confirmed,
            )
            .await;
            return r;
        }

        // The teardown answers only a disconnect Genesys accepted that did not take; a
        // disconnect refused for good (a 4xx) or never answered ends here.
        if !accepted {
            r.latency = d.decided_at.elapsed();
            return r;
        }

        // Step 4: full teardown, the documented last resort, then wait again.
        let waiter = self.waiters.register(id);
        if self.store.is_closed(id) {
            self.waiters.cancel(id);
            self.confirmed(
                &d,
                &rule,
                &mut r,
                None,
                ConfirmedBy::Event,
                Outcome::Confirmed,
            )
            .await;
            return r;
        }
        let torn_before = resume.as_ref().is_some_and(|s| s.has(step::SENT_TEARDOWN));
        if !torn_before {
            tracing::warn!(
                conversation_id = id,
                rule = &*rule.name,
                "escalating to POST /api/v2/conversations/{{id}}/disconnect (full teardown)"
            );
            let _ = self.journal.step(id, step::ABOUT_TO_SEND_TEARDOWN).await;
            match self.api.teardown(id).await {
                Ok(_) => {
                    r.sent.push("teardown");
                    self.journal.note(id, step::SENT_TEARDOWN);
                }
                Err(e) => {
                    if !matches!(&e, ApiError::Transport { .. } | ApiError::Auth(_)) {
                        r.sent.push("teardown");
                    }
                    self.journal.note(id, &format!("failed:teardown: {e}"));
                    self.waiters.cancel(id);
                    note_error(&mut r, &e);
                    r.latency = d.decided_at.elapsed();
                    return r;
                }
            }
        }
        match wait(waiter, rule.confirm_timeout).await {
            Some(at) => {
                self.confirmed(
                    &d,
                    &rule,
                    &mut r,
                    Some(at),
                    ConfirmedBy::Event,
                    Outcome::EscalatedConfirmed,
                )
                .await;
            }
            None => {
                self.waiters.cancel(id);
                r.reason = Some(format!(
                    "still open {} ms after the full teardown",
                    rule.confirm_timeout.as_millis()
                ));
                r.latency = d.decided_at.elapsed();
            }
        }
        r
    }

    /// Marks the report confirmed, then sends the rule's wrap-up (after the disconnect,
    /// as the facts sheet describes).
    async fn confirmed(
        &self,
        d: &Decision,
        rule: &Rule,
        r: &mut CloseReport,
        at: Option<Instant>,
        by: ConfirmedBy,
        outcome: Outcome,
    ) {
        r.outcome = outcome;
        r.confirmed_by = Some(by);
        r.latency = at.map_or_else(
            || d.decided_at.elapsed(),
            |at| at.saturating_duration_since(d.decided_at),
        );
        r.reason = None;
        if let Some(code) = &rule.wrapup_code {
            self.wrapup(&d.conversation_id, code, r).await;
        }
    }

    /// One read at close priority, fed back to the event loop; `Some(closed)` when it
    /// was answered.
    async fn read(&self, id: &str, r: &mut CloseReport) -> Option<bool> {
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
                self.journal
                    .note(id, if closed { "read:closed" } else { "read:open" });
                Some(closed)
            }
            Err(e) => {
                if !matches!(&e, ApiError::Transport { .. } | ApiError::Auth(_)) {
                    r.sent.push("get_conversation");
                }
                note_error(r, &e);
                None
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
            if res.has(step::SENT_FAREWELL) {
                return;
            }
            if res.has(step::ABOUT_TO_SEND_FAREWELL) {
                tracing::warn!(
                    conversation_id = id,
                    "farewell skipped: a past run was about to send it when it stopped and \
                     may have; a guest never gets it twice"
                );
                self.journal
                    .note(id, "skipped:farewell: a past run may have sent it");
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
                    &format!("skipped:farewell: cannot read communications: {e}"),
                );
                return;
            }
        };
        let (_participant, communication) = match farewell::farewell_communication(&parts) {
            Ok(c) => c,
            Err(why) => {
                tracing::warn!(conversation_id = id, reason = %why,
                    "farewell skipped: no communication to send it on; closing without it");
                self.journal.note(id, &format!("skipped:farewell: {why}"));
                return;
            }
        };
        if let Err(e) = self
            .journal
            .step_durable(id, step::ABOUT_TO_SEND_FAREWELL)
            .await
        {
            // Without the record, a crash could send it twice: better none than two.
            tracing::error!(conversation_id = id, error = %e,
                "farewell skipped: it could not be journalled first");
            return;
        }
        match self.api.send_message(id, &communication, text).await {
            Ok(_) => {
                r.sent.push("farewell");
                self.journal.note(id, step::SENT_FAREWELL);
            }
            Err(e) => {
                if !matches!(&e, ApiError::Transport { .. } | ApiError::Auth(_)) {
                    r.sent.push("farewell");
                }
                tracing::warn!(conversation_id = id, error = %e, correlation_id = e.correlation_id(),
                    "farewell not sent; closing without it");
                self.journal.note(id, &format!("failed:farewell: {e}"));
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
                self.journal
                    .note(id, &format!("failed:wrapup: cannot read participants: {e}"));
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
                    self.journal.note(id, &format!("sent:wrapup:{participant}"));
                }
                Err(e) => {
                    if !matches!(&e, ApiError::Transport { .. } | ApiError::Auth(_)) {
                        r.sent.push("wrapup");
                    }
                    tracing::warn!(conversation_id = id, participant_id = %participant, error = %e,
                        correlation_id = e.correlation_id(), "wrap-up code not accepted");
                    self.journal
                        .note(id, &format!("failed:wrapup:{participant}: {e}"));
                }
            }
        }
    }
}
