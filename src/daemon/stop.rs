//! The end of a run: every step bounded, so the stop signal's bound holds whatever
//! Genesys, the disk or the feed endpoint do; then the summary.

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Summary;
use crate::config::Config;
use crate::journal::Journal;
use crate::telemetry::Stats;

/// The outcome feed's task (delivers from the journal's outbox), when `[feed]` is on.
pub(super) struct FeedTask {
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl FeedTask {
    /// Starts the feed on its own task when the config has a `[feed]`.
    pub(super) fn start(
        config: &Config,
        journal: &Journal,
        http: &reqwest::Client,
        token: Option<secrecy::SecretString>,
    ) -> FeedTask {
        let stop = CancellationToken::new();
        let task = config.feed.as_ref().map(|f| {
            tracing::info!(
                url = f.url.as_ref().map(|u| u.as_str()),
                file = f.file.as_ref().map(|p| p.display().to_string()),
                "outcome feed on"
            );
            tokio::spawn(
                crate::feed::Feed {
                    journal: journal.clone(),
                    http: http.clone(),
                    url: f.url.clone(),
                    token,
                    file: f.file.clone(),
                    timeout: f.timeout,
                }
                .run(stop.clone()),
            )
        });
        FeedTask { stop, task }
    }

    /// Stops it; outcomes not yet delivered stay in the outbox for the next start.
    /// Waits until `by` at most (for ever with `None`).
    pub(super) async fn stop(self, by: Option<Instant>) {
        self.stop.cancel();
        let Some(t) = self.task else { return };
        match by {
            None => {
                let _ = t.await;
            }
            Some(by) => {
                if tokio::time::timeout_at(by, t).await.is_err() {
                    tracing::warn!(
                        "outcome feed did not stop in time; what it had not sent stays queued"
                    );
                }
            }
        }
    }
}

/// Waits for the streams (already cancelled) until `by`; past it they are left.
pub(super) async fn streams(streams: &TaskTracker, by: Instant) {
    // Closed only now: the subscription manager may open streams while running.
    streams.close();
    if tokio::time::timeout_at(by, streams.wait()).await.is_err() {
        tracing::warn!(
            streams = streams.len(),
            "streams did not stop in time; leaving them (the process ends)"
        );
    }
}

/// The journal's last writes (deferred decisions, the last outcomes), then the feed,
/// each until `by` at most.
pub(super) async fn journal_and_feed(journal: &Journal, feed: FeedTask, by: Instant) {
    match tokio::time::timeout_at(by, journal.flush()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "journal: could not store the last records"),
        Err(_) => tracing::error!(
            "journal: the last records were not stored within the stop bound; the next \
             start resumes from what is on disk"
        ),
    }
    feed.stop(Some(by)).await;
}

/// The run's counts, logged once as `stopped`.
pub(super) fn summary(stats: &Stats, abandoned: usize) -> Summary {
    let summary = Summary {
        frames: stats.frames.get(),
        events: stats.conversation_events.get(),
        decisions: stats.decisions.get(),
        abandoned,
        discovered: stats.discovered.get(),
        intake_calls: stats.intake_calls.get(),
        catchup_reads: stats.catchup_reads.get(),
        resync_reads: stats.resync_reads.get(),
        late_events: stats.late_events.get(),
    };
    tracing::info!(
        frames = summary.frames,
        malformed_frames = stats.malformed_frames.get(),
        unknown_topics = stats.unknown_topics.get(),
        events = summary.events,
        decisions = summary.decisions,
        discovered = summary.discovered,
        intake_calls = summary.intake_calls,
        catchup_reads = summary.catchup_reads,
        resync_reads = summary.resync_reads,
        late_events = summary.late_events,
        rotations = stats.rotations.get(),
        topics_found_dropped = stats.dropped_topics.get(),
        binary_frames = stats.binary_frames.get(),
        oversized_frames = stats.oversized_frames.get(),
        abandoned,
        "stopped"
    );
    summary
}
