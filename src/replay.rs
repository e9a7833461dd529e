//! `genesys-closer replay`: frames recorded by `run --record`, fed through the daemon's
//! own decision path (`parse_frame`, [`Store::apply`], [`Rules::evaluate`]) with nothing
//! sent anywhere, to see which conversations a config's rules would close.
//!
//! What the event loop does with a frame is done here the same way: a conversation frame
//! is applied and, while no rule has decided on its conversation, the rules are asked; a
//! flow-metrics record makes a conversation known; closed conversations are evicted after
//! the same grace period, measured on the recording's own clock, so a late frame for one
//! is ignored as the daemon would ignore it. What the recording cannot hold is not
//! replayed: intake calls and REST reads (catch-up, verify, resync after a gap).

use std::collections::{BTreeMap, HashSet};
use std::io::{self, BufRead};
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::time::Instant;

use crate::config::Config;
use crate::genesys::frames::{Frame, FrameError, parse_frame};
use crate::rules::Rules;
use crate::state::Store;

/// Bad lines whose place is kept in the summary, at most.
const BAD_LINES_KEPT: usize = 20;

/// What one file gave a replay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileTotals {
    /// Lines read (blank ones excluded).
    pub lines: u64,
    /// Recorded frames, those recorded only as their size included.
    pub recorded: u64,
}

impl FileTotals {
    /// Whether the file holds no recorded frame at all: it is not a recording (or
    /// nothing was recorded), and a replay of it tested no rule.
    pub fn no_frames(&self) -> bool {
        self.recorded == 0
    }
}

/// One rule decision during a replay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decided {
    /// Conversation id.
    pub conversation_id: String,
    /// The rule that matched.
    pub rule: String,
    /// The intent it matched.
    pub intent: String,
    /// Which kind of frame decided (`queue`, `user`, `detail`, `flow`).
    pub source: &'static str,
    /// When the deciding frame was read (unix ms), if the line says.
    pub at_ms: Option<i64>,
    /// The socket it was read on, if the line says.
    pub stream: Option<u64>,
    /// The recording file and line of the deciding frame.
    pub file: String,
    /// 1-based line number.
    pub line: u64,
    /// The conversation was already closed when the rule matched (nothing to close).
    pub already_closed: bool,
    /// The rule is a dry run (it would only log).
    pub dry_run: bool,
}

impl Decided {
    /// `conversation_id rule intent source time` and what is special about it.
    pub fn text_line(&self) -> String {
        let mut s = format!(
            "{}  {}  {}  {}  {}",
            self.conversation_id,
            self.rule,
            self.intent,
            self.source,
            time(self.at_ms)
        );
        if self.already_closed {
            s += "  (already closed)";
        }
        if self.dry_run {
            s += "  (dry run)";
        }
        s
    }
}

/// A line of `replay --json`: `{"type": "decision", ...}` or `{"type": "summary", ...}`.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum JsonLine<'a> {
    /// One decision.
    Decision(&'a Decided),
    /// The totals, last.
    Summary(&'a Summary),
}

impl JsonLine<'_> {
    /// The line, without its newline.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| {
            serde_json::json!({"type": "error", "error": e.to_string()}).to_string()
        })
    }
}

/// A line that is not a recorded frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BadLine {
    /// The recording file.
    pub file: String,
    /// 1-based line number.
    pub line: u64,
    /// What is wrong with it.
    pub error: String,
}

/// What one line produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A rule decided.
    Decision(Decided),
    /// The line is not a recorded frame.
    Bad(BadLine),
}

/// Totals of a replay.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Lines read (blank ones excluded).
    pub lines: u64,
    /// Recorded frames replayed (skipped and bad lines excluded).
    pub frames: u64,
    /// Frames over 1 MiB, recorded only as their size (the daemon skips them unread).
    pub skipped_oversized: u64,
    /// Distinct conversations the frames named.
    pub conversations: u64,
    /// Rule decisions.
    pub decisions: u64,
    /// Decisions by rule name.
    pub decisions_by_rule: BTreeMap<String, u64>,
    /// Frames read, by kind (`conversation`, `heartbeat`, `flow_metric`, ...).
    pub frames_by_kind: BTreeMap<&'static str, u64>,
    /// Frames that failed to parse, by why: `not_json`, `malformed` (JSON, not a
    /// notification), `missing_id` (a conversation topic without a conversation id).
    pub parse_failures: BTreeMap<&'static str, u64>,
    /// Frames for conversations closed and evicted earlier, ignored.
    pub late_events: u64,
    /// Lines that are not recorded frames.
    pub bad_lines: u64,
    /// The first of them.
    pub first_bad_lines: Vec<BadLine>,
    /// Time of the first and last frame (unix ms).
    pub first_at_ms: Option<i64>,
    /// See `first_at_ms`.
    pub last_at_ms: Option<i64>,
}

impl Summary {
    /// The human summary printed after the decisions.
    pub fn text(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "replay: {} frame(s) from {} line(s), {} to {}; {} conversation(s); {} decision(s)",
            self.frames,
            self.lines,
            time(self.first_at_ms),
            time(self.last_at_ms),
            self.conversations,
            self.decisions
        );
        let _ = writeln!(
            s,
            "  decisions by rule: {}",
            or_none(counts(&self.decisions_by_rule))
        );
        let _ = writeln!(
            s,
            "  frames by kind: {}",
            or_none(counts(&self.frames_by_kind))
        );
        let _ = writeln!(
            s,
            "  frames that failed to parse: {}",
            or_none(counts(&self.parse_failures))
        );
        if self.skipped_oversized > 0 {
            let _ = writeln!(
                s,
                "  frames over 1 MiB (recorded as their size only; the daemon skips them too): {}",
                self.skipped_oversized
            );
        }
        if self.late_events > 0 {
            let _ = writeln!(
                s,
                "  frames for conversations closed and forgotten earlier (ignored): {}",
                self.late_events
            );
        }
        if self.bad_lines > 0 {
            let places: Vec<String> = self
                .first_bad_lines
                .iter()
                .map(|b| format!("{}:{}", b.file, b.line))
                .collect();
            let more = if self.bad_lines as usize > places.len() {
                ", ..."
            } else {
                ""
            };
            let _ = writeln!(
                s,
                "  bad lines (not recorded frames, skipped): {} ({}{more})",
                self.bad_lines,
                places.join(", ")
            );
        }
        s
    }
}

/// `a 1, b 2`.
fn counts<K: std::fmt::Display>(m: &BTreeMap<K, u64>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn or_none(s: String) -> String {
    if s.is_empty() { "none".into() } else { s }
}

/// RFC 3339 with milliseconds, or `-`.
fn time(at_ms: Option<i64>) -> String {
    match at_ms {
        Some(ms) if ms >= 0 => {
            humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms as u64))
                .to_string()
        }
        _ => "-".into(),
    }
}

/// One line of a recording.
#[derive(Deserialize)]
struct Recorded<'a> {
    #[serde(default)]
    at_ms: Option<i64>,
    #[serde(default)]
    stream: Option<u64>,
    #[serde(borrow, default)]
    frame: Option<&'a RawValue>,
    #[serde(default)]
    skipped_bytes: Option<u64>,
}

/// A replay in progress: the rules, a state map of its own, and the totals.
pub struct Replay {
    rules: Rules,
    store: Store,
    summary: Summary,
    seen: HashSet<Box<str>>,
    /// The recording's clock: its first frame is `base`.
    base: Instant,
    first_ms: Option<i64>,
    /// Latest instant handed out (frames of several sockets are not quite in order).
    now: Instant,
    evicted_at: Instant,
}

impl Replay {
    /// A replay of `config`'s rules.
    pub fn new(config: &Config) -> Replay {
        let base = Instant::now();
        Replay {
            rules: Rules::compile(config),
            store: Store::new(),
            summary: Summary::default(),
            seen: HashSet::new(),
            base,
            first_ms: None,
            now: base,
            evicted_at: base,
        }
    }

    /// Replays every line of `reader` (named `file` in reports), telling `out` of each
    /// decision and bad line as it comes; returns what the file held. Only reading
    /// `reader` can fail.
    pub fn feed(
        &mut self,
        file: &str,
        mut reader: impl BufRead,
        mut out: impl FnMut(Item),
    ) -> io::Result<FileTotals> {
        let recorded = |s: &Summary| s.frames + s.skipped_oversized;
        let (lines, frames) = (self.summary.lines, recorded(&self.summary));
        let mut buf = Vec::new();
        let mut line_no = 0u64;
        loop {
            buf.clear();
            if reader.read_until(b'\n', &mut buf)? == 0 {
                return Ok(FileTotals {
                    lines: self.summary.lines - lines,
                    recorded: recorded(&self.summary) - frames,
                });
            }
            line_no += 1;
            if let Some(item) = self.line(file, line_no, &buf) {
                out(item);
            }
        }
    }

    /// Replays one line. Longer than most: it reads the line's parts in the order a
    /// recording writes them, each with its own error text for the operator, then hands
    /// the frame to the one decision step; each part is a few lines.
    pub fn line(&mut self, file: &str, line_no: u64, bytes: &[u8]) -> Option<Item> {
        let bad = |error: String| BadLine {
            file: file.to_string(),
            line: line_no,
            error,
        };
        let text = match std::str::from_utf8(bytes) {
            Ok(t) => t.trim(),
            Err(e) => return Some(self.bad(bad(format!("not UTF-8: {e}")))),
        };
        if text.is_empty() {
            return None;
        }
        self.summary.lines += 1;
        let rec: Recorded<'_> = match serde_json::from_str(text) {
            Ok(r) => r,
            Err(e) => return Some(self.bad(bad(format!("not a recorded frame: {e}")))),
        };
        let frame_text = match (rec.frame, rec.skipped_bytes) {
            (Some(f), _) if f.get().starts_with('"') => {
                match serde_json::from_str::<String>(f.get()) {
                    Ok(s) => s,
                    Err(e) => return Some(self.bad(bad(format!("bad frame text: {e}")))),
                }
            }
            (Some(f), _) => f.get().to_string(),
            (None, Some(_)) => {
                self.clock(rec.at_ms);
                self.summary.skipped_oversized += 1;
                return None;
            }
            (None, None) => {
                return Some(self.bad(bad("neither `frame` nor `skipped_bytes`".into())));
            }
        };
        let now = self.clock(rec.at_ms);
        self.summary.frames += 1;
        let frame = match parse_frame(&frame_text, self.rules.attributes()) {
            Ok(f) => f,
            Err(e) => {
                let kind = match e {
                    FrameError::MissingId { .. } => "missing_id",
                    FrameError::Malformed(_)
                        if serde_json::from_str::<serde::de::IgnoredAny>(&frame_text).is_err() =>
                    {
                        "not_json"
                    }
                    FrameError::Malformed(_) => "malformed",
                };
                *self.summary.parse_failures.entry(kind).or_insert(0) += 1;
                return None;
            }
        };
        *self.summary.frames_by_kind.entry(frame.kind()).or_insert(0) += 1;
        let ev = match frame {
            Frame::Conversation(ev) => ev,
            // As the event loop's `on_discovered`: a conversation new to us becomes known.
            Frame::FlowMetric(m) => crate::decide::discovered(&self.store, &m)?,
            _ => return None,
        };
        if !self.seen.contains(&ev.conversation_id) {
            self.seen.insert(ev.conversation_id.clone());
            self.summary.conversations += 1;
        }
        let applied = crate::decide::step(&self.store, &self.rules, &ev, now);
        if applied.late {
            self.summary.late_events += 1;
            return None;
        }
        let crate::decide::Matched {
            verdict,
            already_closed,
            ..
        } = applied.decision?;
        self.summary.decisions += 1;
        *self
            .summary
            .decisions_by_rule
            .entry(verdict.rule.name.to_string())
            .or_insert(0) += 1;
        Some(Item::Decision(Decided {
            conversation_id: ev.conversation_id.to_string(),
            rule: verdict.rule.name.to_string(),
            intent: verdict.intent.to_string(),
            source: ev.source.as_str(),
            at_ms: rec.at_ms,
            stream: rec.stream,
            file: file.to_string(),
            line: line_no,
            already_closed,
            dry_run: verdict.rule.dry_run,
        }))
    }

    fn bad(&mut self, b: BadLine) -> Item {
        self.summary.bad_lines += 1;
        if self.summary.first_bad_lines.len() < BAD_LINES_KEPT {
            self.summary.first_bad_lines.push(b.clone());
        }
        Item::Bad(b)
    }

    /// The instant of a frame read at `at_ms` on the recording's clock; evicts as the
    /// event loop would have by then.
    fn clock(&mut self, at_ms: Option<i64>) -> Instant {
        if let Some(ms) = at_ms {
            let first = *self.first_ms.get_or_insert(ms);
            self.summary.first_at_ms = Some(self.summary.first_at_ms.map_or(ms, |f| f.min(ms)));
            self.summary.last_at_ms = Some(self.summary.last_at_ms.map_or(ms, |l| l.max(ms)));
            let at = self.base + Duration::from_millis(ms.saturating_sub(first).max(0) as u64);
            self.now = self.now.max(at);
        }
        if self.now.saturating_duration_since(self.evicted_at) >= crate::daemon::EVICT_EVERY {
            self.evicted_at = self.now;
            self.store.evict(
                self.now,
                crate::daemon::CLOSED_GRACE,
                crate::daemon::IDLE_MAX,
            );
        }
        self.now
    }

    /// The totals so far.
    pub fn summary(&self) -> &Summary {
        &self.summary
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    fn events(name: &str) -> String {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/genesys/events");
        std::fs::read_to_string(dir.join(name)).expect("example frame")
    }

    fn config(rules: &str) -> Config {
        let text = format!(
            "[genesys]\nregion = \"us-east-1\"\nclient_id = \"3f2504e0-4f89-41d3-9a0c-0305e82c3301\"\n[stream]\n\
             queues = [\"8f14e45f-ceea-467a-9575-3b9d1c2e4a77\"]\n{rules}"
        );
        Config::parse(&text, Path::new("replay-test.toml")).expect("valid config")
    }

    /// Records the example frames (with a non-JSON frame and an oversized one) through
    /// the recorder, then replays the file.
    #[test]
    fn recorded_frames_replay_to_the_decisions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("frames.jsonl");
        let (rec, recording) =
            crate::record::start(&path, crate::record::DEFAULT_MAX_BYTES).expect("recorder starts");
        rec.frame(0, &events("heartbeat.json"));
        rec.frame(0, "this is not JSON {");
        rec.frame(
            1,
            &events("bot-phase/04-flow-metrics-bot-flow-started.json"),
        );
        rec.frame(0, &events("01-queue-bot-handled-intent-attributes.json"));
        rec.frame(0, &"x".repeat(crate::record::MAX_RECORDED_FRAME + 1));
        rec.frame(1, &events("bot-phase/05-detail-attributes-bot-intent.json"));
        rec.frame(0, &events("02-user-agent-connected.json"));
        rec.frame(0, &events("03-queue-fully-disconnected.json"));
        rec.frame(
            0,
            r#"{"topicName":"v2.routing.queues.q.conversations.messages","eventBody":{}}"#,
        );
        drop(rec);
        let totals = recording.finish();
        assert_eq!(totals.lines, 9);
        assert_eq!(totals.dropped, 0);
        let mut text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 9, "one line per frame");
        text.push_str("a line that is not JSON\n\n{\"at_ms\": 1}\n");

        // Only the queue conversation matches: the bot-phase one is CancelSubscription too,
        // but the rule is limited to the watched queue.
        let cfg = config(
            "[[rule]]\nname = \"cancel\"\nintents = [\"CancelSubscription\"]\n\
             queues = [\"8f14e45f-ceea-467a-9575-3b9d1c2e4a77\"]\n",
        );
        let mut replay = Replay::new(&cfg);
        let mut items = Vec::new();
        replay
            .feed("frames.jsonl", text.as_bytes(), |i| items.push(i))
            .unwrap();
        let decisions: Vec<(String, String, String, &str, u64)> = items
            .iter()
            .filter_map(|i| match i {
                Item::Decision(d) => Some((
                    d.conversation_id.clone(),
                    d.rule.clone(),
                    d.intent.clone(),
                    d.source,
                    d.line,
                )),
                Item::Bad(_) => None,
            })
            .collect();
        assert_eq!(
            decisions,
            [(
                "3a6f2b9e-7c41-4d8a-b5e2-91f0c7d3a864".to_string(),
                "cancel".to_string(),
                "CancelSubscription".to_string(),
                "queue",
                4
            )]
        );
        let bad: Vec<u64> = items
            .iter()
            .filter_map(|i| match i {
                Item::Bad(b) => Some(b.line),
                Item::Decision(_) => None,
            })
            .collect();
        assert_eq!(
            bad,
            [10, 12],
            "the non-JSON line and the line without a frame"
        );
        let s = replay.summary();
        assert_eq!(s.lines, 11);
        assert_eq!(s.frames, 8);
        assert_eq!(s.skipped_oversized, 1);
        assert_eq!(s.conversations, 3);
        assert_eq!(s.decisions, 1);
        assert_eq!(s.decisions_by_rule.get("cancel"), Some(&1));
        assert_eq!(s.frames_by_kind.get("conversation"), Some(&4));
        assert_eq!(s.frames_by_kind.get("heartbeat"), Some(&1));
        assert_eq!(s.frames_by_kind.get("flow_metric"), Some(&1));
        assert_eq!(s.parse_failures.get("not_json"), Some(&1));
        assert_eq!(s.parse_failures.get("missing_id"), Some(&1));
        assert_eq!(s.bad_lines, 2);
        assert!(s.first_at_ms.is_some() && s.first_at_ms <= s.last_at_ms);
        let text = s.text();
        assert!(text.contains("decisions by rule: cancel 1"), "{text}");
        assert!(text.contains("frames.jsonl:10, frames.jsonl:12"), "{text}");

        // Without the queue filter the bot-phase conversation is decided too, on the
        // detail frame.
        let cfg = config("[[rule]]\nname = \"cancel\"\nintents = [\"CancelSubscription\"]\n");
        let mut replay = Replay::new(&cfg);
        let mut sources = Vec::new();
        replay
            .feed("frames.jsonl", text_of(&path).as_bytes(), |i| {
                if let Item::Decision(d) = i {
                    sources.push((d.source, d.already_closed));
                }
            })
            .unwrap();
        assert_eq!(sources, [("queue", false), ("detail", false)]);
    }

    #[test]
    fn a_file_without_a_recorded_frame_says_so() {
        let cfg = config("[[rule]]\nname = \"cancel\"\nintents = [\"CancelSubscription\"]\n");
        let mut replay = Replay::new(&cfg);
        let mut bad = 0;
        let totals = replay
            .feed(
                "config.toml",
                "[genesys]\nregion = \"us-east-1\"\n\n".as_bytes(),
                |_| bad += 1,
            )
            .unwrap();
        assert_eq!(
            totals,
            FileTotals {
                lines: 2,
                recorded: 0
            }
        );
        assert!(totals.no_frames());
        assert_eq!(bad, 2);
        let empty = replay.feed("empty.jsonl", "".as_bytes(), |_| {}).unwrap();
        assert!(empty.no_frames());
        // One good frame among bad lines is a recording; only this file's lines count.
        let frame: serde_json::Value = serde_json::from_str(&events("heartbeat.json")).unwrap();
        let text = format!(
            "{}\n{{truncated\n{}\n",
            serde_json::json!({"at_ms": 1, "stream": 0, "frame": frame}),
            serde_json::json!({"at_ms": 2, "stream": 0, "skipped_bytes": 2_000_000})
        );
        let totals = replay
            .feed("frames.jsonl", text.as_bytes(), |_| {})
            .unwrap();
        assert_eq!(
            totals,
            FileTotals {
                lines: 3,
                recorded: 2
            }
        );
        assert!(!totals.no_frames());
    }

    fn text_of(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap()
    }

    #[test]
    fn a_late_frame_after_eviction_is_ignored_and_never_decides_twice() {
        let cfg = config("[[rule]]\nname = \"cancel\"\nintents = [\"CancelSubscription\"]\n");
        let mut replay = Replay::new(&cfg);
        let line = |at_ms: i64, name: &str| {
            let frame: serde_json::Value = serde_json::from_str(&events(name)).unwrap();
            serde_json::json!({"at_ms": at_ms, "stream": 0, "frame": frame}).to_string()
        };
        let lines = [
            line(1_000, "01-queue-bot-handled-intent-attributes.json"),
            line(2_000, "03-queue-fully-disconnected.json"),
            // A heartbeat an hour later moves the clock past the closed grace period.
            line(3_600_000, "heartbeat.json"),
            line(3_601_000, "01-queue-bot-handled-intent-attributes.json"),
        ];
        let mut decisions = 0;
        for (i, l) in lines.iter().enumerate() {
            if let Some(Item::Decision(_)) = replay.line("f", i as u64 + 1, l.as_bytes()) {
                decisions += 1;
            }
        }
        assert_eq!(decisions, 1);
        assert_eq!(replay.summary().late_events, 1);
    }
}
