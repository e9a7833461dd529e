//! The raw client of `sim_faults`: a token-holding HTTP client, socket
//! readers with deadlines, and schema validators for what the simulator sends.

#[path = "../common/ids.rs"]
mod ids;

use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use genesys_sim::{ConversationSpec, EventRecord, SimHandle};
use jsonschema::{Draft, Validator};
use serde_json::{Value, json};
use tokio::time::{Instant, sleep, timeout};
use tokio_tungstenite::tungstenite::Message;

/// What every test returns.
pub(crate) type TestResult = Result<(), Box<dyn std::error::Error>>;
/// A client WebSocket on loopback.
pub(crate) type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const GENESYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/genesys");
/// A queue the tests subscribe to.
pub(crate) use ids::QUEUE;
/// A queue nobody subscribes to.
pub(crate) const OTHER_QUEUE: &str = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
/// The agent whose user topic some channels subscribe to.
pub(crate) const AGENT: &str = "1d7c4e92-8a5b-4c3f-b6e0-f93a2d5c7e18";
/// `POST` creates a channel, `GET` lists them.
pub(crate) const CHANNELS: &str = "/api/v2/notifications/channels";
/// Longest wait for anything that should happen.
pub(crate) const PATIENCE: Duration = Duration::from_secs(3);

/// A validator for a file of the shared facts (`format` checked); for the
/// OpenAPI subset, one for `ErrorBody`.
pub(crate) fn schema(rel: &str, draft: Draft) -> Validator {
    let path = format!("{GENESYS}/{rel}");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    let mut v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    if rel.ends_with("openapi-subset.json") {
        // Only ErrorBody is checked here; closed so an invented field fails.
        let defs = v["definitions"].take();
        let mut closed = defs.clone();
        for d in ["ErrorBody", "Detail", "Limit"] {
            closed[d]["additionalProperties"] = json!(false);
        }
        v = json!({ "$ref": "#/definitions/ErrorBody", "definitions": closed });
    }
    let opts = jsonschema::options()
        .with_draft(draft)
        .should_validate_formats(true);
    opts.build(&v)
        .unwrap_or_else(|e| panic!("compile {rel}: {e}"))
}

/// Fails with every schema error of `instance`.
pub(crate) fn valid(v: &Validator, instance: &Value) {
    let errors: Vec<String> = v.iter_errors(instance).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:#?} in {instance}");
}

/// The `v2.routing.queues.{id}.conversations.messages` frame schema.
pub(crate) fn queue_schema() -> Validator {
    schema(
        "events/schema/queue-conversations-messages.schema.json",
        Draft::Draft7,
    )
}

/// A client holding a token, as the daemon would.
pub(crate) struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

/// Status, headers and JSON body (`Null` when empty) of an answer.
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) headers: reqwest::header::HeaderMap,
    pub(crate) body: Value,
}

impl Answer {
    /// A response header as text.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Api {
    /// Logs in with the simulator's client credentials.
    pub(crate) async fn login(sim: &SimHandle) -> Result<Self, Box<dyn std::error::Error>> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut api = Api {
            http: reqwest::Client::new(),
            base: sim.base_url(),
            token: String::new(),
        };
        let answer = api.token().await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        api.token = answer.body["access_token"]
            .as_str()
            .ok_or("no token")?
            .into();
        Ok(api)
    }

    /// `POST /oauth/token` with the client credentials.
    pub(crate) async fn token(&self) -> Answer {
        let req = self.http.post(format!("{}/oauth/token", self.base));
        let req = req
            .basic_auth("5e1f0c1e-51a0-4c1e-8e57-0000000c11e7", Some("sim-secret"))
            .form(&[("grant_type", "client_credentials")]);
        answer(req.send().await.expect("token request")).await
    }

    /// `method path` with the token and a JSON body if not empty.
    pub(crate) async fn call(&self, method: &str, path: &str, body: &str) -> Answer {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        req = req.bearer_auth(&self.token);
        if !body.is_empty() {
            req = req
                .header("content-type", "application/json")
                .body(body.to_owned());
        }
        answer(req.send().await.expect("request reaches the simulator")).await
    }

    /// A new channel subscribed to `topics`; returns `(id, connectUri, Channel)`.
    pub(crate) async fn channel(&self, topics: &[String]) -> (String, String, Value) {
        let ch = self.call("POST", CHANNELS, "").await;
        assert_eq!(ch.status, 200, "{}", ch.body);
        let id = ch.body["id"].as_str().expect("id").to_owned();
        let uri = ch.body["connectUri"].as_str().expect("uri").to_owned();
        let subs: Vec<Value> = topics.iter().map(|t| json!({ "id": t })).collect();
        let put = self.subscribe(&id, &Value::Array(subs)).await;
        assert_eq!(put, 200);
        (id, uri, ch.body)
    }

    /// `PUT .../subscriptions`; returns the status.
    pub(crate) async fn subscribe(&self, id: &str, topics: &Value) -> u16 {
        let path = format!("{CHANNELS}/{id}/subscriptions");
        self.call("PUT", &path, &topics.to_string()).await.status
    }

    /// The subscribed topic ids; `None` if the channel answers 404.
    pub(crate) async fn subscriptions(&self, id: &str) -> Option<Vec<String>> {
        let got = self
            .call("GET", &format!("{CHANNELS}/{id}/subscriptions"), "")
            .await;
        if got.status == 404 {
            return None;
        }
        assert_eq!(got.status, 200);
        let ids = got.body["entities"].as_array().expect("entities").iter();
        Some(
            ids.filter_map(|e| e["id"].as_str().map(str::to_owned))
                .collect(),
        )
    }
}

async fn answer(resp: reqwest::Response) -> Answer {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("body");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).expect("JSON body")
    };
    Answer {
        status,
        headers,
        body,
    }
}

/// The queue topic of `q`.
pub(crate) fn queue_topic(q: &str) -> String {
    format!("v2.routing.queues.{q}.conversations.messages")
}

/// The user topic of `u`.
pub(crate) fn user_topic(u: &str) -> String {
    format!("v2.users.{u}.conversations.messages")
}

/// A queue conversation with an intent, and an agent if given.
pub(crate) fn conversation(queue: &str, agent: Option<&str>) -> ConversationSpec {
    ConversationSpec {
        queue_id: queue.into(),
        intent_attribute: "Bot.Intent".into(),
        intent: Some("Goodbye".into()),
        agent_user_id: agent.map(str::to_owned),
    }
}

/// Opens a socket on `uri` (the `connectUri`).
pub(crate) async fn connect(uri: &str) -> Ws {
    let (ws, _) = tokio_tungstenite::connect_async(uri)
        .await
        .expect("socket connects");
    ws
}

/// The next text or binary message, or `None` if the socket ended (or `within` passed).
pub(crate) async fn next_msg(ws: &mut Ws, within: Duration) -> Option<Message> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match timeout(left, ws.next()).await {
            Ok(Some(Ok(m @ (Message::Text(_) | Message::Binary(_) | Message::Close(_))))) => {
                return Some(m);
            }
            Ok(Some(Ok(_))) => continue,
            _ => return None,
        }
    }
}

/// The next JSON text frame; panics if none comes.
pub(crate) async fn next_json(ws: &mut Ws) -> Value {
    match next_msg(ws, PATIENCE).await {
        Some(Message::Text(t)) => serde_json::from_str(t.as_str()).expect("JSON frame"),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

/// Reads until the socket ends; panics on a close frame (the sim closes
/// abruptly) or if it is still open after `PATIENCE`. Returns the texts read.
pub(crate) async fn read_to_abrupt_end(ws: &mut Ws) -> Vec<String> {
    let deadline = Instant::now() + PATIENCE;
    let mut texts = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match timeout(left, ws.next()).await {
            Err(_) => panic!("socket still open; read {texts:?}"),
            Ok(Some(Ok(Message::Text(t)))) => texts.push(t.as_str().to_owned()),
            Ok(Some(Ok(Message::Close(c)))) => panic!("polite close {c:?}, expected abrupt"),
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_)) | None) => return texts,
        }
    }
}

/// Nothing but heartbeats arrives for `quiet`.
pub(crate) async fn assert_quiet(ws: &mut Ws, quiet: Duration) {
    let deadline = Instant::now() + quiet;
    while let Some(m) = next_msg(ws, deadline.saturating_duration_since(Instant::now())).await {
        let is_heartbeat =
            matches!(&m, Message::Text(t) if t.as_str().contains("WebSocket Heartbeat"));
        assert!(is_heartbeat, "unexpected {m:?}");
    }
}

/// Polls `cond` until it holds; fails after `PATIENCE`.
pub(crate) async fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        sleep(Duration::from_millis(5)).await;
    }
}

/// The event-log records of one conversation, in publish order.
pub(crate) fn events_of(sim: &SimHandle, conversation_id: &str) -> Vec<EventRecord> {
    let log = sim.event_log().into_iter();
    log.filter(|r| r.conversation_id == conversation_id)
        .collect()
}

/// `expires` of a `Channel` as a time.
pub(crate) fn expires(channel: &Value) -> SystemTime {
    let text = channel["expires"].as_str().expect("expires");
    humantime::parse_rfc3339(text).expect("RFC 3339 expires")
}
