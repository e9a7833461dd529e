//! A built-in Genesys Cloud simulator on loopback: OAuth client credentials, the
//! Notifications API (channels, subscriptions, available topics, WebSocket with
//! heartbeats), messaging conversations that end the way Genesys ends them, and
//! the bot phase before any queue (detail events, flow metrics, data actions).
//!
//! It is an independent oracle for the daemon's tests, the `demo` and `sim`
//! subcommands and the benchmarks: a crate of its own that does not depend on the
//! daemon, so nothing of the daemon's can leak into what it checks the daemon against.
//!
//! Map:
//! - `rest`: router, request recorder, `ErrorBody` errors, bearer check, `/oauth/token`;
//! - `rest_notifications`, `rest_conversations`: the API handlers (the latter also
//!   the generic `GET /api/v2/conversations/{id}`, the farewell message and wrap-up);
//! - `flow_activity`: `POST /api/v2/analytics/flows/activity/query`, the conversations
//!   a bot flow has now;
//! - `queue_observations`: `POST /api/v2/analytics/queues/observations/query`, the
//!   conversations in a queue now (`oWaiting`, `oInteracting`; counted by
//!   `observation_queries`);
//! - `available_topics`: the topic families, `GET .../availabletopics`, and which
//!   concrete topics a subscription accepts;
//! - `socket`: the notification WebSocket;
//! - `world`: shared state, tokens, channels, logs and frame fan-out;
//! - `model`, `lifecycle`: the conversation, its renderings and how it ends;
//! - `bot`: conversations still with a bot flow (timed intent, transfer to a queue);
//! - `detail`: detail-event and flow-metrics bodies of bot conversations;
//! - `data_action`: the HTTP POSTs an Architect data action / Process Automation
//!   workflow would make to an outside service;
//! - `generator`: conversations at a steady rate;
//! - `serve`: the `sim` subcommand;
//! - `channels`: channels, their lifetime and sockets; `events`: event fan-out
//!   and the event log; `rest_faults`, `faults`: fault injection; `rest_limits`: the
//!   org's rate limit and held requests.
//!
//! Fault injection, for the daemon's fault matrix (all on `SimHandle`; the
//! `sim` subcommand exposes none of it):
//! - flags in `Faults` (`SimConfig::faults`, `set_faults`): ignored disconnects
//!   and teardowns, silent sockets, duplicated and reordered events;
//! - sockets: `send_socket_closing`, `socket_closing_then_close`, `drop_sockets`
//!   (`drop_sockets_on`), `stall_sockets` (`stall_sockets_on`), `refuse_sockets_for`
//!   (upgrades refused, the API up), `outage` (sockets and API down);
//! - channels: `expire_channels`, `expire_channels_after` / `SimConfig::channel_ttl`
//!   (timed expiry, renewed by re-subscribing), `no_longer_subscribed`,
//!   `drop_topics_silently` (these three, and the socket faults, also come as
//!   `..._on(Scope)`: every channel, or the busiest one);
//! - REST: `fail_requests` (`RestFault`), `fail_requests_for`, `fail_endpoint_for`
//!   (one method on one exact path, e.g. channel creation), `clear_request_faults`,
//!   `revoke_tokens`; the org's rate limit
//!   (`SimConfig::rate_limit`, `set_rate_limit`); held, slow requests
//!   (`delay_requests`, `hold_requests`), to stop a client while a request is in flight;
//! - frames that are not notifications: `push_raw_text`, `push_binary`,
//!   `push_oversized`;
//! - evidence: `event_log` numbers every conversation event per conversation
//!   and says how many sockets took it (events published while no subscribed
//!   socket is attached are lost, as on the real platform).

mod available_topics;
mod bot;
mod channels;
mod data_action;
mod detail;
mod events;
mod faults;
mod flow_activity;
mod generator;
mod ids;
mod lifecycle;
mod model;
mod queue_observations;
mod rest;
mod rest_conversations;
mod rest_faults;
mod rest_limits;
mod rest_notifications;
mod script;
mod serve;
mod socket;
mod world;

pub use channels::Scope;
pub use faults::{EventRecord, RestFault};
pub use ids::uuid_v4_from;
pub use rest_limits::RequestDelay;
pub use script::{FAULT_NAMES, FaultAction, ScriptedFault};
pub use serve::{instructions, serve_forever};

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::task::JoinHandle;

use world::{World, lock};

/// How to run the simulator.
#[derive(Clone)]
pub struct SimConfig {
    /// Where to listen; tests use `127.0.0.1:0` for a free port.
    pub listen: SocketAddr,
    /// The OAuth client id the token endpoint accepts.
    pub client_id: String,
    /// The OAuth client secret the token endpoint accepts.
    pub client_secret: String,
    /// `expires_in` of issued tokens; a token is refused after it.
    pub token_ttl: Duration,
    /// Time between `WebSocket Heartbeat` frames on each socket.
    pub heartbeat_interval: Duration,
    /// Delay from an accepted disconnect PATCH to the pushed disconnected event.
    pub close_delay: Duration,
    /// Delay from an accepted `POST .../disconnect` to the pushed disconnected event.
    pub teardown_delay: Duration,
    /// Misbehaviours to simulate from the start (see also `SimHandle::set_faults`).
    pub faults: Faults,
    /// When bot conversations emit their `v2.analytics.flow.{flowId}.metrics` record.
    pub flow_metrics: FlowMetricsMode,
    /// Where bot conversations' data actions POST; `None` posts nothing
    /// (see also `SimHandle::set_data_action`).
    pub data_action: Option<DataAction>,
    /// Topic template ids (e.g. `v2.detail.events.conversation.{id}.attributes`) to
    /// simulate as EventBridge-only: `availabletopics` reports them with
    /// `transports: ["EventBridge"]` and subscribing to one of their concrete topics
    /// is answered `Rejected`. Lets tests check that the daemon notices a mode
    /// that cannot work over the WebSocket.
    pub refused_transports: Vec<String>,
    /// Lifetime of each channel from its creation, shown in `expires` (documented:
    /// 24 h). At expiry the channel is removed, its socket gets `{"result":"404"}`
    /// and is closed abruptly, and REST calls on it answer 404. A successful
    /// `PUT` or `POST .../subscriptions` before then (the documented renewal,
    /// "resubscribe to topics") restarts the lifetime from that moment. Change
    /// it mid-run with `SimHandle::expire_channels_after`.
    pub channel_ttl: Duration,
    /// The org's API rate limit: at most this many API requests (`/api/...`; not the
    /// token grant, not the WebSocket) in any sliding window of this length; one more
    /// is answered 429 `too.many.requests` with `Retry-After` (whole seconds until the
    /// window has room). Genesys's default is 300 per 60 s per OAuth client. `None`
    /// (the default): no limit. Change it mid-run with `SimHandle::set_rate_limit`.
    pub rate_limit: Option<(u32, Duration)>,
    /// Most observations `POST /api/v2/analytics/queues/observations/query` lists per
    /// metric and group (at least 1); past it the list is `truncated`: the oldest
    /// half and the newest half are kept, as the API documents. Default 1,000.
    pub observation_cap: usize,
    /// How long after a bot conversation's `.customer.start` its Process Automation
    /// trigger POSTs (`BotConversationSpec::post_on_start`); Genesys says triggers are
    /// "typically processed in a few seconds". Longer than a spec's `intent_after`
    /// plays a fast bot: the intent is set before the daemon hears of the
    /// conversation. Default 0 (at once).
    pub trigger_delay: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            client_id: "5e1f0c1e-51a0-4c1e-8e57-0000000c11e7".into(),
            client_secret: "sim-secret".into(),
            token_ttl: Duration::from_secs(86_400),
            heartbeat_interval: Duration::from_secs(30),
            close_delay: Duration::from_millis(20),
            teardown_delay: Duration::from_millis(20),
            faults: Faults::default(),
            flow_metrics: FlowMetricsMode::default(),
            data_action: None,
            refused_transports: Vec::new(),
            channel_ttl: Duration::from_secs(24 * 3600),
            rate_limit: None,
            observation_cap: 1_000,
            trigger_delay: Duration::ZERO,
        }
    }
}

impl fmt::Debug for SimConfig {
    // Written out so the secret never reaches a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimConfig")
            .field("listen", &self.listen)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("token_ttl", &self.token_ttl)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("close_delay", &self.close_delay)
            .field("teardown_delay", &self.teardown_delay)
            .field("faults", &self.faults)
            .field("flow_metrics", &self.flow_metrics)
            .field("data_action", &self.data_action)
            .field("refused_transports", &self.refused_transports)
            .field("channel_ttl", &self.channel_ttl)
            .field("rate_limit", &self.rate_limit)
            .field("observation_cap", &self.observation_cap)
            .field("trigger_delay", &self.trigger_delay)
            .finish()
    }
}

/// Ways the simulated platform can misbehave, to test the daemon's escalation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// PATCH conversation / PATCH participant are answered as success, but nothing
    /// changes and no event is pushed.
    pub ignore_disconnect: bool,
    /// `POST .../disconnect` is answered 202, but nothing changes.
    pub ignore_teardown: bool,
    /// Sockets stay open but go quiet: no heartbeats and no pongs (a half-dead
    /// connection that TCP does not notice).
    /// Events published meanwhile reach nobody (they are lost, and logged with
    /// `delivered: 0`).
    pub silent_sockets: bool,
    /// Every conversation, detail and flow-metrics frame is sent twice to each
    /// subscribed socket (logged once in `pushed_frames()` and `event_log()`).
    pub duplicate_events: bool,
    /// Per socket, an event frame is held back and sent right after the next
    /// one, or on its own after about 50 ms if none follows; a held frame is lost
    /// if its socket goes first.
    pub reorder_events: bool,
}

/// A conversation to create with `SimHandle::create_conversation`.
#[derive(Clone, Debug)]
pub struct ConversationSpec {
    /// The conversation is seen on `v2.routing.queues.{queue_id}.conversations.messages`.
    pub queue_id: String,
    /// The customer attribute the bot writes its intent to, e.g. `Bot.Intent`.
    pub intent_attribute: String,
    /// The intent; `None` when the bot set no intent attribute.
    pub intent: Option<String>,
    /// An agent (purpose `agent`, `user{id}`) is connected; frames also go to
    /// `v2.users.{id}.conversations.messages`.
    pub agent_user_id: Option<String>,
}

/// When the flow-metrics topic `v2.analytics.flow.{flowId}.metrics` emits a record
/// for a bot conversation. Unverified in real orgs (README C.3), hence a switch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FlowMetricsMode {
    /// An `nFlow` record as the flow starts.
    #[default]
    AtStart,
    /// A `tFlow` record once the flow ends (transfer or close).
    AtEnd,
    /// No record at all (the topic exists but says nothing).
    Never,
}

/// The `purpose` the flow participant gets; real orgs may show either (unverified).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BotPurpose {
    /// `purpose: "workflow"`, like the flow participant of queue conversations.
    #[default]
    Workflow,
    /// `purpose: "botflow"`.
    Botflow,
}

/// Where the simulated Architect data action / Process Automation workflow POSTs.
#[derive(Clone)]
pub struct DataAction {
    /// The endpoint, e.g. `http://127.0.0.1:PORT/v1/intents`.
    pub url: String,
    /// The full `Authorization` header value to send (e.g. `Bearer abc` or
    /// `Basic ...`), or `None` to send none.
    pub authorization: Option<String>,
}

impl fmt::Debug for DataAction {
    // Written out so the credential never reaches a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataAction")
            .field("url", &self.url)
            .field(
                "authorization",
                &self.authorization.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// One POST the simulated data action made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataActionCall {
    /// The conversation the POST was about.
    pub conversation_id: String,
    /// The JSON body sent.
    pub body: String,
    /// The HTTP status answered; 0 for a transport error or timeout.
    pub status: u16,
}

/// One message accepted by `POST /api/v2/conversations/messages/{id}/communications/{cid}/messages`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentMessage {
    /// The conversation posted to.
    pub conversation_id: String,
    /// The communication it was sent on (an agent's or a flow's).
    pub communication_id: String,
    /// `textBody`; empty for a `mediaIds` or `messagingTemplate` body.
    pub text: String,
}

/// One wrap-up accepted by
/// `POST /api/v2/conversations/messages/{id}/participants/{pid}/communications/{cid}/wrapup`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentWrapup {
    /// The conversation.
    pub conversation_id: String,
    /// The agent participant wrapped up.
    pub participant_id: String,
    /// Its communication.
    pub communication_id: String,
    /// `code`: the wrap-up code id.
    pub code: String,
    /// `notes`, when sent.
    pub notes: Option<String>,
}

/// A conversation still with the bot: a web-messaging guest and a flow
/// participant, no queue, so no queue or user topic shows it (README C.3).
#[derive(Clone, Debug)]
pub struct BotConversationSpec {
    /// The inbound message flow; names the `v2.analytics.flow.{flowId}.metrics` topic.
    pub flow_id: String,
    /// The flow participant's `purpose`.
    pub purpose: BotPurpose,
    /// The customer attribute the bot writes its intent to, e.g. `Bot.Intent`.
    pub intent_attribute: String,
    /// The intent the flow sets; `None`: the flow never sets one.
    pub intent: Option<String>,
    /// Delay from the start until the flow sets the intent attribute.
    pub intent_after: Duration,
    /// The flow transfers to this queue this long after the intent step (whether
    /// or not an intent was set); `None`: it stays with the bot until closed or
    /// the guest leaves.
    pub transfer: Option<(String, Duration)>,
    /// A Process Automation trigger on `.customer.start` POSTs
    /// `{"conversationId","eventTime"}` (`eventTime`: the `.customer.start` event's)
    /// `SimConfig::trigger_delay` after the start.
    pub post_on_start: bool,
    /// The flow's Call Data Action POSTs `{"conversationId","intent"}` when the
    /// intent is set.
    pub post_on_intent: bool,
}

/// What `SimHandle::spawn_generator` produces.
#[derive(Clone, Debug)]
pub struct GeneratorConfig {
    /// Stop after this many conversations; `None` runs until shutdown.
    pub total: Option<u64>,
    /// New conversations per second.
    pub rate_per_sec: f64,
    /// Picked at random per conversation.
    pub queue_ids: Vec<String>,
    /// The attribute the intent goes in.
    pub intent_attribute: String,
    /// Picked at random per conversation (`None`: no intent attribute).
    pub intents: Vec<Option<String>>,
    /// A conversation nobody closed ends by itself after this (the guest leaves).
    pub customer_leaves_after: Duration,
}

/// One HTTP request as the simulator saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path without the query.
    pub path: String,
    /// The raw query string, if any.
    pub query: Option<String>,
    /// The `Authorization` scheme as sent (`Bearer`, `Basic`), never the credentials;
    /// `(malformed)` for a header without a separate scheme word.
    pub auth_scheme: Option<String>,
    /// The body as text (lossy UTF-8; a form `client_secret` is masked).
    pub body: String,
    /// The `User-Agent` as sent (bounded to 200 characters): a daemon in a group names
    /// its instance and epoch there, so a test can tell who sent what.
    pub user_agent: Option<String>,
    /// The status answered; 0 while the request is still being handled (or held,
    /// see `SimHandle::delay_requests`); 499 for a held request dropped unserved
    /// because its client went away (`RequestDelay::completes_without_client`).
    pub status: u16,
}

struct Inner {
    world: Arc<World>,
    server: Mutex<Option<JoinHandle<()>>>,
}

/// A running simulator. Cheap to clone; every clone controls the same instance.
#[derive(Clone)]
pub struct SimHandle {
    inner: Arc<Inner>,
}

impl fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimHandle")
            .field("addr", &self.inner.world.addr)
            .finish()
    }
}

/// Binds `cfg.listen`, starts serving in the background and returns at once.
pub async fn start(cfg: SimConfig) -> std::io::Result<SimHandle> {
    let listener = tokio::net::TcpListener::bind(cfg.listen).await?;
    let addr = listener.local_addr()?;
    let world = World::new(&cfg, addr);
    let app = rest::router(Arc::clone(&world));
    let stop = world.cancel.clone();
    let server = tokio::spawn(async move {
        // Frames are pushed one small write at a time: without TCP_NODELAY, Nagle's
        // algorithm holds a frame behind an unacknowledged one until the client's
        // delayed ACK, adding milliseconds the daemon is not to blame for.
        use axum::serve::ListenerExt as _;
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
        {
            tracing::error!(error = %e, "sim: server failed");
        }
    });
    tracing::info!(%addr, "sim: listening");
    Ok(SimHandle {
        inner: Arc::new(Inner {
            world,
            server: Mutex::new(Some(server)),
        }),
    })
}

impl SimHandle {
    fn world(&self) -> &Arc<World> {
        &self.inner.world
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.world().addr
    }

    /// `http://127.0.0.1:PORT`: serves both the API and `/oauth/token`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.world().host())
    }

    /// Every HTTP request in arrival order with the status answered (the last 100,000).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.world().requests()
    }

    /// How many `POST /api/v2/analytics/queues/observations/query` were answered 200
    /// (a faulted, rate-limited, unauthorised or invalid one is not counted; all are
    /// in `requests()`).
    pub fn observation_queries(&self) -> u64 {
        self.world()
            .observation_queries
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// `requests()` with each request's arrival time.
    pub fn requests_timed(&self) -> Vec<(std::time::Instant, RecordedRequest)> {
        self.world().requests_timed()
    }

    /// The sockets attached now stall for `d`: they send nothing (no events, heartbeats
    /// or pongs; events published to them meanwhile are lost), while a connection made
    /// later works: a half-dead connection that only a client's own deadline can notice.
    pub fn stall_sockets(&self, d: Duration) {
        self.world().stall_current(Scope::Every, d);
    }

    /// `stall_sockets` for the sockets of the channels `scope` picks.
    pub fn stall_sockets_on(&self, scope: Scope, d: Duration) {
        self.world().stall_current(scope, d);
    }

    /// The faults in force now.
    pub fn faults(&self) -> Faults {
        self.world().faults()
    }

    /// Changes the simulated faults for requests from now on.
    pub fn set_faults(&self, f: Faults) {
        self.world().set_faults(f);
    }

    /// Creates a conversation in the queue and pushes its first frame (queue topic,
    /// plus the agent's user topic); returns its id.
    pub fn create_conversation(&self, spec: ConversationSpec) -> String {
        self.world().create_conversation(&spec)
    }

    /// The guest ends the conversation: every participant still connected is
    /// disconnected now (customer `client`, others `peer`) and a frame is pushed.
    /// Unknown or already closed conversations are left alone.
    pub fn customer_leaves(&self, conversation_id: &str) {
        self.world().customer_leaves(conversation_id);
    }

    /// Whether every participant has ended; `None` if the conversation is unknown
    /// (or so long closed that it was forgotten).
    pub fn is_closed(&self, conversation_id: &str) -> Option<bool> {
        self.world().is_closed(conversation_id)
    }

    /// The last 10,000 frames, newest last: each conversation frame once per topic
    /// (whether or not a socket subscribed to it), each heartbeat and pong once per
    /// socket it went to, each `socket_closing` once per call, each
    /// `no_longer_subscribed` once per socket. Never what is not a notification:
    /// the `{"result":"404"}` text and the `push_raw_text` / `push_binary` /
    /// `push_oversized` frames. `duplicate_events` does not log twice.
    pub fn pushed_frames(&self) -> Vec<Value> {
        self.world().frames()
    }

    /// Sockets currently attached to a channel.
    pub fn connected_sockets(&self) -> usize {
        self.world().connected_sockets()
    }

    /// Creates a conversation that is still with the bot flow and returns its id.
    /// Publishes `.customer.start` and `.flow.start` (and the flow-metrics record if
    /// `flow_metrics` is `AtStart`) now, and spawns the timed steps (intent, then
    /// transfer), which stop at shutdown.
    pub fn create_bot_conversation(&self, spec: BotConversationSpec) -> String {
        self.world().create_bot_conversation(spec)
    }

    /// The bot sets its intent attribute on the customer now: publishes the
    /// `.attributes` detail event (bot conversations only: queue conversations
    /// have no detail events here), a queue-topic frame once the conversation is
    /// in a queue, and POSTs to the data action if it has `post_on_intent`.
    /// Unknown or closed conversations are left alone.
    pub fn set_intent(&self, conversation_id: &str, intent: &str) {
        self.world().set_intent(conversation_id, intent);
    }

    /// Plays a Process Automation trigger on `.customer.start` now: POSTs
    /// `{"conversationId"}` to the data action, with `eventTime` (the conversation's
    /// `.customer.start` event time, epoch ms) when `with_event_time`, as a workflow
    /// passing the trigger event's `eventTime` does. An unknown conversation gets no
    /// `eventTime`. Nothing happens without a data action.
    pub fn post_trigger(&self, conversation_id: &str, with_event_time: bool) {
        self.world().post_trigger(conversation_id, with_event_time);
    }

    /// Changes where data actions POST from now on; `None` stops posting.
    pub fn set_data_action(&self, d: Option<DataAction>) {
        self.world().set_data_action(d);
    }

    /// Every data-action POST made so far (the last 10,000), in completion order.
    pub fn data_action_log(&self) -> Vec<DataActionCall> {
        self.world().data_action_log()
    }

    /// Every message accepted by the send-message endpoint (the last 10,000), in
    /// arrival order. Sending changes nothing else: no event is pushed for it.
    pub fn sent_messages(&self) -> Vec<SentMessage> {
        self.world().sent_messages()
    }

    /// Every wrap-up accepted by the wrap-up endpoint (the last 10,000), in arrival
    /// order; the generic `GET /api/v2/conversations/{id}` shows the latest per
    /// participant as its `wrapup`.
    pub fn wrapups(&self) -> Vec<SentWrapup> {
        self.world().wrapups()
    }

    /// `(channel id, number of subscribed topics)` per channel, sorted by channel id.
    pub fn channel_topic_counts(&self) -> Vec<(String, usize)> {
        self.world().channel_topic_counts()
    }

    /// The channel's subscribed topics (lowercased, sorted); `None` if it does not exist.
    pub fn channel_topics(&self, channel_id: &str) -> Option<Vec<String>> {
        self.world().topics(channel_id)
    }

    /// Starts the conversation generator. The task ends once `total` conversations
    /// exist and each reached its leave time, or at shutdown; aborting it stops both
    /// creating and leaving. A non-positive rate or no queue ids ends it at once.
    pub fn spawn_generator(&self, g: GeneratorConfig) -> JoinHandle<()> {
        tokio::spawn(generator::run(Arc::clone(self.world()), g))
    }

    /// Stops the server and every task of the simulator and releases the port.
    /// Other clones of the handle see a stopped simulator afterwards.
    pub async fn shutdown(self) {
        let world = self.world();
        world.cancel.cancel();
        world.drop_sockets(Scope::Every);
        let server = lock(&self.inner.server).take();
        if let Some(mut server) = server {
            // Graceful shutdown waits for in-flight requests; do not wait forever.
            if tokio::time::timeout(Duration::from_secs(2), &mut server)
                .await
                .is_err()
            {
                server.abort();
                let _ = server.await;
            }
        }
        tracing::info!(addr = %world.addr, "sim: stopped");
    }
}
