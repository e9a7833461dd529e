//! The simulator's shared state: tokens, the request and frame logs, the fault
//! switches, and the stores the other modules work on (`channels`: channels,
//! subscriptions and sockets; `events`: event fan-out and the event log;
//! `rest_faults`: injected HTTP errors).
//!
//! Lock order, to rule out deadlocks: `conversations` -> `channels` -> `events`,
//! and `conversations` -> `channels` -> `frames`; `tokens`, `requests`,
//! `rest_faults`, `limits`, `channel_ttl`, `data_action`, `data_action_log`,
//! `sent_messages` and `wrapup_log` are leaves.
//! No guard is ever held across `.await`: fan-out uses `try_send`, so publishing
//! never waits on a socket, and data-action POSTs copy their target out of the
//! lock first.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::channels::{Channel, Scope};
use super::events::EventLog;
use super::ids::uuid_v4;
use super::lifecycle::Conversations;
use super::rest_faults::ActiveFault;
use super::rest_limits::Limits;
use super::{
    DataAction, DataActionCall, Faults, FlowMetricsMode, RecordedRequest, SentMessage, SentWrapup,
    SimConfig,
};

/// Frames kept for `pushed_frames()`.
const FRAME_LOG_CAP: usize = 10_000;
/// Requests kept for `requests()`; bounds memory when the sim runs for days.
const REQUEST_LOG_CAP: usize = 100_000;
/// Entries kept for `sent_messages()` and for `wrapups()`.
const SENT_LOG_CAP: usize = 10_000;

/// Takes a lock even if a panicking thread poisoned it: the data are logs and
/// maps that stay consistent per operation, and the sim must keep answering.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
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
    /// From `.customer.start` to the trigger's POST (`SimConfig::trigger_delay`).
    pub(crate) trigger_delay: Duration,
    /// Lowercased topic template ids simulated as EventBridge-only.
    pub(crate) refused_transports: BTreeSet<String>,
    /// Read at the moment of each POST, so tests can switch it mid-run.
    pub(crate) data_action: Mutex<Option<DataAction>>,
    pub(crate) data_action_log: Mutex<VecDeque<DataActionCall>>,
    /// Built on the first POST: a sim that never posts never needs TLS set up.
    pub(crate) http: OnceLock<Option<reqwest::Client>>,
    /// Lets code that only has `&World` (fan-out, channel creation) start timers
    /// without keeping the world alive after everyone else let go of it.
    pub(crate) me: Weak<World>,
    /// The runtime the sim started on, so timers also start when a handle
    /// method is called from a plain thread.
    rt: Option<tokio::runtime::Handle>,
    /// Lifetime of channels created from now on; a channel keeps its own copy.
    pub(crate) channel_ttl: Mutex<Duration>,
    pub(crate) next_conn: AtomicU64,
    pub(crate) channels: Mutex<HashMap<String, Channel>>,
    pub(crate) events: Mutex<EventLog>,
    pub(crate) rest_faults: Mutex<Vec<ActiveFault>>,
    /// The org's rate limit and the requests to hold (`rest_limits`).
    pub(crate) limits: Mutex<Limits>,
    pub(crate) conversations: Mutex<Conversations>,
    /// Most observations listed per metric and group (`SimConfig::observation_cap`).
    pub(crate) observation_cap: usize,
    /// Queue observation queries answered 200.
    pub(crate) observation_queries: AtomicU64,
    ignore_disconnect: AtomicBool,
    ignore_teardown: AtomicBool,
    silent_sockets: AtomicBool,
    /// Connections stalled by `stall_sockets`, until when: they send nothing, while
    /// connections made later work.
    pub(crate) stalled: Mutex<HashMap<u64, Instant>>,
    /// Until when WebSocket connections are refused (503), as in an outage.
    pub(crate) refuse_sockets_until: Mutex<Option<Instant>>,
    duplicate_events: AtomicBool,
    reorder_events: AtomicBool,
    next_request: AtomicU64,
    tokens: Mutex<HashMap<String, Instant>>,
    frames: Mutex<VecDeque<Value>>,
    /// Sequence number, arrival time, request.
    requests: Mutex<VecDeque<(u64, Instant, RecordedRequest)>>,
    sent_messages: Mutex<VecDeque<SentMessage>>,
    wrapup_log: Mutex<VecDeque<SentWrapup>>,
}

impl World {
    pub(crate) fn new(cfg: &SimConfig, addr: SocketAddr) -> Arc<Self> {
        let w = Arc::new_cyclic(|me| World {
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
            trigger_delay: cfg.trigger_delay,
            refused_transports: cfg
                .refused_transports
                .iter()
                .map(|t| t.to_ascii_lowercase())
                .collect(),
            data_action: Mutex::new(cfg.data_action.clone()),
            data_action_log: Mutex::new(VecDeque::new()),
            http: OnceLock::new(),
            me: me.clone(),
            rt: tokio::runtime::Handle::try_current().ok(),
            channel_ttl: Mutex::new(cfg.channel_ttl),
            next_conn: AtomicU64::new(1),
            channels: Mutex::new(HashMap::new()),
            events: Mutex::new(EventLog::default()),
            rest_faults: Mutex::new(Vec::new()),
            limits: Mutex::new(Limits::new(cfg.rate_limit)),
            conversations: Mutex::new(Conversations::default()),
            observation_cap: cfg.observation_cap.max(1),
            observation_queries: AtomicU64::new(0),
            ignore_disconnect: AtomicBool::new(false),
            ignore_teardown: AtomicBool::new(false),
            silent_sockets: AtomicBool::new(false),
            stalled: Mutex::new(HashMap::new()),
            refuse_sockets_until: Mutex::new(None),
            duplicate_events: AtomicBool::new(false),
            reorder_events: AtomicBool::new(false),
            next_request: AtomicU64::new(1),
            tokens: Mutex::new(HashMap::new()),
            frames: Mutex::new(VecDeque::new()),
            requests: Mutex::new(VecDeque::new()),
            sent_messages: Mutex::new(VecDeque::new()),
            wrapup_log: Mutex::new(VecDeque::new()),
        });
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

    /// Sleeps `delay`, then runs `then` on the world unless the sim shut down
    /// meanwhile. The world is only borrowed weakly while sleeping, so a 24 h
    /// timer does not keep a dropped simulator alive.
    pub(crate) fn after<F>(&self, delay: Duration, then: F)
    where
        F: FnOnce(&World) + Send + 'static,
    {
        let rt = self
            .rt
            .clone()
            .or_else(|| tokio::runtime::Handle::try_current().ok());
        let Some(rt) = rt else {
            tracing::warn!("sim: no Tokio runtime, a timed step is dropped");
            return;
        };
        let me = self.me.clone();
        let cancel = self.cancel.clone();
        rt.spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = tokio::time::sleep(delay) => {
                    if let Some(world) = me.upgrade() {
                        then(&world);
                    }
                }
            }
        });
    }

    // ---- faults ----

    pub(crate) fn set_faults(&self, f: Faults) {
        self.ignore_disconnect
            .store(f.ignore_disconnect, Ordering::Relaxed);
        self.ignore_teardown
            .store(f.ignore_teardown, Ordering::Relaxed);
        self.silent_sockets
            .store(f.silent_sockets, Ordering::Relaxed);
        self.duplicate_events
            .store(f.duplicate_events, Ordering::Relaxed);
        self.reorder_events
            .store(f.reorder_events, Ordering::Relaxed);
    }

    pub(crate) fn faults(&self) -> Faults {
        Faults {
            ignore_disconnect: self.ignore_disconnect.load(Ordering::Relaxed),
            ignore_teardown: self.ignore_teardown.load(Ordering::Relaxed),
            silent_sockets: self.silent_sockets.load(Ordering::Relaxed),
            duplicate_events: self.duplicate_events.load(Ordering::Relaxed),
            reorder_events: self.reorder_events.load(Ordering::Relaxed),
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

    pub(crate) fn issued_tokens(&self) -> Vec<String> {
        lock(&self.tokens).keys().cloned().collect()
    }

    // ---- frames ----

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
        log.push_back((seq, Instant::now(), req));
        seq
    }

    pub(crate) fn finish_request(&self, seq: u64, body: String, status: u16) {
        let mut log = lock(&self.requests);
        // Sequence numbers are increasing, so a binary search finds the entry.
        if let Ok(i) = log.binary_search_by_key(&seq, |(s, _, _)| *s)
            && let Some((_, _, r)) = log.get_mut(i)
        {
            r.body = body;
            r.status = status;
        }
    }

    pub(crate) fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.requests)
            .iter()
            .map(|(_, _, r)| r.clone())
            .collect()
    }

    pub(crate) fn requests_timed(&self) -> Vec<(Instant, RecordedRequest)> {
        lock(&self.requests)
            .iter()
            .map(|(_, at, r)| (*at, r.clone()))
            .collect()
    }

    // ---- messages sent and wrap-ups applied through the API ----

    pub(crate) fn record_sent_message(&self, m: SentMessage) {
        push_capped(&mut lock(&self.sent_messages), m);
    }

    pub(crate) fn sent_messages(&self) -> Vec<SentMessage> {
        lock(&self.sent_messages).iter().cloned().collect()
    }

    pub(crate) fn record_wrapup(&self, w: SentWrapup) {
        push_capped(&mut lock(&self.wrapup_log), w);
    }

    pub(crate) fn wrapups(&self) -> Vec<SentWrapup> {
        lock(&self.wrapup_log).iter().cloned().collect()
    }
}

fn push_capped<T>(log: &mut VecDeque<T>, item: T) {
    if log.len() >= SENT_LOG_CAP {
        log.pop_front();
    }
    log.push_back(item);
}

impl World {
    /// Whether this connection is stalled: by the global `silent_sockets` fault, or by
    /// `stall_sockets` while its time runs.
    pub(crate) fn is_stalled(&self, conn_id: u64) -> bool {
        if self.faults().silent_sockets {
            return true;
        }
        let mut stalled = lock(&self.stalled);
        let now = Instant::now();
        stalled.retain(|_, until| *until > now);
        stalled.contains_key(&conn_id)
    }

    /// Stalls for `d` the connections attached now to the channels `scope` picks;
    /// later connections are not affected.
    pub(crate) fn stall_current(&self, scope: Scope, d: Duration) {
        let until = Instant::now() + d;
        let ids: Vec<u64> = {
            let channels = lock(&self.channels);
            World::targets(&channels, scope)
                .iter()
                .filter_map(|id| channels.get(id)?.socket.as_ref().map(|s| s.conn_id))
                .collect()
        };
        let mut stalled = lock(&self.stalled);
        for id in ids {
            stalled.insert(id, until);
        }
    }
}
