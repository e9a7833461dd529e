//! The records the journal keeps and hands back: decisions, unfinished closes, history
//! entries and queries, outcomes, the feed's outbox.

use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;

/// A decision as journalled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DecisionRecord {
    /// Conversation id.
    pub conversation_id: String,
    /// Rule name.
    pub rule: String,
    /// Intent that matched.
    pub intent: String,
    /// Queue, when known.
    pub queue_id: Option<String>,
    /// Customer participant, for a customer-only disconnect.
    pub customer_id: Option<String>,
    /// Which source led to the decision (`queue`, `detail`, `intake`, ...).
    pub source: String,
    /// Only per-conversation topics show it (bot phase): re-add them on resume.
    pub watch: bool,
    /// Decided while draining for shutdown: the next start carries it out.
    pub deferred: bool,
    /// Wall-clock time of the decision, ms since the Unix epoch.
    pub decided_ms: i64,
}

/// A close still to be finished, as a restart finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unfinished {
    /// The decision.
    pub decision: DecisionRecord,
    /// The steps journalled so far, oldest first, as stored
    /// (`about_to_send:patch_conversation`, ...): the restart reads them as [`Step`]s
    /// ([`crate::closer::Resume::from_journal`]), and says what it could not read.
    pub steps: Vec<String>,
}

/// What a line of `history` records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// A rule decided to close the conversation.
    Decision,
    /// A step of the close (`about_to_send:patch_conversation`, `sent:farewell`, ...).
    Step,
    /// How the close ended.
    Outcome,
    /// An accepted intake call.
    Intake,
}

impl EntryKind {
    /// The kind a history query's `kind` column names (both backends' SQL writes
    /// `decision`, `step`, `outcome` or `intake`).
    pub(super) fn of_column(kind: &str) -> EntryKind {
        match kind {
            "decision" => EntryKind::Decision,
            "step" => EntryKind::Step,
            "outcome" => EntryKind::Outcome,
            _ => EntryKind::Intake,
        }
    }

    /// The name in the table and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Decision => "decision",
            EntryKind::Step => "step",
            EntryKind::Outcome => "outcome",
            EntryKind::Intake => "intake",
        }
    }
}

impl PartialEq<&str> for EntryKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// One line of `history`: the fields that apply to its kind, the others `None` (and
/// absent from its JSON line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryEntry {
    /// When, ms since the Unix epoch (in JSON: `time`, RFC 3339 UTC).
    #[serde(rename = "time", serialize_with = "serialize_rfc3339_ms")]
    pub at_ms: i64,
    /// Conversation id.
    pub conversation_id: String,
    /// Decision, step, outcome or intake.
    pub kind: EntryKind,
    /// The table's text for the line: the rule and intent, the step as journalled, the
    /// outcome, the intake answer.
    pub what: String,
    /// Rule name (decisions and outcomes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The intent (decisions, outcomes; intake calls that named one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub intent: Option<String>,
    /// Which source led to the decision (`queue`, `detail`, `intake`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The queue, when the decision knew it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_id: Option<String>,
    /// Decided while draining for shutdown, left for the next start (decisions).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deferred: Option<bool>,
    /// The step without its detail (`failed:farewell` of `failed:farewell: 503 ...`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// `confirmed`, `failed`, ... (outcomes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// Requests Genesys answered during the close (outcomes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests: Option<i64>,
    /// Decision to confirmation or to giving up, ms (outcomes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<i64>,
    /// Why: an outcome's reason, or a step's detail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Genesys correlation id of the last failed call (outcomes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// What the intake endpoint answered (`close`, `no_rule`, `duplicate`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    /// `[ha]`: the lease epoch a fenced step was written under (steps in the group's
    /// journal on PostgreSQL; `None` for other lines, unfenced steps and SQLite).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<i64>,
    /// `[ha]`: the instance that wrote a fenced step (as [`epoch`](Self::epoch)).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}

pub(super) fn serialize_rfc3339_ms<S: serde::Serializer>(
    ms: &i64,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339_ms(*ms))
}

/// What `history` selects; every condition must hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistoryQuery<'a> {
    /// Lines at or after this time, ms since the Unix epoch.
    pub since_ms: i64,
    /// Only this conversation.
    pub conversation_id: Option<&'a str>,
    /// Only conversations whose close ended with this outcome at or after `since_ms`.
    pub outcome: Option<&'a str>,
    /// Only conversations decided and not finished (what the next start carries on).
    pub unfinished: bool,
}

/// A finished close as journalled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutcomeRecord {
    /// Conversation id.
    pub conversation_id: String,
    /// `confirmed`, `failed`, ...
    pub outcome: String,
    /// Why it failed, or what went wrong on the way.
    pub reason: Option<String>,
    /// Genesys correlation id of the last failed call.
    pub correlation_id: Option<String>,
    /// Requests Genesys answered.
    pub requests: i64,
    /// Decision to confirmation (or to giving up), ms.
    pub latency_ms: Option<i64>,
}

/// Where finished outcomes are delivered (the outcome feed); each journalled outcome
/// gets an outbox entry per sink, in the same transaction, so delivery is at least once
/// across crashes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sinks {
    /// `[feed] url`.
    pub http: bool,
    /// `[feed] file`.
    pub file: bool,
}

/// An outcome waiting for delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxItem {
    /// Row id.
    pub id: i64,
    /// Idempotency key: the same for every delivery attempt of this outcome.
    pub key: String,
    /// The JSON object to deliver.
    pub payload: String,
    /// Still to POST.
    pub http_pending: bool,
    /// Still to append to the file.
    pub file_pending: bool,
    /// Failed attempts so far.
    pub attempts: i64,
}

pub(crate) fn rfc3339_ms(ms: i64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64))
        .to_string()
}

/// The outcome feed's JSON object (stable field names; documented in the README).
#[allow(clippy::too_many_arguments)]
pub(crate) fn feed_payload(
    key: &str,
    o: &OutcomeRecord,
    rule: &str,
    intent: &str,
    source: &str,
    queue_id: Option<&str>,
    decided_ms: i64,
    finished_ms: i64,
) -> String {
    serde_json::json!({
        "idempotency_key": key,
        "conversation_id": o.conversation_id,
        "rule": rule,
        "intent": intent,
        "source": source,
        "queue_id": queue_id,
        "outcome": o.outcome,
        "decided_at": rfc3339_ms(decided_ms),
        "finished_at": rfc3339_ms(finished_ms),
        "latency_ms": o.latency_ms,
        "requests": o.requests,
        "reason": o.reason,
        "correlation_id": o.correlation_id,
    })
    .to_string()
}
