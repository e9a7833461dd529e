//! A built-in Genesys Cloud simulator on loopback: OAuth client credentials, the
//! Notifications API (channels, subscriptions, WebSocket with heartbeats), and
//! messaging conversations that end the way Genesys ends them.
//!
//! It is an independent oracle for the daemon's tests, the `demo` and `sim`
//! subcommands and the benchmarks, so it imports nothing else from this crate.
//!
//! Map:
//! - `rest`: router, request recorder, `ErrorBody` errors, bearer check, `/oauth/token`;
//! - `rest_notifications`, `rest_conversations`: the API handlers;
//! - `socket`: the notification WebSocket;
//! - `world`: shared state, tokens, channels, logs and frame fan-out;
//! - `model`, `lifecycle`: the conversation, its renderings and how it ends;
//! - `generator`: conversations at a steady rate.

mod generator;
mod ids;
mod lifecycle;
mod model;
mod rest;
mod rest_conversations;
mod rest_notifications;
mod socket;
mod world;

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
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
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            client_id: "sim-client".into(),
            client_secret: "sim-secret".into(),
            token_ttl: Duration::from_secs(86_400),
            heartbeat_interval: Duration::from_secs(30),
            close_delay: Duration::from_millis(20),
            teardown_delay: Duration::from_millis(20),
            faults: Faults::default(),
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
    pub silent_sockets: bool,
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
    /// The status answered; 0 while the request is still being handled.
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
    let world = Arc::new(World::new(&cfg, addr));
    let app = rest::router(Arc::clone(&world));
    let stop = world.cancel.clone();
    let server = tokio::spawn(async move {
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
    /// socket it went to, each `socket_closing` once per call.
    pub fn pushed_frames(&self) -> Vec<Value> {
        self.world().frames()
    }

    /// Sockets currently attached to a channel.
    pub fn connected_sockets(&self) -> usize {
        self.world().connected_sockets()
    }

    /// Pushes a `v2.system.socket_closing` frame to every socket (no subscription needed).
    pub fn send_socket_closing(&self) {
        let frame = json!({
            "topicName": "v2.system.socket_closing",
            "version": "2",
            "eventBody": { "message": "Socket closing for maintenance" },
            "metadata": { "CorrelationId": ids::uuid_v4() },
        });
        self.world().broadcast(frame);
    }

    /// Closes every socket abruptly (no close frame); channels and subscriptions stay.
    pub fn drop_sockets(&self) {
        self.world().drop_sockets();
    }

    /// Every issued token becomes invalid: the next API call with one gets 401.
    pub fn revoke_tokens(&self) {
        self.world().revoke_tokens();
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
        world.drop_sockets();
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

/// The `genesys-closer sim` subcommand: starts the simulator, prints how to point
/// the daemon at it, runs the generator if given, and stops on Ctrl-C.
pub async fn serve_forever(cfg: SimConfig, gen_cfg: Option<GeneratorConfig>) -> anyhow::Result<()> {
    let client_id = cfg.client_id.clone();
    let client_secret = cfg.client_secret.clone();
    let sim = start(cfg).await?;
    println!(
        "{}",
        instructions(
            &sim.base_url(),
            &client_id,
            &client_secret,
            gen_cfg.as_ref()
        )
    );
    let generator = gen_cfg.map(|g| sim.spawn_generator(g));
    let signal = tokio::signal::ctrl_c().await;
    if let Some(g) = generator {
        g.abort();
    }
    sim.shutdown().await;
    signal?;
    Ok(())
}

/// TOML basic string (JSON string escapes are valid TOML escapes).
fn toml_str(s: &str) -> String {
    Value::String(s.to_owned()).to_string()
}

/// What `serve_forever` prints: the endpoints, the credentials and a config
/// snippet in the daemon's format (`[genesys]`, `[stream]`, `[[rule]]`; the secret
/// goes in the environment because the daemon refuses it in the file).
fn instructions(url: &str, client_id: &str, secret: &str, g: Option<&GeneratorConfig>) -> String {
    let queues: Vec<String> = g.map(|g| g.queue_ids.clone()).unwrap_or_default();
    let intents: Vec<String> = g
        .map(|g| g.intents.iter().flatten().cloned().collect())
        .unwrap_or_default();
    let list = |v: &[String]| v.iter().map(|s| toml_str(s)).collect::<Vec<_>>().join(", ");
    let mut out = String::new();
    out += &format!("Genesys Cloud simulator listening on {url}\n");
    out += &format!("  login_url     = {url}   (POST /oauth/token)\n");
    out += &format!("  api_url       = {url}\n");
    out += &format!("  client_id     = {client_id}\n");
    out += &format!("  client_secret = {secret}   (a simulator credential, not a real one)\n");
    if queues.is_empty() {
        out += "  queue ids     = (none: no generator running)\n";
    } else {
        out += &format!("  queue ids     = {}\n", queues.join(", "));
    }
    out += "\nRun the daemon with:\n";
    out += &format!("  export GENESYSCLOUD_OAUTHCLIENT_SECRET={secret}\n");
    out += "and this config:\n\n";
    out += &format!(
        "[genesys]\napi_url = {}\nlogin_url = {}\n",
        toml_str(url),
        toml_str(url)
    );
    out += &format!("client_id = {}\n\n", toml_str(client_id));
    if queues.is_empty() {
        out += "# No generator runs: list the queue ids your conversations will use.\n";
    }
    out += &format!("[stream]\nqueues = [{}]\n", list(&queues));
    if !intents.is_empty() {
        out += &format!(
            "\n[[rule]]\nname = \"sim\"\nintents = [{}]\n",
            list(&intents)
        );
    }
    out += "\nCtrl-C stops the simulator.";
    out
}
