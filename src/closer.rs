//! The close sequence for one decided conversation, and its confirmation waiters.
//!
//! Disconnect, then wait for the pushed event that shows every participant ended. The
//! waiter is registered *before* the request goes out so a fast event cannot slip past.
//! No event in time: one read of the conversation (fed back to the event loop so the map
//! stays the single source of truth), then the documented last resort, a full teardown,
//! and one more wait. Each sequence ends in exactly one [`CloseReport`] and one log line.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use crate::config::DisconnectMode;
use crate::genesys::api::{ApiClient, ApiError};
use crate::genesys::frames::{ConversationEvent, Source};
use crate::genesys::subscriptions::Subscriptions;
use crate::rules::Verdict;
use crate::state::Store;

/// A rule's decision to close one conversation, made by the event loop.
#[derive(Debug, Clone)]
pub struct Decision {
    /// Conversation to close.
    pub conversation_id: Box<str>,
    /// Rule and intent that matched.
    pub verdict: Verdict,
    /// Queue it was routed to, for the log line.
    pub queue_id: Option<Box<str>>,
    /// Customer participant, for a customer-only disconnect.
    pub customer_id: Option<Box<str>>,
    /// It was already closed when the rule matched: nothing to send.
    pub already_closed: bool,
    /// When the event that led to the decision was received.
    pub decided_at: Instant,
    /// Which source's event (or call) led to the decision.
    pub source: Source,
    /// No queue or user topic shows the conversation: its per-conversation topics must
    /// be subscribed before the disconnect, or its end would go unseen.
    pub watch: bool,
}

/// How long a close waits for its confirming topic before disconnecting anyway (and
/// relying on the read after `confirm_timeout`).
const ENSURE_WITHIN: Duration = Duration::from_secs(5);

/// How a close sequence ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The disconnect was confirmed (by the pushed event, or by the one read).
    Confirmed,
    /// Confirmed only after the full teardown.
    EscalatedConfirmed,
    /// Closed before anything was sent; nothing was sent.
    AlreadyClosed,
    /// Dry run: logged, nothing sent.
    DryRun,
    /// Not confirmed even after the teardown, or a request failed for good.
    Failed,
}

impl Outcome {
    /// Stable name used in logs and summaries.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Confirmed => "confirmed",
            Outcome::EscalatedConfirmed => "escalated_confirmed",
            Outcome::AlreadyClosed => "already_closed",
            Outcome::DryRun => "dry_run",
            Outcome::Failed => "failed",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What evidence confirmed a closure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfirmedBy {
    /// The pushed conversation event.
    Event,
    /// The one REST read after the wait ran out.
    Read,
}

/// The record of one close sequence.
#[derive(Debug, Clone)]
pub struct CloseReport {
    /// Conversation id.
    pub conversation_id: Box<str>,
    /// Rule name.
    pub rule: Arc<str>,
    /// Intent that matched.
    pub intent: Box<str>,
    /// Queue, when known.
    pub queue_id: Option<Box<str>>,
    /// Which source led to the decision.
    pub source: Source,
    /// How it ended.
    pub outcome: Outcome,
    /// Decision to confirmation (or to giving up).
    pub latency: Duration,
    /// REST calls this sequence made, in order (retries of one call count once):
    /// `patch_conversation`, `patch_customer`, `get_conversation`, `teardown`.
    pub sent: Vec<&'static str>,
    /// Evidence for a confirmed outcome.
    pub confirmed_by: Option<ConfirmedBy>,
    /// Genesys correlation id of the last failed call, for support cases.
    pub correlation_id: Option<String>,
    /// Why it failed, or what went wrong on the way to a later success.
    pub reason: Option<String>,
}

/// Confirmation waiters: conversation id -> the sequence waiting for its closing event.
#[derive(Debug, Default)]
pub struct Waiters {
    map: DashMap<Box<str>, oneshot::Sender<Instant>>,
}

impl CloseReport {
    /// Number of REST calls the sequence made.
    pub fn requests(&self) -> usize {
        self.sent.len()
    }
}

impl Waiters {
    /// Registers (or replaces) the waiter for `id`.
    fn register(&self, id: &str) -> oneshot::Receiver<Instant> {
        let (tx, rx) = oneshot::channel();
        self.map.insert(id.into(), tx);
        rx
    }

    fn cancel(&self, id: &str) {
        self.map.remove(id);
    }

    /// Called by the event loop when an event closes `id`.
    pub fn notify(&self, id: &str, at: Instant) {
        if let Some((_, tx)) = self.map.remove(id) {
            // The waiter may have timed out and gone; that is fine.
            let _ = tx.send(at);
        }
    }

    /// Conversations whose close is waiting for its confirming event.
    pub fn ids(&self) -> Vec<Box<str>> {
        self.map.iter().map(|e| e.key().clone()).collect()
    }

    /// Sequences currently waiting.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether none is waiting.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Runs close sequences on a task tracker.
#[derive(Clone)]
pub struct Closer {
    /// REST client (shared rate and retry policy).
    pub api: Arc<ApiClient>,
    /// Read-only view of the state map.
    pub store: Arc<Store>,
    /// Where the event loop delivers closing events.
    pub waiters: Arc<Waiters>,
    /// Back to the event loop: conversations read by REST, applied like pushed events.
    pub resync: mpsc::Sender<ConversationEvent>,
    /// Attribute names rules read (for parsing the REST read).
    pub wanted_attributes: Arc<[Box<str>]>,
    /// Every finished sequence's report, for the demo, tests and telemetry.
    pub reports: mpsc::UnboundedSender<CloseReport>,
    /// Tracks running sequences so shutdown can drain them.
    pub tracker: TaskTracker,
    /// Per-conversation subscriptions, for conversations only detail topics show.
    pub subs: Subscriptions,
}

impl Closer {
    /// Starts the close sequence for `decision` in the background.
    pub fn start(&self, decision: Decision) {
        let this = self.clone();
        self.tracker.spawn(async move {
            let report = this.sequence(decision).await;
            log_report(&report);
            let _ = this.reports.send(report);
        });
    }

    async fn sequence(&self, d: Decision) -> CloseReport {
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

        // Step 0 (bot phase): the confirming topic must be live before the disconnect.
        if d.watch {
            if let Err(e) = self.subs.ensure(id, ENSURE_WITHIN).await {
                tracing::warn!(conversation_id = id, rule = &*rule.name, reason = %e,
                    "confirming topic not subscribed; disconnecting anyway (the close will be \
                     confirmed by a read if no event arrives)");
            }
        }

        // Step 1: disconnect, with the waiter in place first.
        let waiter = self.waiters.register(id);
        if self.store.is_closed(id) {
            self.waiters.cancel(id);
            r.outcome = Outcome::AlreadyClosed;
            return r;
        }
        // A failure that passes (429, 5xx, transport, login) is retried until the rule's
        // deadline; the teardown is never the answer to it. A conversation seen closed
        // meanwhile is confirmed and nothing more is sent.
        let mut waiter = waiter;
        let mut pause = Duration::from_secs(1);
        let accepted = loop {
            let (call, sent) = match (rule.disconnect, d.customer_id.as_deref()) {
                (DisconnectMode::Customer, Some(customer)) => (
                    "patch_customer",
                    self.api.disconnect_participant(id, customer).await,
                ),
                (DisconnectMode::Customer, None) => {
                    tracing::warn!(
                        conversation_id = id,
                        rule = &*rule.name,
                        "no customer participant known; disconnecting the whole conversation instead"
                    );
                    (
                        "patch_conversation",
                        self.api.disconnect_conversation(id).await,
                    )
                }
                (DisconnectMode::Conversation, _) => (
                    "patch_conversation",
                    self.api.disconnect_conversation(id).await,
                ),
            };
            // Only requests Genesys answered count as sent.
            if !matches!(&sent, Err(ApiError::Transport { .. } | ApiError::Auth(_))) {
                r.sent.push(call);
            }
            match sent {
                Ok(_) => break true,
                Err(e) if e.is_retryable() && d.decided_at.elapsed() + pause < rule.retry_for => {
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
                    tracing::warn!(conversation_id = id, rule = &*rule.name, error = %e,
                        correlation_id = e.correlation_id(), "disconnect request failed; checking the conversation");
                    note_error(&mut r, &e);
                    break false;
                }
            }
        };
        if accepted {
            if let Some(at) = wait(waiter, rule.confirm_timeout).await {
                r.outcome = Outcome::Confirmed;
                r.confirmed_by = Some(ConfirmedBy::Event);
                r.latency = at.saturating_duration_since(d.decided_at);
                r.reason = None;
                return r;
            }
            r.reason = Some(format!(
                "no closing event within {} ms of the disconnect",
                rule.confirm_timeout.as_millis()
            ));
        } else {
            self.waiters.cancel(id);
        }

        // Step 2: one read. Feed it to the event loop so state (and any waiter) sees it.
        r.sent.push("get_conversation");
        match self.api.get_conversation(id, &self.wanted_attributes).await {
            Ok(ev) => {
                let closed = !ev.participants.is_empty() && ev.participants.iter().all(|p| p.ended);
                if self.resync.send(ev).await.is_err() {
                    tracing::debug!(conversation_id = id, "event loop gone; resync dropped");
                }
                if closed {
                    self.waiters.cancel(id);
                    r.outcome = Outcome::Confirmed;
                    r.confirmed_by = Some(ConfirmedBy::Read);
                    r.latency = d.decided_at.elapsed();
                    return r;
                }
            }
            Err(e) => note_error(&mut r, &e),
        }

        // The teardown answers only a disconnect Genesys accepted that did not take; a
        // disconnect refused for good (a 4xx) or never answered ends here.
        if !accepted {
            r.latency = d.decided_at.elapsed();
            return r;
        }

        // Step 3: full teardown, the documented last resort, then wait again.
        let waiter = self.waiters.register(id);
        if self.store.is_closed(id) {
            self.waiters.cancel(id);
            r.outcome = Outcome::Confirmed;
            r.confirmed_by = Some(ConfirmedBy::Event);
            r.latency = d.decided_at.elapsed();
            return r;
        }
        r.sent.push("teardown");
        tracing::warn!(
            conversation_id = id,
            rule = &*rule.name,
            "escalating to POST /api/v2/conversations/{{id}}/disconnect (full teardown)"
        );
        if let Err(e) = self.api.teardown(id).await {
            self.waiters.cancel(id);
            note_error(&mut r, &e);
            r.latency = d.decided_at.elapsed();
            return r;
        }
        match wait(waiter, rule.confirm_timeout).await {
            Some(at) => {
                r.outcome = Outcome::EscalatedConfirmed;
                r.confirmed_by = Some(ConfirmedBy::Event);
                r.latency = at.saturating_duration_since(d.decided_at);
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
}

/// Waits for the closing event; `None` on timeout.
async fn wait(rx: oneshot::Receiver<Instant>, timeout: Duration) -> Option<Instant> {
    match tokio::time::timeout(timeout, rx).await {
        Ok(Ok(at)) => Some(at),
        // Sender dropped: replaced or cancelled; treat as not confirmed.
        Ok(Err(_)) | Err(_) => None,
    }
}

fn note_error(r: &mut CloseReport, e: &ApiError) {
    r.reason = Some(e.to_string());
    if let Some(c) = e.correlation_id() {
        r.correlation_id = Some(c.to_string());
    }
}

/// One line per outcome, with the fields on-call engineers filter on.
fn log_report(r: &CloseReport) {
    // Microsecond precision is plenty and keeps the JSON short.
    let latency_ms = (r.latency.as_secs_f64() * 1e6).round() / 1e3;
    let confirmed_by = r.confirmed_by.map(|c| match c {
        ConfirmedBy::Event => "event",
        ConfirmedBy::Read => "read",
    });
    macro_rules! line {
        ($level:ident, $msg:literal) => {
            tracing::$level!(
                conversation_id = &*r.conversation_id,
                rule = &*r.rule,
                intent = &*r.intent,
                queue_id = r.queue_id.as_deref(),
                source = r.source.as_str(),
                outcome = r.outcome.as_str(),
                latency_ms,
                requests = r.sent.len(),
                sent = %r.sent.join(","),
                confirmed_by,
                correlation_id = r.correlation_id.as_deref(),
                reason = r.reason.as_deref(),
                $msg
            )
        };
    }
    match r.outcome {
        Outcome::Confirmed => line!(info, "conversation closed and confirmed"),
        Outcome::AlreadyClosed => line!(info, "conversation already closed; nothing sent"),
        Outcome::DryRun => line!(info, "dry run: would close conversation"),
        Outcome::EscalatedConfirmed => line!(warn, "conversation closed only after full teardown"),
        Outcome::Failed => line!(error, "conversation close failed"),
    }
}
