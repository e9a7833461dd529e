//! Logs and counters.
//!
//! Logs are JSON lines for journald and shippers, or human text for a terminal. Field
//! names are stable: `conversation_id`, `rule`, `intent`, `queue_id`, `outcome`,
//! `latency_ms`, `requests`, `correlation_id`, `channel_id`, `stream`, `reason`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat, parse_level};

/// A monotonically increasing counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Daemon-wide counters, shared by the streams, the event loop and the closer.
#[derive(Debug, Default)]
pub struct Stats {
    /// Text frames read from any socket.
    pub frames: Counter,
    /// Frames that could not be read (skipped, logged).
    pub malformed_frames: Counter,
    /// Well-formed frames on topics we do not handle.
    pub unknown_topics: Counter,
    /// Binary socket frames (Genesys sends text only), skipped.
    pub binary_frames: Counter,
    /// Text frames over the size worth parsing, skipped.
    pub oversized_frames: Counter,
    /// Make-before-break moves to a fresh channel, and topics re-added in place after
    /// `no_longer_subscribed` or a silent drop (as `rotations_total` counts them).
    pub rotations: Counter,
    /// Topics found missing by the periodic subscription check, re-added.
    pub dropped_topics: Counter,
    /// Keeps repetitive warnings (bad frames by kind) to one line a minute.
    pub log_limit: LogLimit,
    /// Conversation events handed to the event loop.
    pub conversation_events: Counter,
    /// Rule decisions made.
    pub decisions: Counter,
    /// Conversations seen closing.
    pub closed_seen: Counter,
    /// Conversations first learned of from a flow-metrics record.
    pub discovered: Counter,
    /// Intake calls handed to the event loop.
    pub intake_calls: Counter,
    /// REST reads to catch up on a watched conversation (or to verify an intake intent).
    pub catchup_reads: Counter,
    /// Events for conversations closed and evicted earlier, ignored.
    pub late_events: Counter,
    /// REST reads made to resync after a stream gap.
    pub resync_reads: Counter,
}

/// A frame the sockets read but skipped, by why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skipped {
    /// Over the size worth parsing.
    Oversized,
    /// A binary frame (Genesys sends text).
    Binary,
    /// Not a frame the parser can read.
    Malformed,
}

/// Every count here that has a metric goes through one method that bumps both, so the
/// run's summary and the metrics cannot drift apart (the one counting path).
impl Stats {
    /// A text frame read and parsed, by its kind (the `frames_total` metric's label).
    pub fn frame(&self, kind: &'static str) {
        self.frames.inc();
        crate::metrics::frame(kind);
    }

    /// A skipped frame: the summary's counter and the frame metric's `kind`.
    pub fn skipped(&self, why: Skipped) {
        let (counter, kind) = match why {
            Skipped::Oversized => (&self.oversized_frames, "oversized"),
            Skipped::Binary => (&self.binary_frames, "binary"),
            Skipped::Malformed => (&self.malformed_frames, "malformed"),
        };
        counter.inc();
        if why != Skipped::Binary {
            // A text frame all the same (the summary's `frames` counts text frames).
            self.frames.inc();
        }
        crate::metrics::frame(kind);
    }

    /// A channel rotated or re-subscribed in place, by `reason` (the
    /// `rotations_total` metric's label).
    pub fn rotated(&self, reason: &'static str) {
        self.rotations.inc();
        crate::metrics::rotation(reason);
    }

    /// A rule decided (or a past run's close was resumed): a close sequence starts.
    pub fn decided(&self, rule: &std::sync::Arc<str>, source: &'static str) {
        self.decisions.inc();
        crate::metrics::decision(rule, source);
    }
}

/// At most one log line per kind per interval, saying how many were held back.
#[derive(Debug, Default)]
pub struct LogLimit {
    /// Kind -> (when last logged, how many since).
    seen: Mutex<HashMap<&'static str, (Instant, u64)>>,
}

/// How often one kind of repetitive warning may be logged.
pub const LOG_EVERY: Duration = Duration::from_secs(60);

impl LogLimit {
    /// Whether to log this occurrence of `kind` now; `Some(n)` with the number of
    /// occurrences held back since the last line.
    pub fn allow(&self, kind: &'static str) -> Option<u64> {
        self.allow_every(kind, LOG_EVERY)
    }

    /// [`allow`](Self::allow) with an interval of the caller's.
    pub fn allow_every(&self, kind: &'static str, every: Duration) -> Option<u64> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match seen.get_mut(kind) {
            Some((last, held)) if now.duration_since(*last) < every => {
                *held += 1;
                None
            }
            Some((last, held)) => {
                let n = *held;
                *last = now;
                *held = 0;
                Some(n)
            }
            None => {
                seen.insert(kind, (now, 0));
                Some(0)
            }
        }
    }
}

/// Installs the global log subscriber. `RUST_LOG`, when set, overrides the configured level.
/// Calling it twice is harmless (the second call keeps the first subscriber).
pub fn init_logging(log: &LogConfig) {
    // RUST_LOG wins over the config's level; a value that is not a filter is said, not
    // silently ignored.
    let mut problems = Vec::new();
    let env = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let from_env = env
        .as_deref()
        .map(|v| parse_level(v).map(|f| EnvFilter::new(&f)));
    let filter = match from_env {
        Some(Ok(f)) => f,
        other => {
            if let (Some(Err(e)), Some(v)) = (&other, &env) {
                problems.push(format!(
                    "RUST_LOG={:?} is not a log filter ({e}); using the config's level",
                    v.chars().take(100).collect::<String>()
                ));
            }
            // `check` refuses a bad level; a config built in code may still hold one.
            match parse_level(&log.level) {
                Ok(f) => EnvFilter::new(&f),
                Err(e) => {
                    problems.push(format!(
                        "[log] level {:?} is not a log filter ({e}); using \"info\"",
                        log.level
                    ));
                    EnvFilter::new("info")
                }
            }
        }
    };
    // Colour only for a person at a terminal who did not ask for none (NO_COLOR), never
    // into journald or a file.
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr()) && !no_color;
    // Under systemd with stderr to the journal, each line starts with its syslog
    // priority (`<3>`...), which journald strips and stores: `journalctl -p warning` works.
    let journald = stderr_is_journal(std::env::var("JOURNAL_STREAM").ok().as_deref());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        // stderr, kept clear of the demo's status line (a no-op when there is none).
        .with_writer(PriorityPrefix { journald });
    let result = match log.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
        LogFormat::Human => builder.with_target(false).compact().try_init(),
    };
    // Already installed (tests, demo): keep the existing one.
    if result.is_ok() {
        for p in problems {
            tracing::warn!("{p}");
        }
    }
}

/// Whether stderr is the journal stream systemd named in `JOURNAL_STREAM`
/// (`device:inode`, decimal). The variable is inherited by children whose stderr went
/// elsewhere (a pipe, a file): only a match of both numbers counts.
fn stderr_is_journal(var: Option<&str>) -> bool {
    let Some((dev, ino)) = var.and_then(|v| v.trim().split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    stderr_identity().is_some_and(|(d, i)| d == dev && i == ino)
}

/// The device and inode of what stderr is open on.
#[cfg(unix)]
fn stderr_identity() -> Option<(u64, u64)> {
    use std::os::fd::AsFd as _;
    use std::os::unix::fs::MetadataExt as _;
    let fd = std::io::stderr().as_fd().try_clone_to_owned().ok()?;
    let meta = std::fs::File::from(fd).metadata().ok()?;
    Some((meta.dev(), meta.ino()))
}

#[cfg(not(unix))]
fn stderr_identity() -> Option<(u64, u64)> {
    None
}

/// The log writer: stderr (through the demo's status line keeper), each line prefixed
/// with its syslog priority when journald reads it.
struct PriorityPrefix {
    journald: bool,
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for PriorityPrefix {
    type Writer = Prefixed;

    fn make_writer(&'a self) -> Prefixed {
        Prefixed {
            prefix: None,
            inner: crate::progress::stderr(),
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Prefixed {
        let prefix: Option<&'static [u8]> = self.journald.then(|| match *meta.level() {
            tracing::Level::ERROR => &b"<3>"[..],
            tracing::Level::WARN => b"<4>",
            tracing::Level::INFO => b"<6>",
            _ => b"<7>",
        });
        Prefixed {
            prefix,
            inner: crate::progress::stderr(),
        }
    }
}

/// One event's writer: the prefix goes out before its first byte.
struct Prefixed {
    prefix: Option<&'static [u8]>,
    inner: crate::progress::Stderr,
}

impl std::io::Write for Prefixed {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(p) = self.prefix.take() {
            let mut line = Vec::with_capacity(p.len() + buf.len());
            line.extend_from_slice(p);
            line.extend_from_slice(buf);
            self.inner.write_all(&line)?;
            return Ok(buf.len());
        }
        self.inner.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// An error and every cause under it, joined with ": " (a network failure says whether
/// it was DNS, a refused connection, TLS or a timeout, not only "error sending request").
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let s = c.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cause = c.source();
    }
    out
}
