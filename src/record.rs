//! `run --record FILE`: every text frame the daemon reads from a notification socket,
//! appended to FILE as one JSON line, for `replay` to feed through the rules later.
//!
//! A line is `{"at_ms": <unix ms>, "stream": <index>, "frame": <the frame>}`: the frame as
//! JSON when it is JSON (line breaks, which JSON only allows between tokens, become
//! spaces), else its raw text as a JSON string. A frame over [`MAX_RECORDED_FRAME`] is
//! recorded as `{"at_ms": .., "stream": .., "skipped_bytes": N}` (the daemon skips such a
//! frame unparsed too).
//!
//! The socket reader never waits on the disk: [`Recorder::frame`] copies the text into a
//! bounded queue (in lines and in bytes) read by a writer thread, and when the queue is
//! full the frame is dropped from the recording, counted, and said at most once a minute.
//! The file is rotated before it would pass its size limit: FILE becomes FILE.1 (one
//! previous file is kept) and a fresh FILE is started.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::telemetry::LogLimit;

/// Frames longer than this are recorded as `{"skipped_bytes": N}`.
pub const MAX_RECORDED_FRAME: usize = 1 << 20;
/// `--record-max` when not given: 100 MB.
pub const DEFAULT_MAX_BYTES: u64 = 100_000_000;
/// Frames waiting for the writer, at most.
const QUEUE_LINES: usize = 4096;
/// Bytes of frame text waiting for the writer, at most.
const QUEUE_BYTES: usize = 64 << 20;
/// How often the writer looks whether it was told to stop while the queue is empty.
const IDLE_POLL: Duration = Duration::from_millis(200);

/// One frame on its way to the writer.
struct Entry {
    at_ms: i64,
    stream: usize,
    /// The text, or `Err(length)` for a frame too large to record.
    text: Result<String, usize>,
}

#[derive(Debug, Default)]
struct Shared {
    /// Bytes of frame text in the queue.
    queued: AtomicUsize,
    /// Frames left out of the recording (queue full).
    dropped: AtomicU64,
    /// Told to stop: write what is queued, then end.
    closing: AtomicBool,
    /// One warning a minute per kind.
    log_limit: LogLimit,
}

/// Hands frames to the writer; cheap to clone (one per stream).
#[derive(Debug, Clone)]
pub struct Recorder {
    tx: SyncSender<Entry>,
    shared: Arc<Shared>,
}

/// The writer thread; [`Recording::finish`] writes what is queued and stops it.
#[derive(Debug)]
pub struct Recording {
    thread: Option<JoinHandle<Totals>>,
    shared: Arc<Shared>,
}

/// What a recording wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Lines written (frames and placeholders).
    pub lines: u64,
    /// Frames left out because the queue was full.
    pub dropped: u64,
    /// Times the file was rotated.
    pub rotations: u64,
    /// Lines lost to write errors.
    pub write_errors: u64,
}

/// Opens (appends to) `path` and starts the writer thread; the file is rotated before
/// it grows past `max_bytes`.
pub fn start(path: &Path, max_bytes: u64) -> io::Result<(Recorder, Recording)> {
    let file = open(path)?;
    let size = file.metadata()?.len();
    let (tx, rx) = mpsc::sync_channel(QUEUE_LINES);
    let shared = Arc::new(Shared::default());
    let writer = Writer {
        path: path.to_path_buf(),
        max_bytes: max_bytes.max(1),
        out: Some(BufWriter::new(file)),
        size,
        totals: Totals::default(),
        shared: Arc::clone(&shared),
    };
    let thread = std::thread::Builder::new()
        .name("frame-recorder".into())
        .spawn(move || writer.run(rx))?;
    tracing::info!(path = %path.display(), max_bytes, "recording every frame read from the sockets");
    Ok((
        Recorder {
            tx,
            shared: Arc::clone(&shared),
        },
        Recording {
            thread: Some(thread),
            shared,
        },
    ))
}

/// Frames carry customer data (names, attributes): a new file is readable by its owner
/// only.
fn open(path: &Path) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    o.open(path)
}

/// `FILE.1`.
pub fn previous_file(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".1");
    PathBuf::from(s)
}

impl Recorder {
    /// Queues one frame read from socket `stream`; never waits. A full queue drops it.
    pub fn frame(&self, stream: usize, text: &str) {
        let at_ms = crate::journal::now_ms();
        let len = text.len();
        let (text, cost) = if len > MAX_RECORDED_FRAME {
            (Err(len), 0)
        } else {
            if self.shared.queued.fetch_add(len, Ordering::Relaxed) + len > QUEUE_BYTES {
                self.shared.queued.fetch_sub(len, Ordering::Relaxed);
                self.dropped();
                return;
            }
            (Ok(text.to_owned()), len)
        };
        match self.tx.try_send(Entry {
            at_ms,
            stream,
            text,
        }) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.shared.queued.fetch_sub(cost, Ordering::Relaxed);
                self.dropped();
            }
        }
    }

    fn dropped(&self) {
        let total = self.shared.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(held) = self.shared.log_limit.allow("record_dropped") {
            tracing::warn!(
                dropped_total = total,
                held_back = held,
                "frame recording cannot keep up (the disk is slow): frames left out of the \
                 recording; the daemon itself is not affected"
            );
        }
    }
}

impl Recording {
    /// Writes what is queued, closes the file and returns the totals.
    pub fn finish(mut self) -> Totals {
        self.stop()
    }

    fn stop(&mut self) -> Totals {
        self.shared.closing.store(true, Ordering::Relaxed);
        let mut totals = match self.thread.take().map(JoinHandle::join) {
            Some(Ok(t)) => t,
            _ => Totals::default(),
        };
        totals.dropped = self.shared.dropped.load(Ordering::Relaxed);
        totals
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.stop();
        }
    }
}

struct Writer {
    path: PathBuf,
    max_bytes: u64,
    /// `None` after a failed rotation: reopened at the next line.
    out: Option<BufWriter<File>>,
    size: u64,
    totals: Totals,
    shared: Arc<Shared>,
}

impl Writer {
    fn run(mut self, rx: Receiver<Entry>) -> Totals {
        loop {
            let entry = match rx.try_recv() {
                Ok(e) => e,
                Err(TryRecvError::Disconnected) => break,
                // Nothing waiting: put what was written on disk, then wait.
                Err(TryRecvError::Empty) => {
                    self.flush();
                    match rx.recv_timeout(IDLE_POLL) {
                        Ok(e) => e,
                        Err(RecvTimeoutError::Disconnected) => break,
                        Err(RecvTimeoutError::Timeout) => {
                            if self.shared.closing.load(Ordering::Relaxed) {
                                break;
                            }
                            continue;
                        }
                    }
                }
            };
            if let Ok(t) = &entry.text {
                self.shared.queued.fetch_sub(t.len(), Ordering::Relaxed);
            }
            self.write(&line(&entry));
        }
        self.flush();
        tracing::info!(path = %self.path.display(), lines = self.totals.lines,
            dropped = self.shared.dropped.load(Ordering::Relaxed),
            rotations = self.totals.rotations, "frame recording stopped");
        self.totals
    }

    fn write(&mut self, line: &str) {
        let len = line.len() as u64;
        if self.size > 0 && self.size + len > self.max_bytes {
            self.rotate();
        }
        if self.out.is_none() {
            match open(&self.path) {
                Ok(f) => {
                    self.size = f.metadata().map_or(0, |m| m.len());
                    self.out = Some(BufWriter::new(f));
                }
                Err(e) => return self.failed("cannot open the recording file", &e),
            }
        }
        if let Some(out) = &mut self.out {
            match out.write_all(line.as_bytes()) {
                Ok(()) => {
                    self.size += len;
                    self.totals.lines += 1;
                }
                Err(e) => self.failed("cannot write the recording file", &e),
            }
        }
    }

    /// FILE -> FILE.1 (replacing the previous one), and a fresh FILE.
    fn rotate(&mut self) {
        self.flush();
        self.out = None;
        if let Err(e) = std::fs::rename(&self.path, previous_file(&self.path)) {
            return self.failed("cannot rotate the recording file", &e);
        }
        self.size = 0;
        self.totals.rotations += 1;
        tracing::info!(path = %self.path.display(), "recording file rotated");
    }

    fn flush(&mut self) {
        if let Some(out) = &mut self.out
            && let Err(e) = out.flush()
        {
            self.failed("cannot write the recording file", &e);
        }
    }

    fn failed(&mut self, what: &'static str, e: &io::Error) {
        self.totals.write_errors += 1;
        if let Some(held) = self.shared.log_limit.allow("record_write") {
            tracing::warn!(path = %self.path.display(), error = %e, held_back = held,
                "{what}: frames are left out of the recording");
        }
    }
}

/// The JSON line for one entry.
fn line(e: &Entry) -> String {
    let head = format!("{{\"at_ms\":{},\"stream\":{}", e.at_ms, e.stream);
    match &e.text {
        Err(len) => format!("{head},\"skipped_bytes\":{len}}}\n"),
        Ok(text) => {
            let frame = if serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok() {
                // Valid JSON holds line breaks only between tokens: spaces keep it one line.
                if text.contains(['\n', '\r']) {
                    text.replace(['\n', '\r'], " ")
                } else {
                    text.clone()
                }
            } else {
                serde_json::Value::String(text.clone()).to_string()
            };
            format!("{head},\"frame\":{frame}}}\n")
        }
    }
}

/// Parses a size such as `100MB`, `512KiB`, `1G` or `4096` (bytes). K, M and G are
/// powers of 1000, KiB, MiB and GiB powers of 1024.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size (e.g. 100MB, 512MiB, 1G)"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        u => {
            return Err(format!(
                "unknown size unit `{u}` in `{text}` (B, KB, MB, GB, KiB, MiB, GiB)"
            ));
        }
    };
    let bytes = number * factor as f64;
    if !(bytes >= 1.0 && bytes < u64::MAX as f64) {
        return Err(format!("`{text}` is not a usable size"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("100MB"), Ok(100_000_000));
        assert_eq!(parse_size("512KiB"), Ok(512 * 1024));
        assert_eq!(parse_size("1.5G"), Ok(1_500_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("0").is_err());
        assert!(parse_size("ten MB").is_err());
        assert!(parse_size("5 parsecs").is_err());
    }

    #[test]
    fn lines_are_single_json_lines() {
        let e = |text: Result<String, usize>| Entry {
            at_ms: 7,
            stream: 2,
            text,
        };
        let pretty = e(Ok("{\n  \"topicName\": \"channel.metadata\"\r\n}".into()));
        let raw = e(Ok("not json\nat all".into()));
        let big = e(Err(3 << 20));
        for (entry, frame) in [
            (pretty, serde_json::json!({"topicName": "channel.metadata"})),
            (raw, serde_json::json!("not json\nat all")),
        ] {
            let l = line(&entry);
            assert_eq!(l.matches('\n').count(), 1, "{l}");
            let v: serde_json::Value = serde_json::from_str(&l).unwrap();
            assert_eq!(
                v,
                serde_json::json!({"at_ms": 7, "stream": 2, "frame": frame})
            );
        }
        let v: serde_json::Value = serde_json::from_str(&line(&big)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"at_ms": 7, "stream": 2, "skipped_bytes": 3 << 20})
        );
    }

    #[test]
    fn rotates_keeping_one_previous_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("frames.jsonl");
        let (rec, recording) = start(&path, 200).unwrap();
        let frame =
            r#"{"topicName":"channel.metadata","eventBody":{"message":"WebSocket Heartbeat"}}"#;
        for _ in 0..10 {
            rec.frame(0, frame);
        }
        drop(rec);
        let totals = recording.finish();
        assert_eq!(totals.lines, 10);
        assert_eq!(totals.dropped, 0);
        assert!(totals.rotations >= 4, "{totals:?}");
        let now = std::fs::read_to_string(&path).unwrap();
        let before = std::fs::read_to_string(previous_file(&path)).unwrap();
        assert!(now.len() <= 200 && before.len() <= 200);
        assert_eq!(
            before.lines().count(),
            1,
            "one line of ~120 bytes fits in 200"
        );
        assert!(!dir.path().join("frames.jsonl.2").exists());
    }
}
