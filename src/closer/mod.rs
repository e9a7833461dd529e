//! The close sequence for one decided conversation, and its confirmation waiters.
//!
//! Optionally a farewell to the guest (at most once, journalled before it is sent),
//! then the disconnect, then the wait for the pushed event that shows every participant
//! ended. The waiter is registered *before* the request goes out so a fast event cannot
//! slip past. No event in time: one read of the conversation (fed back to the event loop
//! so the map stays the single source of truth), then the documented last resort, a
//! full teardown, and one more wait. After a confirmed close, optionally a wrap-up code
//! for agents that need one. Every step is journalled before it is sent, so a restart
//! resumes a close from the step it reached ([`Resume`]).
//!
//! Every request and every pause between tries races the waiter: once the conversation
//! is seen closed nothing more is sent. A request still in flight (hung, or between the
//! API client's own retries) is dropped, so it is never retried, and the close is
//! confirmed (wrap-up included). A step that could not be sent for want of a token (the
//! login refused or unreachable) sent nothing: it waits for the login, with no
//! deadline, and is never reported failed; if the daemon stops meanwhile the close is
//! left unfinished (no outcome), and the next start resumes it.
//!
//! A sequence that runs to its end gives exactly one [`CloseReport`], one journalled
//! outcome and one log line.

mod sequence;

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use tokio::sync::Semaphore;

use crate::genesys::api::{ApiClient, ApiError};
use crate::genesys::frames::{ConversationEvent, Source};
use crate::genesys::subscriptions::Subscriptions;
use crate::journal::{DecisionRecord, Journal, OutcomeRecord, now_ms};
pub use crate::outcome::Outcome;
use crate::rules::Verdict;
use crate::state::Store;
use crate::step::{Call, Step};

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
    /// A close a past run journalled and did not finish: the steps it reached.
    pub resume: Option<Resume>,
    /// Genesys's correlation id of the event that led to the decision, when it had one.
    pub event_correlation_id: Option<Box<str>>,
}

/// What a past run journalled of an unfinished close.
///
/// A stored step this version cannot read (a newer version's, a damaged row) is an
/// error said once per process at warn, with its text (later ones at debug), and the
/// resume treats it as a request that may have gone: like every resume it reads the
/// conversation first; the farewell is skipped (it may have gone, and a guest never
/// gets two); it is not taken for an accepted disconnect or teardown, so an open
/// conversation gets its disconnect (again: harmless, where a second farewell is not).
#[derive(Debug, Clone, Default)]
pub struct Resume {
    /// The steps read, oldest first (`about_to_send:farewell`, `sent:patch_conversation`, ...).
    pub steps: Vec<Step>,
    /// Stored steps that are no [`Step`] this version knows, as stored.
    pub unreadable: Vec<String>,
    /// `[ha]`: steps an earlier leader stored for a close whose decision never reached
    /// the journal (its write failed as it was cut off): the decision is journalled
    /// now, as a new one's is.
    pub orphan: bool,
}

/// Whether an unreadable journalled step was said at warn already (once per process).
static UNREADABLE_SAID: std::sync::Once = std::sync::Once::new();

impl Resume {
    /// Reads the steps `conversation_id`'s close journalled (see [`Resume`] for what
    /// becomes of a step that does not read).
    pub fn from_journal(conversation_id: &str, stored: Vec<String>) -> Resume {
        let mut r = Resume::default();
        for text in stored {
            match text.parse::<Step>() {
                Ok(step) => r.steps.push(step),
                Err(e) => {
                    let mut said = false;
                    UNREADABLE_SAID.call_once(|| {
                        said = true;
                        tracing::warn!(conversation_id, step = %text, error = %e,
                            "journal: a stored close step this version cannot read; the close \
                             resumes as if that request may have gone: read first, no farewell \
                             (said once; later ones at debug)");
                    });
                    if !said {
                        tracing::debug!(conversation_id, step = %text, error = %e,
                            "journal: a stored close step this version cannot read");
                    }
                    r.unreadable.push(text);
                }
            }
        }
        r
    }

    /// `[ha]`: the steps an earlier leader stored for `conversation_id` with no
    /// decision in the journal: resumed like any unfinished close (read first, no
    /// second farewell), its decision journalled now.
    pub fn orphan(conversation_id: &str, stored: Vec<String>) -> Resume {
        Resume {
            orphan: true,
            ..Resume::from_journal(conversation_id, stored)
        }
    }

    /// Whether the step was journalled.
    pub fn has(&self, step: &Step) -> bool {
        self.steps.contains(step)
    }

    /// Whether Genesys accepted a disconnect in a past run.
    pub fn disconnect_accepted(&self) -> bool {
        self.steps
            .iter()
            .any(|s| matches!(s, Step::Sent(Call::PatchConversation | Call::PatchCustomer)))
    }

    /// Whether a past run may have sent the farewell without journalling that Genesys
    /// accepted it: it was about to, or a step could not be read.
    pub fn farewell_may_have_gone(&self) -> bool {
        self.has(&Step::AboutToSend(Call::Farewell)) || !self.unreadable.is_empty()
    }

    /// The steps read, comma-separated, for the log line.
    pub fn text(&self) -> String {
        let all: Vec<String> = self.steps.iter().map(ToString::to_string).collect();
        all.join(",")
    }
}

/// How long a close waits for its confirming topic before disconnecting anyway (and
/// relying on the read after `confirm_timeout`).
const ENSURE_WITHIN: Duration = Duration::from_secs(5);

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
    /// Genesys correlation id of the disconnect Genesys accepted, for support cases.
    pub request_correlation_id: Option<String>,
    /// Genesys correlation id of the event that led to the decision.
    pub event_correlation_id: Option<Box<str>>,
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
    pub wanted_attributes: Arc<crate::genesys::frames::Wanted>,
    /// Every finished sequence's report, for the demo, tests and telemetry.
    pub reports: mpsc::UnboundedSender<CloseReport>,
    /// Tracks running sequences so shutdown can drain them.
    pub tracker: TaskTracker,
    /// Per-conversation subscriptions, for conversations only detail topics show.
    pub subs: Subscriptions,
    /// Decisions, steps and outcomes, for restarts and `history`.
    pub journal: Journal,
    /// Bounds the sequences running at once (`[daemon] max_concurrent_closes`); the
    /// others wait their turn in decision order.
    pub running: Arc<Semaphore>,
    /// Conversations whose close sequence runs now (from its start to its end, whatever
    /// step it is at): a takeover after a trust lapse must not start a second one.
    pub in_progress: Arc<dashmap::DashSet<Box<str>>>,
}

/// Keeps a conversation in [`Closer::in_progress`] while its sequence runs.
struct InProgress(Arc<dashmap::DashSet<Box<str>>>, Box<str>);

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.remove(&self.1);
    }
}

/// The journal's record of a decision.
pub fn decision_record(d: &Decision, deferred: bool) -> DecisionRecord {
    DecisionRecord {
        conversation_id: d.conversation_id.to_string(),
        rule: d.verdict.rule.name.to_string(),
        intent: d.verdict.intent.to_string(),
        queue_id: d.queue_id.as_deref().map(str::to_owned),
        customer_id: d.customer_id.as_deref().map(str::to_owned),
        source: d.source.as_str().to_owned(),
        watch: d.watch,
        deferred,
        decided_ms: now_ms() - d.decided_at.elapsed().as_millis() as i64,
    }
}

impl Closer {
    /// Starts the close sequence for `decision` in the background. A new decision is
    /// journalled first (queued ahead of its steps); a resumed one already is.
    pub fn start(&self, decision: Decision) {
        if decision.resume.as_ref().is_none_or(|r| r.orphan) {
            self.journal.decision(decision_record(&decision, false));
        }
        let this = self.clone();
        self.in_progress.insert(decision.conversation_id.clone());
        let running = InProgress(
            Arc::clone(&self.in_progress),
            decision.conversation_id.clone(),
        );
        self.tracker.spawn(async move {
            let _running = running;
            // Left unfinished (stopping while no token could be had): no outcome, so
            // the journal keeps the close and the next start resumes it.
            let Some(report) = this.sequence(decision).await else {
                return;
            };
            log_report(&report);
            crate::metrics::outcome(
                &report.rule,
                report.source.as_str(),
                report.outcome.as_str(),
                report.outcome.is_confirmed().then_some(report.latency),
            );
            let outcome = OutcomeRecord {
                conversation_id: report.conversation_id.to_string(),
                outcome: report.outcome.as_str().to_owned(),
                reason: report.reason.clone(),
                correlation_id: report.correlation_id.clone(),
                requests: report.sent.len() as i64,
                latency_ms: Some(report.latency.as_millis() as i64),
            };
            // A failed write is logged by the journal; the report still goes out.
            let _ = this.journal.outcome(outcome).await;
            let _ = this.reports.send(report);
        });
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
                // Absent when nothing was sent (not an empty string).
                sent = (!r.sent.is_empty()).then(|| tracing::field::display(r.sent.join(","))),
                confirmed_by,
                correlation_id = r.correlation_id.as_deref(),
                request_correlation_id = r.request_correlation_id.as_deref(),
                event_correlation_id = r.event_correlation_id.as_deref(),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn resume(stored: &[&str]) -> Resume {
        Resume::from_journal("c1", stored.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn a_resume_reads_its_steps_and_keeps_what_it_cannot() {
        let r = resume(&[
            "about_to_send:patch_customer",
            "sent:patch_customer",
            "read:open",
        ]);
        assert!(r.disconnect_accepted() && r.unreadable.is_empty());
        assert!(!r.farewell_may_have_gone() && !r.has(&Step::Sent(Call::Teardown)));
        assert_eq!(
            r.text(),
            "about_to_send:patch_customer,sent:patch_customer,read:open"
        );

        let r = resume(&["about_to_send:farewell", "about_to_send:patch_conversation"]);
        assert!(r.farewell_may_have_gone() && !r.disconnect_accepted());
    }

    /// An unreadable step may have been a request that went: no farewell (a guest never
    /// gets two), but no accepted disconnect or teardown either (the read comes first,
    /// and a second disconnect is harmless).
    #[test]
    fn an_unreadable_step_is_taken_for_a_request_that_may_have_gone() {
        let r = resume(&["about_to_send:patch_conversation", "sent:patch_conversatio"]);
        assert_eq!(r.unreadable, ["sent:patch_conversatio"]);
        assert_eq!(r.steps, [Step::AboutToSend(Call::PatchConversation)]);
        assert!(r.farewell_may_have_gone());
        assert!(!r.disconnect_accepted());
        assert!(!r.has(&Step::Sent(Call::Teardown)));
    }
}
