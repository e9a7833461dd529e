//! Step 2 of a close: the disconnect, retried for a failure that passes until the
//! rule's deadline, racing the waiter on every request and every pause.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::closer::{Closer, Decision, note_error};
use crate::config::DisconnectMode;
use crate::genesys::api::{Answer, ApiError};
use crate::rules::Rule;
use crate::step::{Call, Step};

use super::{Close, End, RETRY_PAUSE_MAX, Raced, Stepped, retry_pauses};

impl Closer {
    /// Step 2: the disconnect; `Ok(true)` when Genesys accepted it.
    ///
    /// A failure that passes (429, 5xx, transport) is retried until the rule's deadline;
    /// the teardown is never the answer to it. A disconnect that could not go for want
    /// of a token was not sent at all: it waits for the login, with no deadline. Every
    /// request and every pause races the waiter: once the conversation is seen closed,
    /// nothing more is sent (a request in flight is dropped, and its retries with it)
    /// and the close is confirmed.
    pub(super) async fn disconnect(&self, c: &mut Close<'_>) -> Stepped<bool> {
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
            let call = disconnect_call(d, &rule);
            match self.send_disconnect(c, &call).await? {
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

    /// One disconnect request, journalled before it goes and raced against the
    /// conversation's end (which drops it); counted as sent when Genesys answered it.
    async fn send_disconnect(
        &self,
        c: &mut Close<'_>,
        call: &Call,
    ) -> Stepped<Result<Answer, ApiError>> {
        let d = c.d;
        let id = &*d.conversation_id;
        // Stored before the request goes: with it, the decision queued before it
        // (the event loop does not wait for that one), so every disconnect sent is
        // in the journal even if the process is killed the next instant.
        if let Err(e) = self
            .journal
            .step(id, &Step::AboutToSend(call.clone()))
            .await
        {
            super::fenced_off(id, &e)?;
        }
        let request = async {
            match (call, d.customer_id.as_deref()) {
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
                self.journal.note(id, &Step::Dropped(call.clone()));
                return Err(End::by_event(at));
            }
        };
        if let Err(e) = &sent {
            super::not_acting(id, e)?;
        }
        // Only requests Genesys answered count as sent.
        if sent.as_ref().err().is_none_or(ApiError::was_answered) {
            c.r.sent.push(call.name());
        }
        Ok(sent)
    }
}

/// The disconnect the rule asks for: the customer participant's, or the whole
/// conversation's when the rule says so or no customer participant is known (warned).
fn disconnect_call(d: &Decision, rule: &Rule) -> Call {
    let call = match (rule.disconnect, d.customer_id.as_deref()) {
        (DisconnectMode::Customer, Some(_)) => Call::PatchCustomer,
        _ => Call::PatchConversation,
    };
    if rule.disconnect == DisconnectMode::Customer && d.customer_id.is_none() {
        tracing::warn!(
            conversation_id = &*d.conversation_id,
            rule = &*rule.name,
            "no customer participant known; disconnecting the whole conversation instead"
        );
    }
    call
}
