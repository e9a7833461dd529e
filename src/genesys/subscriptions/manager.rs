//! The [`Manager`]: places watched conversations on channels (opening another when
//! every one is full) and batches their additions and removals into one request per
//! channel and window.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::slot::{ConvSub, Slot, SlotState, lock, rejected_conversations, settle};
use super::{Cmd, Subscriptions, WatchError, log_rejections};
use crate::config::TOPICS_PER_CHANNEL;
use crate::genesys::api::{ApiClient, ApiError};
use crate::genesys::frames::{WATCH_SUFFIXES, watch_topics};

/// After a failed add or removal, wait this long before trying again.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(2);

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
    /// mirrors', less the other instances' of a group).
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
        let capacity = self.capacity();
        crate::metrics::set_watch_capacity(capacity);
        let mut near_warned = false;
        loop {
            crate::metrics::set_watched_topics(placed.len() * WATCH_SUFFIXES.len());
            near_warned = self.say_when_near(placed.len(), capacity, near_warned);
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

    /// How many conversations' per-conversation topics the channels this manager may
    /// use hold at most: the room left on the configured topics' channels, plus whole
    /// channels up to `max_channels`.
    fn capacity(&self) -> usize {
        let need = WATCH_SUFFIXES.len();
        let on_open: usize = self
            .slots
            .iter()
            .map(|s| (TOPICS_PER_CHANNEL.saturating_sub(Slot::topic_count(&lock(&s.state)))) / need)
            .sum();
        let more = self.max_channels.saturating_sub(self.slots.len());
        on_open + more * (TOPICS_PER_CHANNEL / need)
    }

    /// Says once, at warn, when the watched conversations reach 80% of `capacity`
    /// (before the channels run out), and again once they fall below 70%.
    fn say_when_near(&self, watched: usize, capacity: usize, warned: bool) -> bool {
        let near = watched * 10 >= capacity * 8;
        if near && !warned {
            tracing::warn!(
                watched,
                capacity,
                channels = self.max_channels,
                "per-conversation topics at 80% of what the channels left to this instance \
                 hold (20 per OAuth client, across every instance of a group): bot-phase \
                 conversations beyond the capacity are not watched; give each instance its \
                 own OAuth client or fewer configured topics"
            );
            return true;
        }
        if warned && watched * 10 < capacity * 7 {
            return false;
        }
        warned
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
