//! What systemd hears (`Type=notify`): `READY=1` once every configured stream is live,
//! `WATCHDOG=1` while the event loop makes progress (it is sent from the loop itself,
//! so a wedged loop stops it and systemd restarts the service), `STATUS=` with the
//! connection state and counts, `RELOADING=1` then `READY=1` around a reload, and
//! `STOPPING=1`. Nothing is sent when not under systemd (no `NOTIFY_SOCKET`).

use std::time::Duration;

use sd_notify::NotifyState;

/// The daemon's link to systemd.
pub(crate) struct Notifier {
    enabled: bool,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// `enabled`: talk to systemd at all (the CLI's `run`; not the demo or tests unless
    /// they ask).
    pub(crate) fn new(enabled: bool) -> Self {
        let mut usec = 0u64;
        let watchdog = (enabled && sd_notify::watchdog_enabled(false, &mut usec))
            .then(|| Duration::from_micros(usec));
        // For the "watchdog near" alert: how long a stall may last before systemd acts.
        crate::metrics::set_watchdog_timeout(watchdog);
        Notifier { enabled, watchdog }
    }

    /// How often the loop must say it is alive: half of `WatchdogSec`.
    pub(crate) fn watchdog_every(&self) -> Option<Duration> {
        self.watchdog
            .map(|w| (w / 2).max(Duration::from_millis(10)))
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        if self.enabled
            && let Err(e) = sd_notify::notify(false, states)
        {
            tracing::debug!(error = %e, "sd_notify failed");
        }
    }

    pub(crate) fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    pub(crate) fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }

    pub(crate) fn watchdog(&self) {
        self.send(&[NotifyState::Watchdog]);
    }

    pub(crate) fn reloading(&self) {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[NotifyState::Reloading, now]),
            Err(_) => self.send(&[NotifyState::Reloading]),
        }
    }

    pub(crate) fn stopping(&self, status: &str) {
        self.send(&[NotifyState::Stopping, NotifyState::Status(status)]);
    }
}
