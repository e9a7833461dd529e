//! The event loop's stream gaps: what a gap may have missed, read back by REST
//! (closes in flight first), and the one line that says so.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{EventLoop, Notice, RESYNC_CAP, RESYNC_CONCURRENCY};
use crate::daemon::health::Health;
use crate::daemon::read::{Unread, read_checked};
use crate::genesys::budget::Priority;

impl EventLoop {
    /// A stream missed events for `gap`: read back what it may have missed, in order of
    /// urgency, at most [`RESYNC_CAP`] conversations per gap.
    ///
    /// What a stream missed depends on what it carries. Configured topics (queues,
    /// users, flow metrics) missed nothing if the stream's mirror was up for the whole
    /// gap; otherwise every tracked conversation may have changed, and conversations that
    /// started in the gap are listed from the watched queues and flows (the recovery of a
    /// blind window, [`super::recovery`]). A gap of topics the server dropped without a
    /// word (`silent`) is never taken as covered: a server that drops one channel's
    /// topics silently may have dropped its twin's too, and nothing says otherwise until
    /// the twin's own check. Per-conversation
    /// topics are held once, so a primary stream's gap always reads the watched
    /// conversations. Order: closes in flight (their confirmation may have been pushed
    /// in the gap), then open conversations no rule has decided on (their intent may
    /// have been), then the other open ones (their end may have been), each group most
    /// recently active first.
    pub fn on_gap(&mut self, stream: usize, gap: Duration, reason: &'static str, silent: bool) {
        let now = Instant::now();
        let since = now.checked_sub(gap).unwrap_or(now);
        let configured = self.health.carries_configured(stream);
        let covered_by = if configured && !silent {
            self.health.covered_by(stream, since)
        } else {
            None
        };
        let configured_missed = configured && covered_by.is_none();
        let watched_missed = !Health::is_mirror(stream) && self.subs.enabled();
        let (wanted, capped) = self.resync_list(configured_missed, watched_missed);
        let recover = configured_missed;
        log_gap(
            stream,
            reason,
            gap,
            covered_by,
            wanted.len(),
            recover,
            capped,
        );
        if recover {
            self.recovery.trigger(reason, Some(gap));
        }
        self.resync(wanted);
    }

    /// What a gap's resync reads: the closes in flight, then the open conversations by
    /// urgency (only the watched ones when the configured topics missed nothing), none
    /// twice nor already being read, at most [`RESYNC_CAP`]; and whether the cap left
    /// some out.
    fn resync_list(&self, configured_missed: bool, watched_missed: bool) -> (Vec<Box<str>>, bool) {
        let watched_only = !configured_missed;
        let mut wanted: Vec<Box<str>> = Vec::new();
        if configured_missed || watched_missed {
            wanted = self.waiters.ids();
            if watched_only {
                wanted.retain(|id| self.store.with(id, |c| c.is_watched()) == Some(true));
            }
            wanted.extend(self.store.open_by_priority(RESYNC_CAP + 1, watched_only));
        }
        let mut seen = HashSet::new();
        wanted.retain(|id| seen.insert(id.clone()) && !self.resyncing.contains(id));
        let capped = wanted.len() > RESYNC_CAP;
        wanted.truncate(RESYNC_CAP);
        (wanted, capped)
    }

    /// Reads `wanted` in a task of its own, [`RESYNC_CONCURRENCY`] at once: each read
    /// comes back as an event, each failure as a [`Notice`].
    fn resync(&mut self, wanted: Vec<Box<str>>) {
        if wanted.is_empty() {
            return;
        }
        for id in &wanted {
            self.resyncing.insert(id.clone());
        }
        self.stats.resync_reads.add(wanted.len() as u64);
        let api = Arc::clone(&self.api);
        let wanted_attrs = self.wanted.get();
        let reads = self.reads.clone();
        let notices = self.notices.clone();
        tokio::spawn(async move {
            use futures_util::StreamExt as _;
            futures_util::stream::iter(wanted)
                .for_each_concurrent(RESYNC_CONCURRENCY, |id| {
                    let api = Arc::clone(&api);
                    let wanted_attrs = Arc::clone(&wanted_attrs);
                    let reads = reads.clone();
                    let notices = notices.clone();
                    async move {
                        match read_checked(Priority::Read, &api, &id, &wanted_attrs, "resync").await
                        {
                            Ok(ev) => {
                                let _ = reads.send(ev).await;
                            }
                            Err(unread) => {
                                let not_found = unread == Unread::NotFound;
                                let _ = notices.send(Notice::ReadFailed { id, not_found });
                            }
                        }
                    }
                })
                .await;
        });
    }
}

/// One line per gap: what happened, how long, and what is done about it (`reads`
/// conversations read back, `recover` a listing of the watched queues and flows).
fn log_gap(
    stream: usize,
    reason: &'static str,
    gap: Duration,
    covered_by: Option<usize>,
    reads: usize,
    recover: bool,
    capped: bool,
) {
    if capped {
        tracing::warn!(
            stream = %crate::genesys::StreamName(stream),
            reason,
            gap_ms = gap.as_millis() as u64,
            covered_by_stream = covered_by.map(|c| tracing::field::display(crate::genesys::StreamName(c))),
            reads,
            recover_listing = recover,
            cap = RESYNC_CAP,
            "stream gap: events pushed meanwhile are lost; resyncing by REST reads, capped \
             (the least recently active open conversations are not read)"
        );
    } else if recover || reads > 0 {
        tracing::warn!(
            stream = %crate::genesys::StreamName(stream),
            reason,
            gap_ms = gap.as_millis() as u64,
            covered_by_stream = covered_by.map(|c| tracing::field::display(crate::genesys::StreamName(c))),
            reads,
            recover_listing = recover,
            "stream gap: events pushed meanwhile are lost; resyncing by REST reads"
        );
    } else {
        tracing::info!(
            stream = %crate::genesys::StreamName(stream),
            reason,
            gap_ms = gap.as_millis() as u64,
            covered_by_stream = covered_by.map(|c| tracing::field::display(crate::genesys::StreamName(c))),
            "stream gap covered by the mirror: nothing missed, nothing to read"
        );
    }
}
