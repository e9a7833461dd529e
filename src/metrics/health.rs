//! What `/healthz` and `/readyz` answer, and the families read from the same probes at
//! scrape time: the daemon writes [`Probes`] (the event loop's turns, its streams) and
//! the journal's writer [`JournalHealth`]; the endpoints only read them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::http::StatusCode;

use super::{
    JOURNAL_FAILING, LOOP_TURN_AGE, READY, STALL_AFTER, STREAMS_ALL_LIVE, TICK_EVERY, process,
};

/// Milliseconds on a process-wide monotonic clock (immune to wall-clock steps); never 0,
/// so 0 can mean "never".
fn mono_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// After a failed journal write, `/readyz` stays 503 until a later write succeeded and
/// none failed for this long. A disk that fails some writes and not others (a full
/// disk that frees a page now and then, a lock held on and off) must not look healthy
/// between two failures.
pub const JOURNAL_QUIET: Duration = Duration::from_secs(5);

/// Whether journal writes are failing, for `/readyz`: the journal's writer records the
/// result of every write, the endpoints read it. Cheap to share (`Arc`).
#[derive(Debug, Default)]
pub struct JournalHealth {
    /// Wall-clock ms since the Unix epoch when the current run of failures began
    /// (what the 503 says); 0 before the first failure.
    failing_since_ms: AtomicU64,
    /// Monotonic ms of the last failed write; 0: none yet.
    last_failure: AtomicU64,
    /// Monotonic ms of the last successful write; 0: none yet.
    last_success: AtomicU64,
}

impl JournalHealth {
    /// A journal none of whose writes failed yet.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Records one write's result.
    pub fn record(&self, ok: bool) {
        if ok {
            self.success();
        } else {
            self.failure();
        }
    }

    /// A write succeeded.
    pub fn success(&self) {
        self.last_success.store(mono_ms(), Ordering::Relaxed);
    }

    /// A write failed (or could not be handed to the writer).
    pub fn failure(&self) {
        let now = mono_ms();
        if self.failing_since_at(now).is_none() {
            let wall = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_millis() as u64);
            self.failing_since_ms.store(wall, Ordering::Relaxed);
        }
        self.last_failure.store(now, Ordering::Relaxed);
    }

    /// When the current run of failures began (wall-clock ms), or `None` when writes
    /// are not failing: none failed, or one succeeded after the last failure and none
    /// failed for [`JOURNAL_QUIET`].
    pub fn failing_since(&self) -> Option<u64> {
        self.failing_since_at(mono_ms())
    }

    fn failing_since_at(&self, now_ms: u64) -> Option<u64> {
        let failed = self.last_failure.load(Ordering::Relaxed);
        if failed == 0 {
            return None;
        }
        let recovered = self.last_success.load(Ordering::Relaxed) > failed
            && now_ms.saturating_sub(failed) >= JOURNAL_QUIET.as_millis() as u64;
        (!recovered).then(|| self.failing_since_ms.load(Ordering::Relaxed))
    }
}

/// What the health endpoints read; the daemon writes it. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Probes {
    /// When the event loop last turned, ms on a monotonic clock ([`Probes::tick`]).
    pub last_tick: Arc<AtomicU64>,
    /// Every configured stream is live (set when the daemon logs "ready", cleared when
    /// one of them goes down).
    pub ready: Arc<AtomicBool>,
    /// Whether journal writes are failing.
    pub journal: Arc<JournalHealth>,
    /// `[ha]`: this instance stands by (it takes no intake call, so a load balancer
    /// routing by `/readyz` sends calls to the acting one).
    pub standby: Arc<AtomicBool>,
}

impl Probes {
    /// Probes of a loop that turned just now and is not ready yet.
    pub fn new(journal: Arc<JournalHealth>) -> Self {
        Probes {
            last_tick: Arc::new(AtomicU64::new(mono_ms())),
            ready: Arc::new(AtomicBool::new(false)),
            journal,
            standby: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The event loop turned.
    pub fn tick(&self) {
        self.last_tick.store(mono_ms(), Ordering::Relaxed);
    }

    /// Whether every configured stream is live.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// `[ha]`: whether this instance stands by.
    pub fn set_standby(&self, standby: bool) {
        self.standby.store(standby, Ordering::Relaxed);
    }

    /// Milliseconds since the event loop last turned.
    fn loop_age_at(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.last_tick.load(Ordering::Relaxed))
    }

    pub(super) fn health(&self) -> (StatusCode, String) {
        self.health_at(mono_ms())
    }

    fn health_at(&self, now_ms: u64) -> (StatusCode, String) {
        let idle = self.loop_age_at(now_ms);
        if idle <= STALL_AFTER.as_millis() as u64 {
            (StatusCode::OK, "ok\n".into())
        } else {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("event loop stalled: no progress for {idle} ms\n"),
            )
        }
    }

    pub(super) fn readiness(&self) -> (StatusCode, String) {
        let mut not = Vec::new();
        if !self.ready.load(Ordering::Relaxed) {
            not.push("streams: not every configured stream is live".to_string());
        }
        if self.standby.load(Ordering::Relaxed) {
            not.push(
                "standby: another instance of the group acts (intake calls here are relayed to it)"
                    .to_string(),
            );
        }
        if let Some(since) = self.journal.failing_since() {
            let at = std::time::UNIX_EPOCH + Duration::from_millis(since);
            not.push(format!(
                "journal: writes failing since {}",
                humantime::format_rfc3339_millis(at)
            ));
        }
        if not.is_empty() {
            (StatusCode::OK, "ready\n".into())
        } else {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {}\n", not.join("; ")),
            )
        }
    }

    /// The families read from the probes at scrape time, in the text format.
    pub(super) fn render(&self, out: &mut String) {
        let age = self.loop_age_at(mono_ms()) as f64 / 1000.0;
        let ready = self.readiness().0 == StatusCode::OK;
        let streams = self.ready.load(Ordering::Relaxed);
        let journal = self.journal.failing_since().is_some();
        let flag = |b: bool| if b { 1.0 } else { 0.0 };
        let families = [
            (
                LOOP_TURN_AGE,
                format!(
                    "Seconds since the event loop last turned (it turns at least every {} s; \
                     /healthz fails past {} s, systemd's watchdog at WatchdogSec)",
                    TICK_EVERY.as_secs(),
                    STALL_AFTER.as_secs()
                ),
                age,
            ),
            (READY, "1 while /readyz answers 200".into(), flag(ready)),
            (
                STREAMS_ALL_LIVE,
                "1 while every configured stream and mirror has a live socket".into(),
                flag(streams),
            ),
            (
                JOURNAL_FAILING,
                format!(
                    "1 from a failed journal write until a later write succeeded and none \
                     failed for {} s",
                    JOURNAL_QUIET.as_secs()
                ),
                flag(journal),
            ),
        ];
        for (name, help, value) in families {
            process::family(out, name, &help, "gauge", value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_standby_is_healthy_but_not_ready() {
        let p = Probes::new(JournalHealth::new());
        p.set_ready(true);
        p.journal.success();
        p.set_standby(true);
        assert_eq!(p.health().0, StatusCode::OK);
        let (status, body) = p.readiness();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("standby: another instance"), "{body}");
        p.set_standby(false);
        assert_eq!(p.readiness().0, StatusCode::OK);
    }

    #[test]
    fn health_and_readiness_follow_the_probes() {
        let journal = JournalHealth::new();
        let p = Probes::new(Arc::clone(&journal));
        assert_eq!(p.health().0, StatusCode::OK);
        let (status, body) = p.readiness();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("streams"), "{body}");
        p.set_ready(true);
        journal.success();
        assert_eq!(p.readiness().0, StatusCode::OK);
        journal.failure();
        let (status, body) = p.readiness();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("journal: writes failing since 20"), "{body}");
        assert!(!body.contains("streams"), "{body}");
        // A loop that has not turned for longer than the limit is stalled.
        let limit = STALL_AFTER.as_millis() as u64;
        p.last_tick.store(1_000, Ordering::Relaxed);
        assert_eq!(p.health_at(1_000 + limit).0, StatusCode::OK);
        let (status, body) = p.health_at(1_001 + limit);
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("stalled"), "{body}");
        // A clock read before the tick is no stall.
        assert_eq!(p.health_at(0).0, StatusCode::OK);
        p.tick();
        assert_eq!(p.health().0, StatusCode::OK);
    }

    #[test]
    fn journal_failures_hold_until_a_success_and_a_quiet_spell() {
        let h = JournalHealth::default();
        let quiet = JOURNAL_QUIET.as_millis() as u64;
        assert_eq!(h.failing_since_at(1_000), None, "no write failed yet");
        h.last_success.store(1_000, Ordering::Relaxed);
        assert_eq!(h.failing_since_at(1_000_000), None);
        // A failure at t=2 s begins a run of failures.
        h.failing_since_ms.store(42, Ordering::Relaxed);
        h.last_failure.store(2_000, Ordering::Relaxed);
        assert_eq!(h.failing_since_at(2_000), Some(42));
        // No success since: still failing, however long ago the failure was.
        assert_eq!(h.failing_since_at(2_000 + 10 * quiet), Some(42));
        // A success right after it does not end the run before the quiet spell...
        h.last_success.store(2_100, Ordering::Relaxed);
        assert_eq!(h.failing_since_at(2_100), Some(42));
        assert_eq!(h.failing_since_at(2_000 + quiet - 1), Some(42));
        // ...nor when writes keep failing in between (successes and failures alternate).
        h.last_failure.store(2_200, Ordering::Relaxed);
        assert_eq!(h.failing_since_at(2_100 + quiet), Some(42));
        h.last_success.store(2_300, Ordering::Relaxed);
        assert_eq!(
            h.failing_since_at(2_200 + quiet),
            None,
            "quiet since the last failure"
        );

        // The live clock: a new failure starts a new run with a fresh time.
        let h = JournalHealth::default();
        h.failure();
        let since = h.failing_since().expect("failing");
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        assert!(
            since <= now_ms && since + 60_000 > now_ms,
            "{since} vs {now_ms}"
        );
        h.success();
        assert!(h.failing_since().is_some(), "a success alone is not enough");
    }

    #[test]
    fn probes_render_as_gauges_with_help() {
        let p = Probes::new(JournalHealth::new());
        let mut out = String::new();
        p.render(&mut out);
        for (name, value) in [
            (READY, "0"),
            (STREAMS_ALL_LIVE, "0"),
            (JOURNAL_FAILING, "0"),
        ] {
            assert!(out.contains(&format!("# HELP {name} ")), "{out}");
            assert!(out.contains(&format!("# TYPE {name} gauge\n")), "{out}");
            assert!(
                out.contains(&format!("\n{name} {value}\n")),
                "{name}: {out}"
            );
        }
        p.set_ready(true);
        p.journal.success();
        let mut out = String::new();
        p.render(&mut out);
        assert!(out.contains(&format!("\n{READY} 1\n")), "{out}");
        assert!(out.contains(&format!("\n{STREAMS_ALL_LIVE} 1\n")), "{out}");
        let age: f64 = out
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{LOOP_TURN_AGE} ")))
            .and_then(|v| v.parse().ok())
            .expect("the loop's age");
        assert!((0.0..5.0).contains(&age), "{age}");
    }
}
