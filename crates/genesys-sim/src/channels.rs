//! Notification channels: creation under the 20-channel limit, subscriptions,
//! lifetime (expiry and renewal), the socket attached to each, and the channel
//! and socket faults (`no_longer_subscribed`, silent topic loss, closes, raw frames).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use axum::extract::ws::{Message, Utf8Bytes};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::events::Held;
use super::ids::{rfc3339, uuid_v4};
use super::world::{World, lock};

/// Frames queued per socket before it counts as too slow and is dropped, so one
/// stuck reader can neither block others nor grow memory without bound.
pub(crate) const SOCKET_QUEUE: usize = 8_192;
/// Documented limit: "20 channels per user/app".
const MAX_CHANNELS: usize = 20;
/// Documented limit: "1,000 topics per channel".
pub(crate) const MAX_TOPICS: usize = 1_000;
/// Longest lifetime honoured: `SystemTime` arithmetic and RFC 3339 years stay in
/// range, and a century is "never" for any test or demo.
const MAX_TTL: Duration = Duration::from_secs(100 * 365 * 86_400);
/// What a socket of a channel that is gone receives (README B.2).
const GONE: &str = r#"{"result":"404"}"#;

/// Which channels a channel or socket fault hits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Scope {
    /// Every channel at once (a network outage, an incident on Genesys's side).
    #[default]
    Every,
    /// One channel: of those with a socket, the one subscribed to the most topics.
    /// Genesys says `no_longer_subscribed`, evicts, expires and closes channels one
    /// at a time, and one server node going away takes the sockets it holds; the
    /// busiest channel is the worst single one to lose.
    Busiest,
}

/// The socket currently attached to a channel.
pub(crate) struct SocketSlot {
    /// Tells a replaced socket's task from the current one when it detaches.
    pub(crate) conn_id: u64,
    /// Dropping it ends the socket task, which closes the connection.
    pub(crate) tx: mpsc::Sender<Message>,
    /// An event frame held back by the `reorder_events` fault; it belongs to
    /// this connection, so it is lost with it, like anything in flight.
    pub(crate) held: Option<Held>,
}

/// A notification channel.
pub(crate) struct Channel {
    /// Lowercase topic names: Genesys matches topics case-insensitively.
    pub(crate) topics: BTreeSet<String>,
    expires: SystemTime,
    /// The lifetime it was created with; a renewal extends it by this again.
    ttl: Duration,
    /// Orders eviction when the 21st channel is created.
    last_used: Instant,
    pub(crate) socket: Option<SocketSlot>,
}

impl Channel {
    fn has_live_socket(&self) -> bool {
        self.socket.as_ref().is_some_and(|s| !s.tx.is_closed())
    }
}

/// `now + ttl`, clamped so the arithmetic cannot overflow.
fn expiry(ttl: Duration) -> SystemTime {
    SystemTime::now() + ttl.min(MAX_TTL)
}

/// Tells a socket its channel is gone, then lets it go: the task delivers the
/// queued text and ends without a close frame.
fn say_gone(slot: SocketSlot) {
    // A full queue means the socket is about to be dropped as too slow anyway.
    let _ = slot
        .tx
        .try_send(Message::Text(Utf8Bytes::from_static(GONE)));
}

/// The `v2.system.socket_closing` warning (README B.2).
pub(crate) fn socket_closing_frame() -> Value {
    json!({
        "topicName": "v2.system.socket_closing",
        "version": "2",
        "eventBody": { "message": "Socket closing for maintenance" },
        "metadata": { "CorrelationId": uuid_v4() },
    })
}

impl World {
    /// The ids of the channels `scope` picks.
    pub(crate) fn targets(channels: &HashMap<String, Channel>, scope: Scope) -> Vec<String> {
        match scope {
            Scope::Every => channels.keys().cloned().collect(),
            Scope::Busiest => channels
                .iter()
                .filter(|(_, c)| c.has_live_socket())
                .max_by_key(|(id, c)| (c.topics.len(), std::cmp::Reverse((*id).clone())))
                .map(|(id, _)| vec![id.clone()])
                .unwrap_or_default(),
        }
    }

    // ---- channels ----

    /// Creates a channel living `channel_ttl`; returns its id and expiry text.
    /// Past 20 channels the one least recently used is removed, preferring
    /// channels without a socket (documented).
    pub(crate) fn create_channel(&self) -> (String, String) {
        let id = format!("streaming-0-{:026x}", fastrand::u128(..) >> 24);
        let ttl = (*lock(&self.channel_ttl)).min(MAX_TTL);
        let expires = expiry(ttl);
        let mut channels = lock(&self.channels);
        while channels.len() >= MAX_CHANNELS {
            let victim = channels
                .iter()
                .min_by_key(|(_, c)| (c.has_live_socket(), c.last_used))
                .map(|(k, _)| k.clone());
            match victim {
                Some(v) => {
                    tracing::info!(channel_id = %v, "sim: channel limit reached, evicting channel");
                    channels.remove(&v);
                }
                None => break,
            }
        }
        let ch = Channel {
            topics: BTreeSet::new(),
            expires,
            ttl,
            last_used: Instant::now(),
            socket: None,
        };
        channels.insert(id.clone(), ch);
        drop(channels);
        self.watch_expiry(id.clone(), ttl);
        (id, rfc3339(expires))
    }

    /// Expires the channel when its time comes, so its socket hears `404` at
    /// that moment rather than at the next REST call. A renewal moved the
    /// expiry meanwhile: look again then.
    fn watch_expiry(&self, id: String, wait: Duration) {
        self.after(wait, move |world| {
            let left = lock(&world.channels)
                .get(&id)
                .map(|c| c.expires.duration_since(SystemTime::now()));
            match left {
                // Gone already (evicted, expired by hand).
                None => {}
                Some(Ok(more)) if !more.is_zero() => world.watch_expiry(id, more),
                Some(_) => {
                    world.expire_if_due(&id);
                }
            }
        });
    }

    /// Removes the channel if its expiry has passed, telling its socket.
    fn expire_if_due(&self, id: &str) -> bool {
        let mut channels = lock(&self.channels);
        if channels
            .get(id)
            .is_none_or(|c| c.expires > SystemTime::now())
        {
            return false;
        }
        if let Some(slot) = channels.remove(id).and_then(|c| c.socket) {
            say_gone(slot);
        }
        tracing::info!(channel_id = %id, "sim: channel expired");
        true
    }

    /// The documented renewal ("resubscribe to topics"): the channel lives its
    /// TTL again from now.
    pub(crate) fn renew_channel(&self, id: &str) {
        if let Some(c) = lock(&self.channels).get_mut(id) {
            c.expires = expiry(c.ttl);
        }
    }

    /// Lifetime of channels created from now on.
    pub(crate) fn set_channel_ttl(&self, ttl: Duration) {
        *lock(&self.channel_ttl) = ttl;
    }

    /// `(id, expires)` of every live channel, for `GET /api/v2/notifications/channels`.
    pub(crate) fn list_channels(&self) -> Vec<(String, String)> {
        let now = SystemTime::now();
        let channels = lock(&self.channels);
        let mut v: Vec<_> = channels
            .iter()
            .filter(|(_, c)| c.expires > now)
            .map(|(k, c)| (k.clone(), rfc3339(c.expires)))
            .collect();
        v.sort();
        v
    }

    /// Whether the channel exists and has not expired; marks it used. An expired
    /// channel the timer has not reached yet is expired here.
    pub(crate) fn touch_channel(&self, id: &str) -> bool {
        if self.expire_if_due(id) {
            return false;
        }
        match lock(&self.channels).get_mut(id) {
            Some(c) => {
                c.last_used = Instant::now();
                true
            }
            None => false,
        }
    }

    /// The channel's topics, or `None` if it does not exist.
    pub(crate) fn topics(&self, id: &str) -> Option<Vec<String>> {
        lock(&self.channels)
            .get(id)
            .map(|c| c.topics.iter().cloned().collect())
    }

    /// Replaces (`replace`) or extends the topic set. Fails with the resulting
    /// count if it would pass the 1,000-topic limit; `None` if the channel is unknown.
    pub(crate) fn set_topics(
        &self,
        id: &str,
        topics: &[String],
        replace: bool,
    ) -> Option<Result<(), usize>> {
        let mut channels = lock(&self.channels);
        let ch = channels.get_mut(id)?;
        let mut next = if replace {
            BTreeSet::new()
        } else {
            ch.topics.clone()
        };
        next.extend(topics.iter().cloned());
        if next.len() > MAX_TOPICS {
            return Some(Err(next.len()));
        }
        ch.topics = next;
        ch.last_used = Instant::now();
        Some(Ok(()))
    }

    /// `(channel id, topic count)` of every channel, sorted by id.
    pub(crate) fn channel_topic_counts(&self) -> Vec<(String, usize)> {
        let mut v: Vec<_> = lock(&self.channels)
            .iter()
            .map(|(k, c)| (k.clone(), c.topics.len()))
            .collect();
        v.sort();
        v
    }

    /// Removes the channels `scope` picks. A socket first gets `{"result":"404"}` (what
    /// a gone channel says), then its sender is dropped, so the task delivers the
    /// queued text and ends without a close frame.
    pub(crate) fn expire_channels(&self, scope: Scope) {
        let gone: Vec<_> = {
            let mut channels = lock(&self.channels);
            Self::targets(&channels, scope)
                .into_iter()
                .filter_map(|id| channels.remove(&id).map(|c| (id, c)))
                .collect()
        };
        for (id, ch) in gone {
            tracing::info!(channel_id = %id, "sim: channel expired");
            if let Some(slot) = ch.socket {
                say_gone(slot);
            }
        }
    }

    // ---- sockets ----

    /// Attaches a new socket to the channel, dropping the previous one's sender,
    /// which closes that connection (one connection per channel).
    pub(crate) fn attach_socket(&self, id: &str, tx: mpsc::Sender<Message>) -> Option<u64> {
        let conn_id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let mut channels = lock(&self.channels);
        let ch = channels.get_mut(id)?;
        if ch.socket.is_some() {
            tracing::info!(channel_id = %id, "sim: new connection replaces the channel's socket");
        }
        ch.socket = Some(SocketSlot {
            conn_id,
            tx,
            held: None,
        });
        ch.last_used = Instant::now();
        Some(conn_id)
    }

    /// Called by a socket task when it ends; leaves a newer socket alone.
    pub(crate) fn detach_socket(&self, id: &str, conn_id: u64) {
        let mut channels = lock(&self.channels);
        if let Some(ch) = channels.get_mut(id)
            && ch.socket.as_ref().is_some_and(|s| s.conn_id == conn_id)
        {
            ch.socket = None;
        }
    }

    pub(crate) fn connected_sockets(&self) -> usize {
        lock(&self.channels)
            .values()
            .filter(|c| c.has_live_socket())
            .count()
    }

    /// Drops the sockets of the channels `scope` picks: each socket task then ends
    /// without a close frame.
    pub(crate) fn drop_sockets(&self, scope: Scope) {
        let mut channels = lock(&self.channels);
        for id in Self::targets(&channels, scope) {
            if let Some(ch) = channels.get_mut(&id) {
                ch.socket = None;
            }
        }
    }

    /// Whether new sockets are refused now (`refuse_sockets_for`).
    pub(crate) fn sockets_refused(&self) -> bool {
        lock(&self.refuse_sockets_until).is_some_and(|t| Instant::now() < t)
    }

    /// Queues `msg` on the channel's socket; `true` if it was taken. A full queue
    /// (reader too slow) or a finished task lets the socket go.
    pub(crate) fn offer(id: &str, ch: &mut Channel, msg: &Message) -> bool {
        let Some(slot) = &ch.socket else {
            return false;
        };
        match slot.tx.try_send(msg.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(channel_id = %id, "sim: socket too slow, dropping it");
                ch.socket = None;
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                ch.socket = None;
                false
            }
        }
    }

    /// Pushes a frame to every attached socket regardless of topics (system
    /// frames) and records it once.
    pub(crate) fn broadcast(&self, frame: Value) {
        self.push_raw(Message::Text(Utf8Bytes::from(frame.to_string())));
        self.record_frame(frame);
    }

    /// Pushes `msg` to every attached socket regardless of topics, unrecorded.
    pub(crate) fn push_raw(&self, msg: Message) {
        for (id, ch) in lock(&self.channels).iter_mut() {
            Self::offer(id, ch, &msg);
        }
    }

    // ---- channel and socket faults ----

    /// Pushes `socket_closing` to every attached socket and closes exactly those
    /// connections abruptly `after` later; a connection attached since (the
    /// client's replacement) is left alone.
    pub(crate) fn socket_closing_then_close(&self, after: Duration) {
        let frame = socket_closing_frame();
        let msg = Message::Text(Utf8Bytes::from(frame.to_string()));
        let mut doomed = Vec::new();
        for (id, ch) in lock(&self.channels).iter_mut() {
            Self::offer(id, ch, &msg);
            if let Some(slot) = &ch.socket {
                doomed.push((id.clone(), slot.conn_id));
            }
        }
        self.record_frame(frame);
        self.after(after, move |world| {
            let mut channels = lock(&world.channels);
            for (id, conn_id) in doomed {
                let Some(ch) = channels.get_mut(&id) else {
                    continue;
                };
                if ch.socket.as_ref().is_some_and(|s| s.conn_id == conn_id) {
                    tracing::info!(channel_id = %id, "sim: closing the socket as announced");
                    ch.socket = None;
                }
            }
        });
    }

    /// Every channel `scope` picks that has a socket loses its topics and says so with
    /// a `v2.system.no_longer_subscribed.{channelId}` frame (recorded once per
    /// socket); the socket stays open.
    pub(crate) fn no_longer_subscribed(&self, scope: Scope) {
        let mut sent = Vec::new();
        let mut channels = lock(&self.channels);
        for id in Self::targets(&channels, scope) {
            let Some(ch) = channels.get_mut(&id) else {
                continue;
            };
            let id = &id;
            if !ch.has_live_socket() {
                continue;
            }
            ch.topics.clear();
            let frame = json!({
                "topicName": format!("v2.system.no_longer_subscribed.{id}"),
                "version": "2",
                "eventBody": {
                    "systemTopicType": "no_longer_subscribed",
                    "reason": "another_channel_subscribed",
                    "channelId": id,
                    "message": format!(
                        "Channel {id} is no longer subscribed: another channel subscribed to its topics."
                    ),
                },
                "metadata": { "CorrelationId": uuid_v4() },
            });
            if Self::offer(id, ch, &Message::Text(Utf8Bytes::from(frame.to_string()))) {
                sent.push(frame);
            }
        }
        drop(channels);
        for frame in sent {
            self.record_frame(frame);
        }
    }

    /// The channels `scope` picks lose their topics without a word; sockets and
    /// heartbeats go on.
    pub(crate) fn drop_topics_silently(&self, scope: Scope) {
        let mut channels = lock(&self.channels);
        for id in Self::targets(&channels, scope) {
            if let Some(ch) = channels.get_mut(&id) {
                ch.topics.clear();
            }
        }
    }
}
