//! `[stream]`: the topics to watch and the stream's timings and switches.

use super::*;

/// The keys `[stream]` accepts.
const STREAM_KEYS: &[&str] = &[
    "queues",
    "users",
    "flows",
    "check_topics",
    "subscribe_window",
    "unsubscribe_window",
    "catchup_after",
    "heartbeat_timeout",
    "ping_after",
    "backoff_min",
    "backoff_max",
    "healthy_after",
    "verify_every",
    "mirror",
    "discover_after_gap",
    "recover_queues",
    "recover_max_reads",
    "silence_check",
];

impl Checker<'_> {
    /// `[stream]`, its keys read in turn; those checked against one another (the
    /// channels the topics need, the heartbeat, the backoff, the catch-up) by functions
    /// of their own.
    pub(super) fn stream(&mut self, root: &dyn TableLike, intake: bool) -> Option<StreamConfig> {
        let Some((t, here)) = self.section(root, "stream") else {
            self.at(
                None,
                "missing section [stream] (queues and/or users to watch)".into(),
            );
            return None;
        };
        self.unknown_keys(t, "[stream]", STREAM_KEYS);
        let queues = self.id_list(t, "queues");
        let users = self.id_list(t, "users");
        let flows = self.id_list(t, "flows");
        if queues.is_empty() && users.is_empty() && flows.is_empty() && !intake {
            self.at(
                here.clone(),
                "[stream] watches nothing: list at least one queue id in `queues`, user id in \
                 `users` or flow id in `flows`, or enable [intake]"
                    .into(),
            );
        }
        let topics = queues.len() + users.len() + flows.len();
        let mirror = self.bool(t, "mirror").unwrap_or(true);
        self.check_channels(here, topics, mirror);
        let discover_after_gap = self.bool(t, "discover_after_gap").unwrap_or(true);
        let recover_queues = self.bool(t, "recover_queues").unwrap_or(true);
        let recover_max_reads = self
            .int_in(t, "recover_max_reads", 1..=100_000)
            .map_or(500, |n| n as usize);
        let silence_check = self
            .duration(t, "silence_check")
            .unwrap_or(Duration::from_secs(10));
        let (heartbeat_timeout, ping_after) = self.heartbeat(t);
        let (backoff_min, backoff_max) = self.backoff(t);
        let healthy_after = self
            .duration(t, "healthy_after")
            .unwrap_or(Duration::from_secs(60));
        let check_topics = self.bool(t, "check_topics").unwrap_or(true);
        let subscribe_window = self
            .duration(t, "subscribe_window")
            .unwrap_or(Duration::from_secs(1));
        let unsubscribe_window = self
            .duration(t, "unsubscribe_window")
            .unwrap_or(Duration::from_secs(10));
        let catchup_after = self.catchup_after(t, subscribe_window);
        let verify_every = self
            .duration(t, "verify_every")
            .unwrap_or(Duration::from_secs(60));
        Some(StreamConfig {
            recover_queues,
            recover_max_reads,
            silence_check,
            verify_every,
            mirror,
            discover_after_gap,
            queues,
            users,
            flows,
            check_topics,
            subscribe_window,
            unsubscribe_window,
            catchup_after,
            heartbeat_timeout,
            ping_after,
            backoff_min,
            backoff_max,
            healthy_after,
        })
    }

    /// Whether `topics` (on two sets of channels when `mirror`) leave room for the
    /// per-conversation topics within the channels one OAuth client may hold.
    fn check_channels(&mut self, here: Option<Range<usize>>, topics: usize, mirror: bool) {
        let copies = if mirror { 2 } else { 1 };
        // Each copy needs its channels, and per-conversation topics need at least one more.
        if topics.div_ceil(TOPICS_PER_CHANNEL) * copies >= MAX_CHANNELS {
            self.at(
                here,
                format!(
                    "{topics} topics{} need {} channels of {TOPICS_PER_CHANNEL} topics, leaving none \
                     of the {MAX_CHANNELS} one OAuth client may hold for per-conversation topics{}",
                    if mirror { " on two mirrored sets of channels" } else { "" },
                    topics.div_ceil(TOPICS_PER_CHANNEL) * copies,
                    if mirror { "; set `mirror = false` or watch fewer" } else { "" }
                ),
            );
        }
    }

    /// `heartbeat_timeout` and `ping_after`, the ping before the timeout.
    fn heartbeat(&mut self, t: &dyn TableLike) -> (Duration, Duration) {
        // Genesys sends a heartbeat every 30 s: ping after 35 s of silence and give the
        // socket up after 45 s, so a dead socket is replaced within about 45 s.
        let heartbeat_timeout = self
            .duration(t, "heartbeat_timeout")
            .unwrap_or(Duration::from_secs(45));
        let ping_after = self.duration(t, "ping_after").unwrap_or(
            heartbeat_timeout
                .saturating_sub(Duration::from_secs(10))
                .max(heartbeat_timeout / 2),
        );
        if ping_after >= heartbeat_timeout {
            let span = t.get("ping_after").and_then(Item::span);
            self.at(
                span,
                "`ping_after` must be shorter than `heartbeat_timeout`".into(),
            );
        }
        (heartbeat_timeout, ping_after)
    }

    /// `backoff_min` and `backoff_max`, in that order.
    fn backoff(&mut self, t: &dyn TableLike) -> (Duration, Duration) {
        let backoff_min = self
            .duration(t, "backoff_min")
            .unwrap_or(Duration::from_secs(1));
        let backoff_max = self
            .duration(t, "backoff_max")
            .unwrap_or(Duration::from_secs(60));
        if backoff_min > backoff_max {
            let span = t.get("backoff_min").and_then(Item::span);
            self.at(span, "`backoff_min` must not exceed `backoff_max`".into());
        }
        (backoff_min, backoff_max)
    }

    /// `catchup_after`, by default half as long again as `subscribe_window`.
    fn catchup_after(&mut self, t: &dyn TableLike, subscribe_window: Duration) -> Duration {
        // "0s" is allowed here: read every watched conversation once. By default a
        // conversation whose topics took half as long again as the batch window (a failed
        // or slow subscribe) is read.
        if t.get("catchup_after").and_then(Item::as_str) == Some("0s") {
            Duration::ZERO
        } else {
            self.duration(t, "catchup_after")
                .unwrap_or(subscribe_window * 3 / 2)
        }
    }
}
