//! One channel's wanted topics ([`Slot`]), shared by the manager and the channel's
//! stream, and how a subscriptions answer settles the conversations it carried.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::WatchError;
use crate::genesys::api::ChannelTopic;
use crate::genesys::frames::{WATCH_SUFFIXES, watch_topics};

/// How long a close waiting on its confirming topic lets others join its request.
const URGENT_WINDOW: Duration = Duration::from_millis(20);

/// The subscription state of one watched conversation on its channel.
pub(super) enum ConvSub {
    /// Wanted; not yet known to be in the channel's server-side set.
    Pending {
        /// Since when it waits (the batch window runs from here).
        since: Instant,
        /// A close waits for it: flush after [`URGENT_WINDOW`].
        urgent: bool,
        /// Closes waiting for its topics to be live.
        waiters: Vec<oneshot::Sender<Result<(), WatchError>>>,
        /// It was live before (its channel was replaced): no catch-up is owed.
        was_live: bool,
    },
    /// In the channel's server-side set.
    Live,
    /// Genesys rejected its topics (a permission, say); not retried.
    Rejected(WatchError),
}

/// One channel's wanted topics, shared by the manager and the channel's stream.
pub struct Slot {
    pub(super) state: Mutex<SlotState>,
    /// The configured topics changed (a reload): the stream re-subscribes in place.
    static_changed: tokio::sync::Notify,
}

pub(super) struct SlotState {
    /// Configured topics (queues, users, flows) this channel carries.
    pub(super) static_topics: Vec<String>,
    /// Watched conversations placed on this channel.
    pub(super) convs: HashMap<Box<str>, ConvSub>,
    /// The channel whose server-side set matches `static_topics` and every `Live`
    /// conversation; `None` while the stream has no subscribed channel.
    pub(super) channel: Option<String>,
    /// Conversations were removed since the server-side set was last written; the
    /// next flush must `PUT` the remaining list.
    pub(super) stale_since: Option<Instant>,
    /// Counts removals, so a `PUT` in flight knows whether it wrote the latest set.
    pub(super) removals: u64,
}

/// What a stream's `PUT` of the whole set changed.
pub struct Synced {
    /// Conversations whose topics went live for the first time.
    pub newly_live: Vec<Box<str>>,
    /// Conversations whose topics came back `Rejected`.
    pub rejected: usize,
}

pub(super) fn lock(m: &Mutex<SlotState>) -> MutexGuard<'_, SlotState> {
    // The state stays consistent per operation; keep serving after a panic elsewhere.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Slot {
    /// A slot carrying `static_topics` and no conversation yet.
    pub fn new(static_topics: Vec<String>) -> Arc<Slot> {
        Arc::new(Slot {
            state: Mutex::new(SlotState {
                static_topics,
                convs: HashMap::new(),
                channel: None,
                stale_since: None,
                removals: 0,
            }),
            static_changed: tokio::sync::Notify::new(),
        })
    }

    /// Replaces the configured topics (a reload); returns whether they changed. The
    /// stream then writes the whole set on its channel, without reconnecting.
    pub fn set_static(&self, topics: Vec<String>) -> bool {
        let mut s = lock(&self.state);
        if s.static_topics == topics {
            return false;
        }
        s.static_topics = topics;
        drop(s);
        self.static_changed.notify_one();
        true
    }

    /// Resolves when the configured topics changed since the last call.
    pub async fn static_changed(&self) {
        self.static_changed.notified().await;
    }

    /// Every topic the channel should carry now, and the watched conversations among
    /// them, for the stream's `PUT`.
    pub fn snapshot(&self) -> (Vec<String>, Vec<Box<str>>, u64) {
        let s = lock(&self.state);
        let mut topics = s.static_topics.clone();
        let mut ids = Vec::with_capacity(s.convs.len());
        for (id, sub) in &s.convs {
            if !matches!(sub, ConvSub::Rejected(_)) {
                topics.extend(watch_topics(id));
                ids.push(id.clone());
            }
        }
        (topics, ids, s.removals)
    }

    /// The topics the server should hold now: configured ones and those of conversations
    /// whose subscription was confirmed (pending ones may not be there yet).
    pub fn expected_live(&self) -> Vec<String> {
        let s = lock(&self.state);
        let mut topics = s.static_topics.clone();
        for (id, sub) in &s.convs {
            if matches!(sub, ConvSub::Live) {
                topics.extend(watch_topics(id));
            }
        }
        topics
    }

    /// Number of configured topics.
    pub fn static_len(&self) -> usize {
        lock(&self.state).static_topics.len()
    }

    /// The stream's `PUT` of `snapshot` to `channel_id` succeeded with `answer`.
    pub fn synced(
        &self,
        channel_id: &str,
        ids: &[Box<str>],
        removals_at_snapshot: u64,
        answer: &[ChannelTopic],
    ) -> Synced {
        let rejected = rejected_conversations(answer);
        let mut s = lock(&self.state);
        s.channel = Some(channel_id.to_string());
        if s.removals == removals_at_snapshot {
            s.stale_since = None;
        }
        let mut out = Synced {
            newly_live: Vec::new(),
            rejected: 0,
        };
        for id in ids {
            if let Some(sub) = s.convs.get_mut(id) {
                let why = rejected.get(&**id);
                if settle(sub, why.map(String::as_str)).is_some() {
                    out.newly_live.push(id.clone());
                }
                if why.is_some() {
                    out.rejected += 1;
                }
            }
        }
        out
    }

    /// The stream lost its channel: whatever it carried must be subscribed again on the
    /// next one (the stream's `PUT` does that).
    pub fn lost_channel(&self) {
        let mut s = lock(&self.state);
        s.channel = None;
        s.stale_since = None;
        let now = Instant::now();
        for sub in s.convs.values_mut() {
            if matches!(sub, ConvSub::Live) {
                *sub = ConvSub::Pending {
                    since: now,
                    urgent: false,
                    waiters: Vec::new(),
                    was_live: true,
                };
            }
        }
    }

    /// Topics this channel should carry.
    pub(super) fn topic_count(s: &SlotState) -> usize {
        s.static_topics.len() + WATCH_SUFFIXES.len() * s.convs.len()
    }

    /// When this slot next needs a request, if ever.
    pub(super) fn due(
        &self,
        subscribe_window: Duration,
        unsubscribe_window: Duration,
    ) -> Option<Instant> {
        let s = lock(&self.state);
        s.channel.as_ref()?;
        let adds = s
            .convs
            .values()
            .filter_map(|sub| match sub {
                ConvSub::Pending { since, urgent, .. } => Some(
                    *since
                        + if *urgent {
                            URGENT_WINDOW
                        } else {
                            subscribe_window
                        },
                ),
                _ => None,
            })
            .min();
        let removal = s.stale_since.map(|t| t + unsubscribe_window);
        match (adds, removal) {
            (Some(a), Some(r)) => Some(a.min(r)),
            (a, r) => a.or(r),
        }
    }
}

/// Settles a pending conversation after a request that carried its topics; returns
/// `Some(())` when its topics went live for the first time.
pub(super) fn settle(sub: &mut ConvSub, rejected: Option<&str>) -> Option<()> {
    let ConvSub::Pending {
        waiters, was_live, ..
    } = sub
    else {
        return None;
    };
    let first = !*was_live;
    let waiters = std::mem::take(waiters);
    match rejected {
        Some(why) => {
            for w in waiters {
                let _ = w.send(Err(why.to_string()));
            }
            *sub = ConvSub::Rejected(why.to_string());
            None
        }
        None => {
            for w in waiters {
                let _ = w.send(Ok(()));
            }
            *sub = ConvSub::Live;
            first.then_some(())
        }
    }
}

/// Conversation id -> why its detail topics were rejected, from a subscriptions answer.
pub(super) fn rejected_conversations(answer: &[ChannelTopic]) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for t in answer {
        if t.state.as_deref() != Some("Rejected") {
            continue;
        }
        let lower = t.id.to_ascii_lowercase();
        if let Some(rest) = lower.strip_prefix("v2.detail.events.conversation.")
            && let Some((id, _)) = rest.split_once('.')
        {
            let why = t
                .rejection_reason
                .clone()
                .unwrap_or_else(|| "rejected".into());
            out.insert(id.to_string(), why);
        }
    }
    out
}
