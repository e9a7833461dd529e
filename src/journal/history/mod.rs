//! `genesys-closer history`: the journal as an on-call engineer reads it (a table by
//! conversation) and as a script reads it (JSON lines with typed fields), with a summary
//! that counts decisions, outcomes and unfinished closes so nobody has to.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;

use super::{Backend, EntryKind, HistoryEntry, HistoryQuery, JournalError, rfc3339_ms};
use crate::outcome::Outcome;
use crate::step::Step;

/// How far back `history` looks without `--since` (and without `--unfinished`).
pub const DEFAULT_SINCE: Duration = Duration::from_secs(24 * 3600);

const DAY_MS: i64 = 86_400_000;

/// Where a `--since` period starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    /// This long before now (`90m`, `1h`, `7d`).
    Ago(Duration),
    /// Midnight UTC today.
    Today,
    /// Midnight UTC of the day before today (so "yesterday and today").
    Yesterday,
    /// A moment, ms since the Unix epoch (`2026-12-01` is its midnight UTC).
    At(i64),
}

impl Since {
    /// The forms [`parse`](Self::parse) accepts, for error messages and help.
    pub const FORMS: &'static str = "a duration (90m, 1h, 7d), today, yesterday (both from \
        midnight UTC), a date (2026-12-01, from midnight UTC) or an RFC 3339 time \
        (2026-12-01T08:00:00Z, 2026-12-01T09:00:00+01:00)";

    /// Reads one of [`FORMS`](Self::FORMS).
    pub fn parse(text: &str) -> Result<Since, String> {
        let t = text.trim();
        let bad = |why: String| format!("`{t}` is not a start time ({why}); use {}", Self::FORMS);
        if t.eq_ignore_ascii_case("today") {
            return Ok(Since::Today);
        }
        if t.eq_ignore_ascii_case("yesterday") {
            return Ok(Since::Yesterday);
        }
        // A date or a time starts with a year and a dash; a duration never does.
        let b = t.as_bytes();
        if b.len() >= 5 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-' {
            return timestamp_ms(t).map(Since::At).map_err(bad);
        }
        humantime::parse_duration(t)
            .map(Since::Ago)
            .map_err(|e| bad(e.to_string()))
    }

    /// The period's start, ms since the Unix epoch, `now_ms` being now.
    pub fn start_ms(self, now_ms: i64) -> i64 {
        let midnight = now_ms - now_ms.rem_euclid(DAY_MS);
        match self {
            Since::Ago(d) => {
                now_ms.saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            }
            Since::Today => midnight,
            Since::Yesterday => midnight - DAY_MS,
            Since::At(ms) => ms,
        }
    }
}

impl std::str::FromStr for Since {
    type Err = String;
    fn from_str(s: &str) -> Result<Since, String> {
        Since::parse(s)
    }
}

/// `2026-12-01` (midnight UTC), `2026-12-01T08:00:00[.123]Z`, the same without `Z`
/// (UTC) or with a space for `T`, or with a `+01:00` / `-05:00` offset.
fn timestamp_ms(t: &str) -> Result<i64, String> {
    let at = |s: &str| -> Result<i64, String> {
        let time = humantime::parse_rfc3339_weak(s).map_err(|e| e.to_string())?;
        let since = time.duration_since(UNIX_EPOCH).map_err(|e| e.to_string())?;
        i64::try_from(since.as_millis()).map_err(|e| e.to_string())
    };
    if t.len() == "2026-12-01".len() {
        return at(&format!("{t}T00:00:00Z"));
    }
    // humantime reads a `+HH:MM` after a fraction as UTC whatever its value: the offset
    // is taken off here and applied by hand.
    if let Some((base, sign, minutes)) = split_offset(t) {
        if minutes >= 24 * 60 {
            return Err("the offset is out of range".into());
        }
        return Ok(at(base)? - sign * minutes * 60_000);
    }
    at(t)
}

/// `(time, sign, minutes)` of a time ending in `+HH:MM` or `-HH:MM`.
fn split_offset(t: &str) -> Option<(&str, i64, i64)> {
    if t.len() < "2026-12-01T08:00:00+00:00".len() || !t.is_char_boundary(t.len() - 6) {
        return None;
    }
    let (base, offset) = t.split_at(t.len() - 6);
    let o = offset.as_bytes();
    let sign = match o[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let digits = [o[1], o[2], o[4], o[5]];
    if o[3] != b':' || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let [h1, h2, m1, m2] = digits.map(|d| i64::from(d - b'0'));
    Some((base, sign, (h1 * 10 + h2) * 60 + m1 * 10 + m2))
}

/// The outcomes a close can end with (`--outcome` values), as the closer names them.
pub fn outcome_names() -> Vec<&'static str> {
    Outcome::ALL.map(Outcome::as_str).to_vec()
}

/// A journal row's columns, those that do not apply to its kind `None`.
#[derive(Debug, Clone, Default)]
pub struct Fields {
    /// Rule name.
    pub rule: Option<String>,
    /// Intent.
    pub intent: Option<String>,
    /// Deciding source.
    pub source: Option<String>,
    /// Queue.
    pub queue_id: Option<String>,
    /// Deferred decision.
    pub deferred: Option<bool>,
    /// The step as journalled, detail included.
    pub step: Option<String>,
    /// Outcome.
    pub outcome: Option<String>,
    /// Requests.
    pub requests: Option<i64>,
    /// Latency.
    pub latency_ms: Option<i64>,
    /// Reason.
    pub reason: Option<String>,
    /// Correlation id.
    pub correlation_id: Option<String>,
    /// Intake answer.
    pub answer: Option<String>,
    /// `[ha]`: the lease epoch of a fenced step.
    pub epoch: Option<i64>,
    /// `[ha]`: the instance that wrote a fenced step.
    pub instance: Option<String>,
}

/// A `history` line from a journal row: a step's detail (`failed:farewell: 503 ...`)
/// goes to `reason`, and `what` gets the table's text.
///
/// A step is read as the restart reads it ([`Step`]'s head and detail). History shows
/// every line it finds, so text that is no step this version knows (a newer version's)
/// is shown as stored, split at its first `": "` like a step's, not refused.
pub fn entry(kind: EntryKind, at_ms: i64, conversation_id: String, f: Fields) -> HistoryEntry {
    let raw_step = f.step.unwrap_or_default();
    let (step, reason) = match kind {
        EntryKind::Step => match raw_step.parse::<Step>() {
            Ok(s) => match s.detail() {
                Some(detail) => (Some(s.head()), Some(detail)),
                None => (Some(s.head()), f.reason),
            },
            Err(_) => match raw_step.split_once(": ") {
                Some((head, detail)) => (Some(head.to_owned()), Some(detail.to_owned())),
                None => (Some(raw_step.clone()), f.reason),
            },
        },
        _ => (None, f.reason),
    };
    let what = match kind {
        EntryKind::Decision => format!(
            "rule {}, intent {}{}",
            f.rule.as_deref().unwrap_or("?"),
            f.intent.as_deref().unwrap_or("?"),
            if f.deferred == Some(true) {
                " (deferred: decided while shutting down)"
            } else {
                ""
            }
        ),
        EntryKind::Step => raw_step,
        EntryKind::Outcome => f.outcome.clone().unwrap_or_default(),
        EntryKind::Intake => f.answer.clone().unwrap_or_default(),
    };
    HistoryEntry {
        at_ms,
        conversation_id,
        kind,
        what,
        rule: f.rule,
        intent: f.intent,
        source: f.source,
        queue_id: f.queue_id,
        deferred: f.deferred.filter(|_| kind == EntryKind::Decision),
        step,
        outcome: f.outcome,
        requests: f.requests,
        latency_ms: f.latency_ms,
        reason,
        correlation_id: f.correlation_id,
        answer: f.answer,
        epoch: f.epoch,
        instance: f.instance,
    }
}

/// What `history` prints.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Start of the period; `None`: [`DEFAULT_SINCE`] ago, or the whole journal with
    /// `unfinished`.
    pub since: Option<Since>,
    /// Only this conversation.
    pub conversation: Option<String>,
    /// Only conversations that ended with this outcome in the period.
    pub outcome: Option<String>,
    /// Only conversations decided and not finished.
    pub unfinished: bool,
    /// JSON lines instead of the table.
    pub json: bool,
}

/// The totals under the lines.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Start of the period (RFC 3339); absent for the whole journal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Conversations with at least one line.
    pub conversations: u64,
    /// Decision lines.
    pub decisions: u64,
    /// Outcome lines by outcome.
    pub outcomes: BTreeMap<String, u64>,
    /// Conversations shown that are decided without an outcome: the next start carries
    /// them on.
    pub unfinished: u64,
    /// Intake lines.
    pub intake_calls: u64,
}

impl Summary {
    /// Totals of `entries`; `open` holds the conversations decided and not finished.
    pub fn of(entries: &[HistoryEntry], open: &HashSet<String>, since_ms: Option<i64>) -> Self {
        let mut s = Summary {
            since: since_ms.map(rfc3339_ms),
            ..Summary::default()
        };
        let mut seen: HashSet<&str> = HashSet::new();
        for e in entries {
            if seen.insert(&e.conversation_id) {
                s.conversations += 1;
                if open.contains(&e.conversation_id) {
                    s.unfinished += 1;
                }
            }
            match e.kind {
                EntryKind::Decision => s.decisions += 1,
                EntryKind::Outcome => {
                    *s.outcomes.entry(e.what.clone()).or_insert(0) += 1;
                }
                EntryKind::Intake => s.intake_calls += 1,
                EntryKind::Step => {}
            }
        }
        s
    }

    /// `12 decisions, 10 confirmed, 1 failed, 1 unfinished; 3 intake calls (since ...)`:
    /// outcomes in the closer's order, those with none left out.
    pub fn text(&self) -> String {
        let names = outcome_names();
        let mut outcomes: Vec<(&str, u64)> = names
            .iter()
            .filter_map(|n| self.outcomes.get(*n).map(|c| (*n, *c)))
            .collect();
        outcomes.extend(
            self.outcomes
                .iter()
                .filter(|(k, _)| !names.contains(&k.as_str()))
                .map(|(k, c)| (k.as_str(), *c)),
        );
        let mut parts = vec![plural(self.decisions, "decision")];
        parts.extend(outcomes.iter().map(|(k, c)| format!("{c} {k}")));
        parts.push(format!("{} unfinished", self.unfinished));
        let mut line = parts.join(", ");
        if self.intake_calls > 0 {
            let _ = write!(line, "; {}", plural(self.intake_calls, "intake call"));
        }
        match &self.since {
            Some(t) => {
                let _ = write!(line, " (since {t})");
            }
            None => line.push_str(" (whole journal)"),
        }
        line
    }
}

fn plural(n: u64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// A line of `history --json`: `{"type": "entry", ...}` per journal line, then one
/// `{"type": "summary", ...}`.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum JsonLine<'a> {
    /// One journal line.
    Entry(&'a HistoryEntry),
    /// The totals, last.
    Summary(&'a Summary),
}

impl JsonLine<'_> {
    /// The line, without its newline.
    pub fn to_json(&self) -> String {
        // Strings, integers and booleans only: serializing cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Reads the journal as `o` asks and renders it, `now_ms` being now.
pub fn report(b: &mut dyn Backend, o: &Options, now_ms: i64) -> Result<String, JournalError> {
    let since_ms = match o.since {
        Some(s) => Some(s.start_ms(now_ms)),
        None if o.unfinished => None,
        None => Some(Since::Ago(DEFAULT_SINCE).start_ms(now_ms)),
    };
    let entries = b.history_query(&HistoryQuery {
        since_ms: since_ms.unwrap_or(i64::MIN),
        conversation_id: o.conversation.as_deref(),
        outcome: o.outcome.as_deref(),
        unfinished: o.unfinished,
    })?;
    let open: HashSet<String> = b
        .unfinished()?
        .into_iter()
        .map(|u| u.decision.conversation_id)
        .collect();
    let summary = Summary::of(&entries, &open, since_ms);
    if o.json {
        let mut out = String::new();
        for e in &entries {
            let _ = writeln!(out, "{}", JsonLine::Entry(e).to_json());
        }
        let _ = writeln!(out, "{}", JsonLine::Summary(&summary).to_json());
        Ok(out)
    } else {
        Ok(table(&entries, &summary))
    }
}

/// The entries as a table grouped by conversation (time, kind, what, detail; each
/// conversation's lines in time order, conversations in order of their first line),
/// then the summary. When a line carries a lease epoch or instance (`[ha]`: a fenced
/// step in the group's journal), a column `epoch/instance` follows the kind (`7/host-a`),
/// `-` on the lines without.
pub fn table(entries: &[HistoryEntry], summary: &Summary) -> String {
    let mut out = String::new();
    if entries.is_empty() {
        let _ = writeln!(
            out,
            "no journal entries {}",
            match &summary.since {
                Some(t) => format!("since {t}"),
                None => "in the whole journal".into(),
            }
        );
        return out;
    }
    let mut groups: Vec<(&str, Vec<&HistoryEntry>)> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for e in entries {
        let i = *index.entry(&e.conversation_id).or_insert_with(|| {
            groups.push((&e.conversation_id, Vec::new()));
            groups.len() - 1
        });
        groups[i].1.push(e);
    }
    let width = entries
        .iter()
        .filter_map(fence)
        .map(|f| f.chars().count())
        .max();
    for (id, lines) in groups {
        let _ = writeln!(out, "conversation {id}");
        for e in lines {
            let _ = write!(out, "  {}  {:<8}  ", rfc3339_ms(e.at_ms), e.kind.as_str());
            if let Some(width) = width {
                let f = fence(e).unwrap_or_else(|| "-".into());
                let _ = write!(out, "{f:<width$}  ");
            }
            out.push_str(&e.what);
            if let Some(d) = detail(e) {
                let _ = write!(out, "  ({d})");
            }
            out.push('\n');
        }
    }
    let _ = writeln!(out, "{}", summary.text());
    out
}

/// `epoch/instance` of a line written under the lease (`-` for a part it lacks), or
/// `None` when it has neither.
fn fence(e: &HistoryEntry) -> Option<String> {
    match (e.epoch, e.instance.as_deref()) {
        (None, None) => None,
        (epoch, instance) => Some(format!(
            "{}/{}",
            epoch.map_or_else(|| "-".into(), |n| n.to_string()),
            instance.unwrap_or("-")
        )),
    }
}

/// The parenthesised detail of a table line.
fn detail(e: &HistoryEntry) -> Option<String> {
    let mut parts: Vec<String> = Vec::new();
    match e.kind {
        EntryKind::Decision => {
            if let Some(s) = &e.source {
                parts.push(format!("source {s}"));
            }
            if let Some(q) = &e.queue_id {
                parts.push(format!("queue {q}"));
            }
        }
        EntryKind::Outcome => {
            if let Some(n) = e.requests {
                parts.push(format!("requests {n}"));
            }
            if let Some(ms) = e.latency_ms {
                parts.push(format!("{ms} ms"));
            }
            parts.extend(e.reason.clone());
            if let Some(c) = &e.correlation_id {
                parts.push(format!("correlation id {c}"));
            }
        }
        EntryKind::Intake => {
            if let Some(i) = &e.intent {
                parts.push(format!("intent {i}"));
            }
        }
        // `what` is the step as journalled, detail included.
        EntryKind::Step => {}
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

#[cfg(test)]
mod tests;
