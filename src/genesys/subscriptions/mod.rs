//! Which channel carries which topic, and the per-conversation subscriptions of the bot
//! phase, added and removed in batches.
//!
//! A bot-phase conversation is visible only through its own detail-event topics
//! (`v2.detail.events.conversation.{id}.attributes`, `.customer.end`, `.flow.end`), so
//! each watched conversation costs three topic slots (1,000 per channel, 20 channels
//! per OAuth client) and REST calls. To keep that cost low the [`Manager`] gathers
//! conversations to add for `subscribe_window` into one `POST .../subscriptions` per
//! channel, and conversations to remove for `unsubscribe_window` into one `PUT` of the
//! remaining list (there is no per-topic delete); a flush that has both uses the `PUT`.
//! A close waiting for its confirming topic ([`Subscriptions::ensure`]) cuts the
//! window short.
//!
//! Each channel's desired topic set lives in a [`Slot`] shared with that channel's
//! [`super::stream::ChannelStream`]: when the stream has to make a new channel, its
//! `PUT` carries the slot's whole set, per-conversation topics included, so a replaced
//! channel keeps every watched conversation.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::api::{ApiClient, ApiError, ChannelTopic};
use super::frames::{WATCH_SUFFIXES, watch_topics};
use crate::config::TOPICS_PER_CHANNEL;

/// How long a close waiting on its confirming topic lets others join its request.
const URGENT_WINDOW: Duration = Duration::from_millis(20);
/// After a failed add or removal, wait this long before trying again.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(2);

/// Why a conversation cannot be watched.
pub type WatchError = String;

/// The subscription state of one watched conversation on its channel.
enum ConvSub {
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
    state: Mutex<SlotState>,
    /// The configured topics changed (a reload): the stream re-subscribes in place.
    static_changed: tokio::sync::Notify,
}

struct SlotState {
    /// Configured topics (queues, users, flows) this channel carries.
    static_topics: Vec<String>,
    /// Watched conversations placed on this channel.
    convs: HashMap<Box<str>, ConvSub>,
    /// The channel whose server-side set matches `static_topics` and every `Live`
    /// conversation; `None` while the stream has no subscribed channel.
    channel: Option<String>,
    /// Conversations were removed since the server-side set was last written; the
    /// next flush must `PUT` the remaining list.
    stale_since: Option<Instant>,
    /// Counts removals, so a `PUT` in flight knows whether it wrote the latest set.
    removals: u64,
}

/// What a stream's `PUT` of the whole set changed.
pub struct Synced {
    /// Conversations whose topics went live for the first time.
    pub newly_live: Vec<Box<str>>,
    /// Conversations whose topics came back `Rejected`.
    pub rejected: usize,
}

fn lock(m: &Mutex<SlotState>) -> MutexGuard<'_, SlotState> {
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
    fn topic_count(s: &SlotState) -> usize {
        s.static_topics.len() + WATCH_SUFFIXES.len() * s.convs.len()
    }

    /// When this slot next needs a request, if ever.
    fn due(&self, subscribe_window: Duration, unsubscribe_window: Duration) -> Option<Instant> {
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
fn settle(sub: &mut ConvSub, rejected: Option<&str>) -> Option<()> {
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
fn rejected_conversations(answer: &[ChannelTopic]) -> HashMap<String, String> {
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

/// A topic name with its id segments replaced by `{id}`, to group log lines by family.
pub fn topic_family(topic: &str) -> String {
    topic
        .split('.')
        .map(|seg| {
            let idish = seg.len() >= 8
                && seg.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
                && seg.chars().any(|c| c.is_ascii_digit());
            if idish { "{id}" } else { seg }
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// Logs the rejected topics of a subscriptions answer, one line per topic family
/// (a thousand rejected conversation topics are one problem, not a thousand).
pub fn log_rejections(stream: usize, channel_id: &str, answer: &[ChannelTopic]) {
    let mut by_family: HashMap<String, (usize, &ChannelTopic)> = HashMap::new();
    for t in answer
        .iter()
        .filter(|t| t.state.as_deref() == Some("Rejected"))
    {
        by_family.entry(topic_family(&t.id)).or_insert((0, t)).0 += 1;
    }
    static SAID: std::sync::OnceLock<std::sync::Mutex<std::collections::HashSet<String>>> =
        std::sync::OnceLock::new();
    let said = SAID.get_or_init(Default::default);
    for (family, (count, example)) in by_family {
        // Once per family for the life of the process: re-subscribing (rotations,
        // checks) must not repeat the same error every time.
        let first = said
            .lock()
            .map(|mut s| s.insert(family.clone()))
            .unwrap_or(true);
        if !first {
            tracing::debug!(stream = %crate::genesys::StreamName(stream), channel_id, topic_family = %family, topics = count,
                "topic subscription rejected (said before)");
            continue;
        }
        tracing::error!(
            stream = %crate::genesys::StreamName(stream),
            channel_id,
            topic_family = %family,
            topics = count,
            example = %example.id,
            rejection_reason = example.rejection_reason.as_deref(),
            missing_permissions = ?example.missing_permissions,
            "topic subscription rejected"
        );
    }
}

enum Cmd {
    Watch {
        id: Box<str>,
        urgent: bool,
        done: Option<oneshot::Sender<Result<(), WatchError>>>,
    },
    Unwatch {
        id: Box<str>,
    },
}

/// Cheap handle the event loop and the closer use to watch conversations.
#[derive(Clone)]
pub struct Subscriptions {
    tx: Option<mpsc::UnboundedSender<Cmd>>,
    disabled_reason: Option<Arc<str>>,
}

impl Subscriptions {
    /// A handle that watches nothing, saying why (detail topics unusable, say).
    pub fn disabled(reason: &str) -> Self {
        Subscriptions {
            tx: None,
            disabled_reason: Some(reason.into()),
        }
    }

    /// Why per-conversation topics cannot be used, when they cannot.
    pub fn disabled_reason(&self) -> Option<&str> {
        self.disabled_reason.as_deref()
    }

    /// Whether per-conversation topics can be used at all.
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Starts watching `id` (batched, no waiting). Event loop only.
    pub fn watch(&self, id: &str) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Cmd::Watch {
                id: id.into(),
                urgent: false,
                done: None,
            });
        }
    }

    /// Stops watching `id` (its topics go in the next removal batch).
    pub fn unwatch(&self, id: &str) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Cmd::Unwatch { id: id.into() });
        }
    }

    /// Waits until `id`'s topics are live on a channel (subscribing now if needed),
    /// at most `within`. Used by a close before it sends the disconnect.
    pub async fn ensure(&self, id: &str, within: Duration) -> Result<(), WatchError> {
        let Some(tx) = &self.tx else {
            return Err(self
                .disabled_reason
                .as_deref()
                .unwrap_or("per-conversation topics are off")
                .to_string());
        };
        let (done, rx) = oneshot::channel();
        tx.send(Cmd::Watch {
            id: id.into(),
            urgent: true,
            done: Some(done),
        })
        .map_err(|_| "the subscription manager has stopped".to_string())?;
        match tokio::time::timeout(within, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err("the subscription manager has stopped".into()),
            Err(_) => Err(format!("topics not live within {} ms", within.as_millis())),
        }
    }
}

/// Starts a stream for a new slot: `(stream index, slot)`.
pub type SpawnStream = Box<dyn Fn(usize, Arc<Slot>) + Send + Sync>;

/// What the manager tells the event loop.
pub type LiveSender = mpsc::Sender<Vec<Box<str>>>;

/// Places watched conversations on channels and batches their subscription requests.
pub struct Manager {
    /// One slot per channel stream, by stream index.
    pub slots: Vec<Arc<Slot>>,
    /// REST client.
    pub api: Arc<ApiClient>,
    /// Batch window for additions.
    pub subscribe_window: Duration,
    /// Batch window for removals.
    pub unsubscribe_window: Duration,
    /// Most channels the manager's slots may use (the OAuth client's 20, less the
    /// mirror's).
    pub max_channels: usize,
    /// Starts the stream of a slot the manager adds.
    pub spawn: SpawnStream,
    /// Conversations whose topics went live for the first time.
    pub live: LiveSender,
    /// Stop.
    pub cancel: CancellationToken,
}

impl Manager {
    /// Starts the manager; returns the handle to it.
    pub fn start(self) -> Subscriptions {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(self.run(rx));
        Subscriptions {
            tx: Some(tx),
            disabled_reason: None,
        }
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Cmd>) {
        // Conversation -> slot index.
        let mut placed: HashMap<Box<str>, usize> = HashMap::new();
        let mut full_warned = false;
        loop {
            crate::metrics::set_watched_topics(placed.len() * WATCH_SUFFIXES.len());
            let due = self
                .slots
                .iter()
                .filter_map(|s| s.due(self.subscribe_window, self.unsubscribe_window))
                .min();
            // Slots without a channel yet are retried when the stream syncs; poll them.
            let wake = due.unwrap_or_else(|| Instant::now() + Duration::from_millis(250));
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                cmd = rx.recv() => match cmd {
                    None => return,
                    Some(Cmd::Watch { id, urgent, done }) => {
                        self.watch(&mut placed, id, urgent, done, &mut full_warned);
                    }
                    Some(Cmd::Unwatch { id }) => {
                        if let Some(i) = placed.remove(&id) {
                            let mut s = lock(&self.slots[i].state);
                            if let Some(sub) = s.convs.remove(&id) {
                                if let ConvSub::Pending { waiters, .. } = sub {
                                    for w in waiters {
                                        let _ = w.send(Err("no longer watched".into()));
                                    }
                                }
                                s.removals += 1;
                                if s.stale_since.is_none() {
                                    s.stale_since = Some(Instant::now());
                                }
                            }
                        }
                    }
                },
                _ = tokio::time::sleep_until(wake) => {
                    let now = Instant::now();
                    for i in 0..self.slots.len() {
                        let slot = Arc::clone(&self.slots[i]);
                        if slot
                            .due(self.subscribe_window, self.unsubscribe_window)
                            .is_some_and(|d| d <= now)
                        {
                            self.flush(i, &slot).await;
                        }
                    }
                }
            }
        }
    }

    fn watch(
        &mut self,
        placed: &mut HashMap<Box<str>, usize>,
        id: Box<str>,
        urgent: bool,
        done: Option<oneshot::Sender<Result<(), WatchError>>>,
        full_warned: &mut bool,
    ) {
        if let Some(&i) = placed.get(&id) {
            let mut s = lock(&self.slots[i].state);
            match s.convs.get_mut(&id) {
                Some(ConvSub::Live) => {
                    if let Some(d) = done {
                        let _ = d.send(Ok(()));
                    }
                }
                Some(ConvSub::Rejected(why)) => {
                    if let Some(d) = done {
                        let _ = d.send(Err(why.clone()));
                    }
                }
                Some(ConvSub::Pending {
                    urgent: u, waiters, ..
                }) => {
                    *u |= urgent;
                    waiters.extend(done);
                }
                None => {}
            }
            return;
        }
        let need = WATCH_SUFFIXES.len();
        let room = self
            .slots
            .iter()
            .position(|s| Slot::topic_count(&lock(&s.state)) + need <= TOPICS_PER_CHANNEL);
        let i = match room {
            Some(i) => i,
            None if self.slots.len() < self.max_channels => {
                let slot = Slot::new(Vec::new());
                let i = self.slots.len();
                self.slots.push(Arc::clone(&slot));
                tracing::info!(
                    stream = %crate::genesys::StreamName(i),
                    "every channel is full of topics; opening another for per-conversation topics"
                );
                (self.spawn)(i, slot);
                i
            }
            None => {
                if !*full_warned {
                    *full_warned = true;
                    tracing::error!(
                        channels = self.max_channels,
                        topics_per_channel = TOPICS_PER_CHANNEL,
                        "no room for more per-conversation topics: every channel is full; \
                         bot-phase conversations are not watched until some close"
                    );
                }
                if let Some(d) = done {
                    let _ = d.send(Err("every channel is full".into()));
                }
                return;
            }
        };
        *full_warned = false;
        lock(&self.slots[i].state).convs.insert(
            id.clone(),
            ConvSub::Pending {
                since: Instant::now(),
                urgent,
                waiters: done.into_iter().collect(),
                was_live: false,
            },
        );
        placed.insert(id, i);
    }

    /// One request for one channel: `POST` of the pending additions, or `PUT` of the
    /// whole set when removals are pending too.
    async fn flush(&self, index: usize, slot: &Slot) {
        let (channel, topics, ids, put, removals) = {
            let s = lock(&slot.state);
            let Some(channel) = s.channel.clone() else {
                return;
            };
            let pending: Vec<Box<str>> = s
                .convs
                .iter()
                .filter(|(_, sub)| matches!(sub, ConvSub::Pending { .. }))
                .map(|(id, _)| id.clone())
                .collect();
            let put = s.stale_since.is_some();
            let topics: Vec<String> = if put {
                let mut t = s.static_topics.clone();
                for (id, sub) in &s.convs {
                    if !matches!(sub, ConvSub::Rejected(_)) {
                        t.extend(watch_topics(id));
                    }
                }
                t
            } else {
                pending.iter().flat_map(|id| watch_topics(id)).collect()
            };
            (channel, topics, pending, put, s.removals)
        };
        let result = if put {
            self.api.put_subscriptions(&channel, &topics).await
        } else {
            self.api.post_subscriptions(&channel, &topics).await
        };
        let live = {
            let mut s = lock(&slot.state);
            if s.channel.as_deref() != Some(channel.as_str()) {
                // Replaced meanwhile: the new channel's PUT carries everything.
                return;
            }
            match result {
                Ok(answer) => {
                    log_rejections(index, &channel, &answer);
                    let rejected = rejected_conversations(&answer);
                    if put && s.removals == removals {
                        s.stale_since = None;
                    }
                    let mut live = Vec::new();
                    for id in &ids {
                        if let Some(sub) = s.convs.get_mut(id)
                            && settle(sub, rejected.get(&**id).map(String::as_str)).is_some()
                        {
                            live.push(id.clone());
                        }
                    }
                    tracing::debug!(
                        stream = %crate::genesys::StreamName(index),
                        channel_id = %channel,
                        request = if put { "PUT" } else { "POST" },
                        added = ids.len(),
                        topics = topics.len(),
                        "per-conversation subscriptions updated"
                    );
                    live
                }
                Err(e) => {
                    self.failed(&mut s, index, &channel, &e);
                    Vec::new()
                }
            }
        };
        if !live.is_empty() {
            let _ = self.live.send(live).await;
        }
    }

    fn failed(&self, s: &mut SlotState, index: usize, channel: &str, e: &ApiError) {
        tracing::warn!(stream = %crate::genesys::StreamName(index), channel_id = %channel, error = %e,
            correlation_id = e.correlation_id(),
            "per-conversation subscription request failed; retrying");
        // Push the windows forward so a failing API is not hammered.
        let later = Instant::now() + RETRY_AFTER_FAILURE;
        for sub in s.convs.values_mut() {
            if let ConvSub::Pending { since, urgent, .. } = sub {
                *since = later;
                *urgent = false;
            }
        }
        if s.stale_since.is_some() {
            s.stale_since = Some(later);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_hide_ids() {
        assert_eq!(
            topic_family(
                "v2.detail.events.conversation.5d2b8c1e-9a47-4f3e-b6d0-7e1c2a9f4b38.customer.end"
            ),
            "v2.detail.events.conversation.{id}.customer.end"
        );
        assert_eq!(
            topic_family(
                "v2.routing.queues.8f14e45f-ceea-467a-9575-3b9d1c2e4a77.conversations.messages"
            ),
            "v2.routing.queues.{id}.conversations.messages"
        );
    }

    #[test]
    fn snapshot_carries_watched_conversations_and_sync_settles_them() {
        let slot = Slot::new(vec!["v2.routing.queues.q.conversations.messages".into()]);
        let (tx, mut rx) = oneshot::channel();
        lock(&slot.state).convs.insert(
            "c1".into(),
            ConvSub::Pending {
                since: Instant::now(),
                urgent: true,
                waiters: vec![tx],
                was_live: false,
            },
        );
        let (topics, ids, removals) = slot.snapshot();
        assert_eq!(topics.len(), 4);
        assert_eq!(ids, vec![Box::<str>::from("c1")]);
        let synced = slot.synced("ch", &ids, removals, &[]);
        assert_eq!(synced.newly_live, ids);
        assert_eq!(rx.try_recv().ok(), Some(Ok(())));
        // A replaced channel makes it pending again, but no catch-up is owed.
        slot.lost_channel();
        let synced = slot.synced("ch2", &ids, removals, &[]);
        assert!(synced.newly_live.is_empty());
    }
}
