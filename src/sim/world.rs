//! The simulator's shared state: tokens, channels with their subscriptions and
//! attached sockets, the request and frame logs, and frame fan-out.
//!
//! Lock order, to rule out deadlocks: `conversations` -> `channels` -> `frames`;
//! `tokens`, `requests`, `data_action` and `data_action_log` are leaves. No guard
//! is ever held across `.await`: fan-out uses `try_send`, so publishing never
//! waits on a socket, and data-action POSTs copy their target out of the lock first.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use axum::extract::ws::Utf8Bytes;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::ids::{rfc3339, uuid_v4};
use super::lifecycle::Conversations;
use super::{DataAction, DataActionCall, Faults, FlowMetricsMode, RecordedRequest, SimConfig};

/// Frames kept for `pushed_frames()`.
const FRAME_LOG_CAP: usize = 10_000;
/// Requests kept for `requests()`; bounds memory when the sim runs for days.
const REQUEST_LOG_CAP: usize = 100_000;
/// Frames queued per socket before it counts as too slow and is dropped, so one
/// stuck reader can neither block others nor grow memory without bound.
pub(crate) const SOCKET_QUEUE: usize = 8_192;
/// Documented limit: "20 channels per user/app".
const MAX_CHANNELS: usize = 20;
/// Documented limit: "1,000 topics per channel".
pub(crate) const MAX_TOPICS: usize = 1_000;
/// Documented channel lifetime.
const CHANNEL_TTL: Duration = Duration::from_secs(24 * 3600);

/// Takes a lock even if a panicking thread poisoned it: the data are logs and
/// maps that stay consistent per operation, and the sim must keep answering.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The socket currently attached to a channel.
struct SocketSlot {
    /// Tells a replaced socket's task from the current one when it detaches.
    conn_id: u64,
    /// Dropping it ends the socket task, which closes the connection.
    tx: mpsc::Sender<Utf8Bytes>,
}

/// A notification channel.
struct Channel {
    /// Lowercase topic names: Genesys matches topics case-insensitively.
    topics: BTreeSet<String>,
    expires: SystemTime,
    /// Orders eviction when the 21st channel is created.
    last_used: Instant,
    socket: Option<SocketSlot>,
}

impl Channel {
    fn has_live_socket(&self) -> bool {
        self.socket.as_ref().is_some_and(|s| !s.tx.is_closed())
    }
}

/// Everything the HTTP handlers, socket tasks and the public handle share.
pub(crate) struct World {
    pub(crate) addr: SocketAddr,
    pub(crate) client_id: String,
    pub(crate) client_secret: String,
    pub(crate) token_ttl: Duration,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) close_delay: Duration,
    pub(crate) teardown_delay: Duration,
    /// Cancelled by `shutdown`: every task the sim spawned watches it.
    pub(crate) cancel: CancellationToken,
    pub(crate) division_id: String,
    pub(crate) flow_metrics: FlowMetricsMode,
    /// Lowercased topic template ids simulated as EventBridge-only.
    pub(crate) refused_transports: BTreeSet<String>,
    /// Read at the moment of each POST, so tests can switch it mid-run.
    pub(crate) data_action: Mutex<Option<DataAction>>,
    pub(crate) data_action_log: Mutex<VecDeque<DataActionCall>>,
    /// Built on the first POST: a sim that never posts never needs TLS set up.
    pub(crate) http: OnceLock<Option<reqwest::Client>>,
    ignore_disconnect: AtomicBool,
    ignore_teardown: AtomicBool,
    silent_sockets: AtomicBool,
    next_conn: AtomicU64,
    next_request: AtomicU64,
    tokens: Mutex<HashMap<String, Instant>>,
    channels: Mutex<HashMap<String, Channel>>,
    pub(crate) conversations: Mutex<Conversations>,
    frames: Mutex<VecDeque<Value>>,
    requests: Mutex<VecDeque<(u64, RecordedRequest)>>,
}

impl World {
    pub(crate) fn new(cfg: &SimConfig, addr: SocketAddr) -> Self {
        let w = World {
            addr,
            client_id: cfg.client_id.clone(),
            client_secret: cfg.client_secret.clone(),
            token_ttl: cfg.token_ttl,
            heartbeat_interval: cfg.heartbeat_interval,
            close_delay: cfg.close_delay,
            teardown_delay: cfg.teardown_delay,
            cancel: CancellationToken::new(),
            division_id: uuid_v4(),
            flow_metrics: cfg.flow_metrics,
            refused_transports: cfg
                .refused_transports
                .iter()
                .map(|t| t.to_ascii_lowercase())
                .collect(),
            data_action: Mutex::new(cfg.data_action.clone()),
            data_action_log: Mutex::new(VecDeque::new()),
            http: OnceLock::new(),
            ignore_disconnect: AtomicBool::new(false),
            ignore_teardown: AtomicBool::new(false),
            silent_sockets: AtomicBool::new(false),
            next_conn: AtomicU64::new(1),
            next_request: AtomicU64::new(1),
            tokens: Mutex::new(HashMap::new()),
            channels: Mutex::new(HashMap::new()),
            conversations: Mutex::new(Conversations::default()),
            frames: Mutex::new(VecDeque::new()),
            requests: Mutex::new(VecDeque::new()),
        };
        w.set_faults(cfg.faults);
        w
    }

    /// `host:port` for URLs handed to clients; a wildcard bind is reached via loopback.
    pub(crate) fn host(&self) -> String {
        let ip = if self.addr.ip().is_unspecified() {
            std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
        } else {
            self.addr.ip()
        };
        SocketAddr::new(ip, self.addr.port()).to_string()
    }

    // ---- faults ----

    pub(crate) fn set_faults(&self, f: Faults) {
        self.ignore_disconnect
            .store(f.ignore_disconnect, Ordering::Relaxed);
        self.ignore_teardown
            .store(f.ignore_teardown, Ordering::Relaxed);
        self.silent_sockets
            .store(f.silent_sockets, Ordering::Relaxed);
    }

    pub(crate) fn faults(&self) -> Faults {
        Faults {
            ignore_disconnect: self.ignore_disconnect.load(Ordering::Relaxed),
            ignore_teardown: self.ignore_teardown.load(Ordering::Relaxed),
            silent_sockets: self.silent_sockets.load(Ordering::Relaxed),
        }
    }

    // ---- tokens ----

    /// Issues a random bearer token valid for `token_ttl`.
    pub(crate) fn issue_token(&self) -> String {
        let token = format!("{:032x}{:032x}", fastrand::u128(..), fastrand::u128(..));
        let now = Instant::now();
        // A TTL too large for `Instant` means "never expires" in practice.
        let expiry = now
            .checked_add(self.token_ttl)
            .unwrap_or(now + Duration::from_secs(100 * 365 * 86_400));
        let mut tokens = lock(&self.tokens);
        // Forget expired tokens here so a long run with short TTLs stays bounded.
        tokens.retain(|_, exp| *exp > now);
        tokens.insert(token.clone(), expiry);
        token
    }

    pub(crate) fn token_valid(&self, token: &str) -> bool {
        lock(&self.tokens)
            .get(token)
            .is_some_and(|exp| *exp > Instant::now())
    }

    pub(crate) fn revoke_tokens(&self) {
        lock(&self.tokens).clear();
    }

    // ---- channels ----

    /// Creates a channel; returns its id and expiry text. Past 20 channels the one
    /// least recently used is removed, preferring channels without a socket (documented).
    pub(crate) fn create_channel(&self) -> (String, String) {
        let id = format!("streaming-0-{:026x}", fastrand::u128(..) >> 24);
        let expires = SystemTime::now() + CHANNEL_TTL;
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
            last_used: Instant::now(),
            socket: None,
        };
        channels.insert(id.clone(), ch);
        (id, rfc3339(expires))
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

    /// Whether the channel exists and has not expired; marks it used.
    pub(crate) fn touch_channel(&self, id: &str) -> bool {
        let now = SystemTime::now();
        let mut channels = lock(&self.channels);
        match channels.get_mut(id) {
            Some(c) if c.expires > now => {
                c.last_used = Instant::now();
                true
            }
            Some(_) => {
                channels.remove(id);
                false
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

    /// Removes every channel. A socket first gets `{"result":"404"}` (what a gone
    /// channel says), then its sender is dropped, so the task delivers the queued
    /// text and ends without a close frame.
    pub(crate) fn expire_channels(&self) {
        let gone: Vec<(String, Channel)> = lock(&self.channels).drain().collect();
        for (id, ch) in gone {
            tracing::info!(channel_id = %id, "sim: channel expired");
            if let Some(slot) = ch.socket {
                // A full queue means the socket is about to be dropped as too slow anyway.
                let _ = slot
                    .tx
                    .try_send(Utf8Bytes::from_static(r#"{"result":"404"}"#));
            }
        }
    }

    // ---- sockets ----

    /// Attaches a new socket to the channel, dropping the previous one's sender,
    /// which closes that connection (one connection per channel).
    pub(crate) fn attach_socket(&self, id: &str, tx: mpsc::Sender<Utf8Bytes>) -> Option<u64> {
        let conn_id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let mut channels = lock(&self.channels);
        let ch = channels.get_mut(id)?;
        if ch.socket.is_some() {
            tracing::info!(channel_id = %id, "sim: new connection replaces the channel's socket");
        }
        ch.socket = Some(SocketSlot { conn_id, tx });
        ch.last_used = Instant::now();
        Some(conn_id)
    }

    /// Called by a socket task when it ends; leaves a newer socket alone.
    pub(crate) fn detach_socket(&self, id: &str, conn_id: u64) {
        let mut channels = lock(&self.channels);
        if let Some(ch) = channels.get_mut(id) {
            if ch.socket.as_ref().is_some_and(|s| s.conn_id == conn_id) {
                ch.socket = None;
            }
        }
    }

    pub(crate) fn connected_sockets(&self) -> usize {
        lock(&self.channels)
            .values()
            .filter(|c| c.has_live_socket())
            .count()
    }

    /// Drops every socket's sender: each socket task then ends without a close frame.
    pub(crate) fn drop_sockets(&self) {
        for ch in lock(&self.channels).values_mut() {
            ch.socket = None;
        }
    }

    // ---- frames ----

    /// Pushes a frame to every socket whose channel subscribes to `topic` and
    /// records it once, whether or not anyone was subscribed.
    pub(crate) fn publish(&self, topic: &str, frame: Value) {
        let key = topic.to_ascii_lowercase();
        let text = Utf8Bytes::from(frame.to_string());
        {
            let mut channels = lock(&self.channels);
            for (id, ch) in channels.iter_mut() {
                if ch.topics.contains(&key) {
                    Self::offer(id, ch, &text);
                }
            }
        }
        self.record_frame(frame);
    }

    /// Pushes a frame to every attached socket regardless of topics (system frames).
    pub(crate) fn broadcast(&self, frame: Value) {
        let text = Utf8Bytes::from(frame.to_string());
        {
            let mut channels = lock(&self.channels);
            for (id, ch) in channels.iter_mut() {
                Self::offer(id, ch, &text);
            }
        }
        self.record_frame(frame);
    }

    fn offer(id: &str, ch: &mut Channel, text: &Utf8Bytes) {
        let Some(slot) = &ch.socket else { return };
        match slot.tx.try_send(text.clone()) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(channel_id = %id, "sim: socket too slow, dropping it");
                ch.socket = None;
            }
            Err(mpsc::error::TrySendError::Closed(_)) => ch.socket = None,
        }
    }

    /// Keeps the last `FRAME_LOG_CAP` frames for `pushed_frames()`.
    pub(crate) fn record_frame(&self, frame: Value) {
        let mut frames = lock(&self.frames);
        if frames.len() >= FRAME_LOG_CAP {
            frames.pop_front();
        }
        frames.push_back(frame);
    }

    pub(crate) fn frames(&self) -> Vec<Value> {
        lock(&self.frames).iter().cloned().collect()
    }

    /// A conversation frame in the envelope of the example events.
    pub(crate) fn conversation_frame(topic: &str, body: Value) -> Value {
        json!({ "topicName": topic, "version": "2", "eventBody": body,
                "metadata": { "CorrelationId": uuid_v4() } })
    }

    // ---- request log ----

    /// Logs a request on arrival (so the log is in arrival order); the status is
    /// filled in by `finish_request` once answered.
    pub(crate) fn start_request(&self, req: RecordedRequest) -> u64 {
        let mut log = lock(&self.requests);
        // Taken under the lock so the log stays sorted by sequence number.
        let seq = self.next_request.fetch_add(1, Ordering::Relaxed);
        if log.len() >= REQUEST_LOG_CAP {
            log.pop_front();
        }
        log.push_back((seq, req));
        seq
    }

    pub(crate) fn finish_request(&self, seq: u64, body: String, status: u16) {
        let mut log = lock(&self.requests);
        // Sequence numbers are increasing, so a binary search finds the entry.
        if let Ok(i) = log.binary_search_by_key(&seq, |(s, _)| *s) {
            if let Some((_, r)) = log.get_mut(i) {
                r.body = body;
                r.status = status;
            }
        }
    }

    pub(crate) fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.requests)
            .iter()
            .map(|(_, r)| r.clone())
            .collect()
    }
}
