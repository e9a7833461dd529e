//! The simulator as an oracle: its frames validate against the shared event schemas,
//! its REST answers use only fields of the OpenAPI subset, and its errors, logs and
//! conversation endings behave like Genesys. Real clock, loopback only.

#[path = "common/ids.rs"]
mod ids;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use genesys_sim::{
    self as sim, BotConversationSpec, BotPurpose, ConversationSpec, DataAction, Faults,
    FlowMetricsMode, GeneratorConfig, SimConfig, SimHandle,
};
use ids::QUEUE;
use jsonschema::{Draft, Validator};
use serde_json::{Value, json};
use tokio::time::{Instant, timeout};
use tokio_tungstenite::tungstenite::Message;

type TestResult = Result<(), Box<dyn std::error::Error>>;
type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const GENESYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/genesys");
const OTHER_QUEUE: &str = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
const AGENT: &str = "1d7c4e92-8a5b-4c3f-b6e0-f93a2d5c7e18";
const DISCONNECT: &str = r#"{"state":"disconnected"}"#;

fn read_json(rel: &str) -> Value {
    let path = format!("{GENESYS}/{rel}");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {path}: {e}"))
}

/// A validator with `format` checked (`date-time` is not checked by default).
fn validator(schema: &Value, draft: Draft) -> Validator {
    let opts = jsonschema::options()
        .with_draft(draft)
        .should_validate_formats(true);
    opts.build(schema)
        .unwrap_or_else(|e| panic!("compile schema: {e}"))
}

fn no_errors(errors: Vec<String>) {
    assert!(errors.is_empty(), "{errors:#?}");
}

struct Schemas {
    queue: Validator,
    user: Validator,
    metadata: Validator,
    flow_metrics: Validator,
    /// Detail-event validators by topic suffix (`customer.start`, `attributes`, ...).
    detail: Vec<(&'static str, Validator)>,
    openapi: Value,
}

/// The detail-event families the simulator publishes, with their schema files.
const DETAIL_SCHEMAS: [(&str, &str); 7] = [
    ("customer.start", "detail-customer-start"),
    ("customer.end", "detail-customer-end"),
    ("flow.start", "detail-flow-start"),
    ("flow.end", "detail-flow-end"),
    ("attributes", "detail-attributes"),
    ("acd.start", "detail-acd-start"),
    ("acd.end", "detail-acd-end"),
];

impl Schemas {
    fn load() -> Self {
        let event = |f: &str| validator(&read_json(&format!("events/schema/{f}")), Draft::Draft7);
        let mut openapi = read_json("openapi-subset.json");
        // Close every OpenAPI object definition so that an invented field fails.
        let defs = openapi["definitions"].as_object_mut().expect("definitions");
        for def in defs.values_mut().filter_map(Value::as_object_mut) {
            if def.contains_key("properties") && !def.contains_key("additionalProperties") {
                def.insert("additionalProperties".into(), json!(false));
            }
        }
        Schemas {
            queue: event("queue-conversations-messages.schema.json"),
            user: event("user-conversations-messages.schema.json"),
            metadata: event("channel-metadata.schema.json"),
            flow_metrics: event("flow-metrics.schema.json"),
            detail: DETAIL_SCHEMAS
                .iter()
                .map(|(suffix, file)| (*suffix, event(&format!("{file}.schema.json"))))
                .collect(),
            openapi,
        }
    }

    /// Schema errors of a pushed frame, the schema chosen by its topic.
    fn frame_errors(&self, frame: &Value) -> Vec<String> {
        let topic = frame["topicName"].as_str().unwrap_or("");
        let v = if topic == "channel.metadata" {
            &self.metadata
        } else if topic.starts_with("v2.routing.queues.") {
            &self.queue
        } else if topic.starts_with("v2.users.") {
            &self.user
        } else if topic.starts_with("v2.analytics.flow.") {
            &self.flow_metrics
        } else if let Some(v) = topic
            .strip_prefix("v2.detail.events.conversation.")
            .and_then(|rest| rest.split_once('.'))
            .and_then(|(_, suffix)| self.detail.iter().find(|(s, _)| *s == suffix))
        {
            &v.1
        } else {
            return vec![format!("no schema for topic {topic:?}")];
        };
        let errors = v.iter_errors(frame);
        errors
            .map(|e| format!("{topic}: {e} at {}", e.instance_path()))
            .collect()
    }

    /// Schema errors of a REST body against an OpenAPI definition (Swagger 2.0 ~ draft 4).
    fn rest_errors(&self, def: &str, body: &Value) -> Vec<String> {
        let schema = json!({ "$ref": format!("#/definitions/{def}"),
                             "definitions": self.openapi["definitions"] });
        let v = validator(&schema, Draft::Draft4);
        let errors = v.iter_errors(body);
        errors
            .map(|e| format!("{def}: {e} at {}", e.instance_path()))
            .collect()
    }
}

/// Every timestamp (`*Time`, `expires`) is RFC 3339 UTC with milliseconds and `Z`,
/// like Genesys's: stricter than the schemas' `date-time`.
fn assert_millis_z(v: &Value) {
    let shaped = |t: &str| {
        let digit = |(i, c): (usize, char)| {
            matches!(i, 4 | 7 | 10 | 13 | 16 | 19 | 23) || c.is_ascii_digit()
        };
        let b = t.as_bytes();
        b.len() == 24
            && b[10] == b'T'
            && b[19] == b'.'
            && b[23] == b'Z'
            && t.chars().enumerate().all(digit)
    };
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if let (true, Some(t)) = (k.ends_with("Time") || k == "expires", x.as_str()) {
                    assert!(
                        shaped(t),
                        "{k} = {t:?} is not like 2026-11-23T14:02:09.118Z"
                    );
                }
                assert_millis_z(x);
            }
        }
        Value::Array(a) => a.iter().for_each(assert_millis_z),
        _ => {}
    }
}

/// A plain HTTP client holding a token from the simulator.
struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

/// Status, `ININ-Correlation-Id` and JSON body (`Null` when empty) of an answer.
struct Answer {
    status: u16,
    correlation: Option<String>,
    body: Value,
}

impl Api {
    async fn login(sim: &SimHandle) -> Result<Self, Box<dyn std::error::Error>> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut api = Api {
            http: reqwest::Client::new(),
            base: sim.base_url(),
            token: String::new(),
        };
        let (status, body) = api.grant("sim-secret", "client_credentials").await;
        assert_eq!(
            (status, &body["token_type"], &body["expires_in"]),
            (200, &json!("bearer"), &json!(86_400))
        );
        api.token = body["access_token"]
            .as_str()
            .ok_or("no access_token")?
            .to_owned();
        Ok(api)
    }

    async fn grant(&self, secret: &str, grant_type: &str) -> (u16, Value) {
        let req = self.http.post(format!("{}/oauth/token", self.base));
        let req = req
            .basic_auth("5e1f0c1e-51a0-4c1e-8e57-0000000c11e7", Some(secret))
            .form(&[("grant_type", grant_type)]);
        let resp = req.send().await.expect("token request");
        (
            resp.status().as_u16(),
            resp.json().await.expect("token answer is JSON"),
        )
    }

    /// `method path` with the bearer token (unless `anonymous`) and a JSON body if not empty.
    async fn send(&self, method: &str, path: &str, body: &str, anonymous: bool) -> Answer {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if !anonymous {
            req = req.bearer_auth(&self.token);
        }
        if !body.is_empty() {
            req = req
                .header("content-type", "application/json")
                .body(body.to_owned());
        }
        let resp = req.send().await.expect("request reaches the simulator");
        let status = resp.status().as_u16();
        let correlation = resp
            .headers()
            .get("inin-correlation-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = resp.text().await.expect("body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).expect("JSON body")
        };
        Answer {
            status,
            correlation,
            body,
        }
    }

    async fn call(&self, method: &str, path: &str, body: &str) -> Answer {
        self.send(method, path, body, false).await
    }
}

fn spec(queue: &str, intent: Option<&str>, agent: Option<&str>) -> ConversationSpec {
    ConversationSpec {
        queue_id: queue.into(),
        intent_attribute: "Bot.Intent".into(),
        intent: intent.map(str::to_owned),
        agent_user_id: agent.map(str::to_owned),
    }
}

fn queue_topic(q: &str) -> String {
    format!("v2.routing.queues.{q}.conversations.messages")
}

fn conv_path(id: &str) -> String {
    format!("/api/v2/conversations/messages/{id}")
}

/// The participant with `purpose` in a frame's `eventBody` or a REST conversation.
fn participant<'a>(conversation: &'a Value, purpose: &str) -> &'a Value {
    let ps = conversation.get("eventBody").unwrap_or(conversation)["participants"].as_array();
    let found = ps.and_then(|ps| ps.iter().find(|p| p["purpose"] == purpose));
    found.unwrap_or_else(|| panic!("no {purpose} participant in {conversation}"))
}

fn all_ended(frame: &Value) -> bool {
    let ps = frame["eventBody"]["participants"].as_array();
    ps.is_some_and(|ps| {
        ps.iter()
            .all(|p| p["state"] == "disconnected" && p.get("endTime").is_some())
    })
}

fn frames_of<'a>(frames: &'a [Value], conversation: &str) -> Vec<&'a Value> {
    frames
        .iter()
        .filter(|f| f["eventBody"]["id"] == conversation)
        .collect()
}

/// Reads frames into `got` until `done(got)`; fails after 3 s.
async fn read_until(ws: &mut Ws, got: &mut Vec<Value>, done: impl Fn(&[Value]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while !done(got) {
        match timeout(
            deadline.saturating_duration_since(Instant::now()),
            ws.next(),
        )
        .await
        {
            Ok(Some(Ok(Message::Text(t)))) => {
                got.push(serde_json::from_str(t.as_str()).expect("JSON frame"))
            }
            Ok(Some(Ok(_))) => {}
            other => panic!("socket ended or timed out first: {other:?}; got {got:#?}"),
        }
    }
}

async fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(2);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn socket_frames_match_the_event_schemas() -> TestResult {
    let schemas = Schemas::load();
    let cfg = SimConfig {
        heartbeat_interval: Duration::from_millis(150),
        ..SimConfig::default()
    };
    let sim = sim::start(cfg).await?;
    let api = Api::login(&sim).await?;

    let ch = api.call("POST", "/api/v2/notifications/channels", "").await;
    assert_eq!(ch.status, 200);
    no_errors(schemas.rest_errors("Channel", &ch.body));
    assert_millis_z(&ch.body);
    let channel_id = ch.body["id"].as_str().ok_or("no channel id")?.to_owned();
    assert!(channel_id.starts_with("streaming-0-"), "{channel_id}");
    let uri = ch.body["connectUri"]
        .as_str()
        .ok_or("no connectUri")?
        .to_owned();
    assert_eq!(uri, format!("ws://{}/channels/{channel_id}", sim.addr()));

    // Mixed case on purpose: topics match case-insensitively.
    let subs = json!([{ "id": format!("v2.routing.queues.{}.Conversations.Messages", QUEUE.to_uppercase()) },
                      { "id": format!("v2.users.{AGENT}.conversations.messages") },
                      { "id": "v2.made.up.topic" }]);
    let path = format!("/api/v2/notifications/channels/{channel_id}/subscriptions");
    let put = api.call("PUT", &path, &subs.to_string()).await;
    assert_eq!(put.status, 200);
    no_errors(schemas.rest_errors("ChannelTopicEntityListing", &put.body));
    let states: Vec<&Value> = put.body["entities"]
        .as_array()
        .ok_or("no entities")?
        .iter()
        .map(|e| &e["state"])
        .collect();
    assert_eq!(
        states,
        [&json!("Permitted"), &json!("Permitted"), &json!("Rejected")]
    );
    assert!(put.body["entities"][2]["rejectionReason"].is_string());

    let (mut ws, _) = tokio_tungstenite::connect_async(uri.as_str()).await?;
    assert_eq!(sim.connected_sockets(), 1);

    let with_intent = sim.create_conversation(spec(QUEUE, Some("CancelSubscription"), None));
    let no_intent = sim.create_conversation(spec(QUEUE, None, None));
    let with_agent = sim.create_conversation(spec(QUEUE, Some("TalkToAgent"), Some(AGENT)));
    let unwatched = sim.create_conversation(spec(OTHER_QUEUE, Some("Goodbye"), None));
    ws.send(Message::Text(r#"{"message":"ping"}"#.into()))
        .await?;
    sim.customer_leaves(&with_intent);
    let patch = api.call("PATCH", &conv_path(&no_intent), DISCONNECT).await;
    assert_eq!(
        (patch.status, &patch.body["state"]),
        (200, &json!("disconnected"))
    );
    no_errors(schemas.rest_errors("Conversation", &patch.body));
    assert_millis_z(&patch.body);

    let mut got = Vec::new();
    read_until(&mut ws, &mut got, |fs| {
        let msg = |m: &str| fs.iter().any(|f| f["eventBody"]["message"] == m);
        let closed = |id: &str| frames_of(fs, id).iter().any(|f| all_ended(f));
        msg("pong") && msg("WebSocket Heartbeat") && closed(&with_intent) && closed(&no_intent)
    })
    .await;
    for f in &got {
        no_errors(schemas.frame_errors(f));
        assert_millis_z(f);
    }
    // The bot's intent is a customer attribute; no intent means no attribute.
    let first = frames_of(&got, &with_intent)[0];
    assert_eq!(
        (&first["topicName"], &first["version"]),
        (&json!(queue_topic(QUEUE)), &json!("2"))
    );
    assert_eq!(
        participant(first, "customer")["attributes"]["Bot.Intent"],
        "CancelSubscription"
    );
    assert_eq!(participant(first, "customer")["state"], "connected");
    assert_eq!(participant(first, "workflow")["disconnectType"], "transfer");
    assert_eq!(participant(first, "acd")["queue"]["id"], QUEUE);
    let silent = participant(frames_of(&got, &no_intent)[0], "customer");
    assert!(silent["attributes"].get("Bot.Intent").is_none(), "{silent}");
    // The guest left: every participant ended, the customer as "client".
    let left = frames_of(&got, &with_intent)
        .into_iter()
        .find(|f| all_ended(f))
        .ok_or("no closed frame")?;
    assert_eq!(participant(left, "customer")["disconnectType"], "client");
    // An agent's conversation goes to the queue topic and to the agent's user topic.
    let agent_frames = frames_of(&got, &with_agent);
    let topics: Vec<&Value> = agent_frames.iter().map(|f| &f["topicName"]).collect();
    let user_topic = format!("v2.users.{AGENT}.conversations.messages");
    assert_eq!(topics, [&json!(queue_topic(QUEUE)), &json!(user_topic)]);
    assert_eq!(participant(agent_frames[0], "agent")["user"]["id"], AGENT);
    assert!(
        frames_of(&got, &unwatched).is_empty(),
        "an unsubscribed queue reached the socket"
    );

    assert_eq!(sim.is_closed(&with_intent), Some(true));
    assert_eq!(sim.is_closed(&no_intent), Some(true));
    assert_eq!(sim.is_closed(&with_agent), Some(false));
    assert_eq!(sim.is_closed("no-such-conversation"), None);

    // The log has every frame, the unsubscribed one too, and all validate.
    let pushed = sim.pushed_frames();
    assert_eq!(frames_of(&pushed, &unwatched).len(), 1);
    pushed
        .iter()
        .for_each(|f| no_errors(schemas.frame_errors(f)));

    let get = api.call("GET", &conv_path(&with_agent), "").await;
    assert_eq!(get.status, 200);
    no_errors(schemas.rest_errors("MessageConversation", &get.body));
    assert_millis_z(&get.body);
    assert_eq!(get.body["participants"].as_array().map(Vec::len), Some(4));

    sim.send_socket_closing();
    let mut more = Vec::new();
    let is_closing = |f: &Value| f["topicName"] == "v2.system.socket_closing";
    read_until(&mut ws, &mut more, |fs| fs.iter().any(is_closing)).await;
    let closing = more
        .into_iter()
        .find(is_closing)
        .ok_or("no socket_closing")?;
    assert_eq!(
        (&closing["version"], &closing["eventBody"]["message"]),
        (&json!("2"), &json!("Socket closing for maintenance"))
    );
    assert!(closing["metadata"]["CorrelationId"].is_string());
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn rest_errors_are_error_bodies_and_are_logged() -> TestResult {
    let schemas = Schemas::load();
    let sim = sim::start(SimConfig::default()).await?;
    let api = Api::login(&sim).await?;
    let conv = sim.create_conversation(spec(QUEUE, Some("Goodbye"), None));
    let path = conv_path(&conv);

    let no_bearer = api.send("GET", &path, "", true).await;
    let b = &no_bearer.body;
    assert_eq!(
        (no_bearer.status, &b["code"], &b["status"]),
        (401, &json!("bad.credentials"), &json!(401))
    );
    assert!(b["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert_eq!((&b["details"], &b["errors"]), (&json!([]), &json!([])));
    assert_eq!(b["contextId"].as_str(), no_bearer.correlation.as_deref());
    no_errors(schemas.rest_errors("ErrorBody", b));

    let unknown = api.call("GET", "/api/v2/nowhere", "").await;
    assert_eq!(
        (unknown.status, &unknown.body["code"]),
        (404, &json!("not.found"))
    );
    let wrong_method = api.call("DELETE", &path, "").await;
    assert_eq!(
        (wrong_method.status, &wrong_method.body["code"]),
        (404, &json!("not.found"))
    );

    let closed = api.call("PATCH", &path, r#"{"state":"closed"}"#).await;
    assert_eq!(
        (closed.status, &closed.body["code"]),
        (400, &json!("bad.request"))
    );
    assert!(
        closed.body["message"]
            .as_str()
            .is_some_and(|m| m.contains("state")),
        "{}",
        closed.body
    );
    assert_eq!(closed.body["details"][0]["fieldName"], "state");
    no_errors(schemas.rest_errors("ErrorBody", &closed.body));
    assert_eq!(
        api.call("PATCH", &path, "state=disconnected").await.status,
        400
    );
    assert_eq!(
        api.call("PATCH", &conv_path("nope"), DISCONNECT)
            .await
            .status,
        404
    );
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(
        sim.is_closed(&conv),
        Some(false),
        "a refused PATCH must not close"
    );

    let (status, body) = api.grant("wrong", "client_credentials").await;
    assert_eq!((status, &body["error"]), (401, &json!("invalid_client")));
    let (status, body) = api.grant("sim-secret", "password").await;
    assert_eq!(
        (status, &body["error"]),
        (400, &json!("unsupported_grant_type"))
    );
    sim.revoke_tokens();
    assert_eq!(api.call("GET", &path, "").await.status, 401);

    let log = sim.requests();
    let summary: Vec<_> = log
        .iter()
        .map(|r| {
            (
                r.method.as_str(),
                r.path.as_str(),
                r.auth_scheme.as_deref(),
                r.status,
            )
        })
        .collect();
    let p = path.as_str();
    #[rustfmt::skip]
    let expected = [
        ("POST", "/oauth/token", Some("Basic"), 200),
        ("GET", p, None, 401),
        ("GET", "/api/v2/nowhere", Some("Bearer"), 404),
        ("DELETE", p, Some("Bearer"), 404),
        ("PATCH", p, Some("Bearer"), 400),
        ("PATCH", p, Some("Bearer"), 400),
        ("PATCH", "/api/v2/conversations/messages/nope", Some("Bearer"), 404),
        ("POST", "/oauth/token", Some("Basic"), 401),
        ("POST", "/oauth/token", Some("Basic"), 400),
        ("GET", p, Some("Bearer"), 401),
    ];
    assert_eq!(summary, expected);
    assert_eq!(
        (log[0].body.as_str(), log[4].body.as_str()),
        ("grant_type=client_credentials", r#"{"state":"closed"}"#)
    );
    let dump = format!("{log:?}");
    assert!(
        !dump.contains("sim-secret") && !dump.contains(&api.token),
        "secrets in the request log"
    );
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn disconnects_teardown_and_faults() -> TestResult {
    let faults = Faults {
        ignore_disconnect: true,
        ..Faults::default()
    };
    let sim = sim::start(SimConfig {
        faults,
        ..SimConfig::default()
    })
    .await?;
    let api = Api::login(&sim).await?;

    // Ignored disconnect: answered 200, but nothing ends and no frame follows.
    let stubborn = sim.create_conversation(spec(QUEUE, Some("Goodbye"), None));
    let frames_before = sim.pushed_frames().len();
    assert_eq!(
        api.call("PATCH", &conv_path(&stubborn), DISCONNECT)
            .await
            .status,
        200
    );
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert_eq!(sim.is_closed(&stubborn), Some(false));
    assert_eq!(sim.pushed_frames().len(), frames_before);
    // The teardown is the escalation that works.
    let td = api
        .call(
            "POST",
            &format!("/api/v2/conversations/{stubborn}/disconnect"),
            "",
        )
        .await;
    assert_eq!((td.status, td.body), (202, json!("accepted")));
    wait_for("teardown", || sim.is_closed(&stubborn) == Some(true)).await;
    let last = sim.pushed_frames().pop().ok_or("no frame")?;
    assert!(all_ended(&last));
    assert_eq!(participant(&last, "customer")["disconnectType"], "system");

    // Participant PATCH: the agent alone leaves; the customer ends everything.
    sim.set_faults(Faults::default());
    let conv = sim.create_conversation(spec(QUEUE, None, Some(AGENT)));
    let rest = api.call("GET", &conv_path(&conv), "").await.body;
    let part_path = |purpose: &str| {
        format!(
            "{}/participants/{}",
            conv_path(&conv),
            participant(&rest, purpose)["id"].as_str().unwrap_or("")
        )
    };
    assert_eq!(
        api.call("PATCH", &part_path("agent"), r#"{"state":"closed"}"#)
            .await
            .status,
        400
    );
    let accepted = api.call("PATCH", &part_path("agent"), DISCONNECT).await;
    assert_eq!((accepted.status, accepted.body), (202, Value::Null));
    let agent_gone = || {
        sim.pushed_frames()
            .last()
            .is_some_and(|f| participant(f, "agent")["state"] == "disconnected")
    };
    wait_for("agent frame", agent_gone).await;
    assert_eq!(sim.is_closed(&conv), Some(false));
    let nobody = format!("{}/participants/nobody", conv_path(&conv));
    assert_eq!(api.call("PATCH", &nobody, "{}").await.status, 404);
    assert_eq!(
        api.call("PATCH", &part_path("customer"), DISCONNECT)
            .await
            .status,
        202
    );
    wait_for("customer disconnect", || sim.is_closed(&conv) == Some(true)).await;
    let n = sim.pushed_frames().len();
    assert_eq!(
        api.call("PATCH", &conv_path(&conv), DISCONNECT)
            .await
            .status,
        200
    );
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(
        sim.pushed_frames().len(),
        n,
        "closing a closed conversation pushes nothing"
    );
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn sockets_reconnect_and_subscriptions_are_limited() -> TestResult {
    let sim = sim::start(SimConfig::default()).await?;
    let api = Api::login(&sim).await?;
    let ch = api
        .call("POST", "/api/v2/notifications/channels", "")
        .await
        .body;
    let (id, uri) = (
        ch["id"].as_str().ok_or("no id")?,
        ch["connectUri"].as_str().ok_or("no uri")?,
    );
    let subs = format!("/api/v2/notifications/channels/{id}/subscriptions");
    let topic = |i: usize| json!({ "id": format!("v2.users.u{i}.conversations.messages") });
    let too_many = Value::Array((0..1001).map(topic).collect()).to_string();
    let refused = api.call("PUT", &subs, &too_many).await;
    assert_eq!(
        (refused.status, &refused.body["details"][0]["fieldName"]),
        (400, &json!("topics"))
    );
    assert_eq!(api.call("POST", &subs, r#"{"id":"x"}"#).await.status, 400);
    let one = json!([{ "id": queue_topic(QUEUE) }]).to_string();
    assert_eq!(
        api.call("POST", &format!("{subs}?ignoreErrors=true"), &one)
            .await
            .status,
        200
    );
    let listed = api.call("GET", &subs, "").await.body;
    assert_eq!(
        listed["entities"],
        json!([{ "id": queue_topic(QUEUE), "state": "Permitted" }])
    );
    let head = |c: &str| format!("/api/v2/notifications/channels/{c}");
    assert_eq!(api.call("HEAD", &head(id), "").await.status, 200);
    assert_eq!(
        api.call("HEAD", &head("streaming-0-none"), "").await.status,
        404
    );
    let nowhere = format!("ws://{}/channels/streaming-0-none", sim.addr());
    assert!(tokio_tungstenite::connect_async(nowhere).await.is_err());

    // Dropped sockets end abruptly; the same connectUri works again with its subscriptions.
    let (mut first, _) = tokio_tungstenite::connect_async(uri).await?;
    sim.drop_sockets();
    let ended = timeout(Duration::from_secs(2), first.next()).await?;
    assert!(!matches!(ended, Some(Ok(Message::Text(_)))), "{ended:?}");
    wait_for("socket gone", || sim.connected_sockets() == 0).await;
    let (mut second, _) = tokio_tungstenite::connect_async(uri).await?;
    // A second connection to the channel replaces the first.
    let (mut third, _) = tokio_tungstenite::connect_async(uri).await?;
    let replaced = timeout(Duration::from_secs(2), second.next()).await?;
    assert!(
        !matches!(replaced, Some(Ok(Message::Text(_)))),
        "{replaced:?}"
    );
    assert_eq!(sim.connected_sockets(), 1);
    let conv = sim.create_conversation(spec(QUEUE, None, None));
    let mut got = Vec::new();
    read_until(&mut third, &mut got, |fs| !fs.is_empty()).await;
    assert_eq!(got[0]["eventBody"]["id"], conv.as_str());

    // Generator: a fixed number of conversations, each left by its guest.
    let generator = sim.spawn_generator(GeneratorConfig {
        total: Some(5),
        rate_per_sec: 500.0,
        queue_ids: vec![OTHER_QUEUE.into()],
        intent_attribute: "Bot.Intent".into(),
        intents: vec![Some("Goodbye".into()), None],
        customer_leaves_after: Duration::from_millis(30),
    });
    timeout(Duration::from_secs(2), generator).await??;
    let pushed = sim.pushed_frames();
    let generated: Vec<&Value> = pushed
        .iter()
        .filter(|f| f["topicName"] == queue_topic(OTHER_QUEUE))
        .collect();
    assert_eq!(generated.len(), 10, "5 opening and 5 closing frames");
    assert_eq!(generated.iter().filter(|f| all_ended(f)).count(), 5);

    let addr = sim.addr();
    sim.shutdown().await;
    assert!(
        std::net::TcpListener::bind(addr).is_ok(),
        "port still held after shutdown"
    );
    Ok(())
}

/// What the data-action endpoint received: `(Authorization, Content-Type, body)`.
type Hooked = std::sync::Arc<std::sync::Mutex<Vec<(Option<String>, Option<String>, Value)>>>;

/// A stand-in for the daemon's intake endpoint on loopback: records each POST to
/// `/v1/intents` and answers 200. Returns its URL, the record and the server task.
async fn start_hook()
-> Result<(String, Hooked, tokio::task::JoinHandle<()>), Box<dyn std::error::Error>> {
    let hooked = Hooked::default();
    let store = hooked.clone();
    let header = |h: &axum::http::HeaderMap, name: &str| {
        h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
    };
    let handler = move |h: axum::http::HeaderMap, body: axum::body::Bytes| {
        let entry = (
            header(&h, "authorization"),
            header(&h, "content-type"),
            serde_json::from_slice(&body).unwrap_or(Value::Null),
        );
        store.lock().unwrap_or_else(|e| e.into_inner()).push(entry);
        async { axum::http::StatusCode::OK }
    };
    let app = axum::Router::new().route("/v1/intents", axum::routing::post(handler));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/v1/intents", listener.local_addr()?);
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((url, hooked, server))
}

fn hooked_now(h: &Hooked) -> Vec<(Option<String>, Option<String>, Value)> {
    h.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

fn detail_topic(conversation: &str, suffix: &str) -> String {
    format!("v2.detail.events.conversation.{conversation}.{suffix}")
}

fn bot_spec(purpose: BotPurpose, intent: &str, after_ms: u64) -> BotConversationSpec {
    BotConversationSpec {
        flow_id: FLOW.into(),
        purpose,
        intent_attribute: "Bot.Intent".into(),
        intent: Some(intent.into()),
        intent_after: Duration::from_millis(after_ms),
        transfer: None,
        post_on_start: false,
        post_on_intent: false,
    }
}

const FLOW: &str = "a3c9e5f1-8b27-4d60-9e4a-2f7b1c6d8e93";

#[tokio::test]
async fn bot_phase_frames_match_the_schemas_and_reach_only_subscribers() -> TestResult {
    let refused = "v2.detail.events.conversation.{id}.flow.start";
    let schemas = Schemas::load();
    let (hook_url, hooked, hook) = start_hook().await?;
    let cfg = SimConfig {
        flow_metrics: FlowMetricsMode::AtStart,
        data_action: Some(DataAction {
            url: hook_url,
            authorization: Some("Bearer hook-token".into()),
        }),
        refused_transports: vec![refused.into()],
        ..SimConfig::default()
    };
    assert!(
        !format!("{cfg:?}").contains("hook-token"),
        "credential in Debug"
    );
    let sim = sim::start(cfg).await?;
    let api = Api::login(&sim).await?;

    // Discovery: every family the daemon may use, the refused one EventBridge-only.
    let expand = "description,transports,requiresPermissions,topicParameters,visibility";
    let listing = api
        .call(
            "GET",
            &format!("/api/v2/notifications/availabletopics?expand={expand}"),
            "",
        )
        .await;
    assert_eq!(listing.status, 200);
    no_errors(schemas.rest_errors("AvailableTopicEntityListing", &listing.body));
    let entities = listing.body["entities"].as_array().ok_or("no entities")?;
    let find = |id: &str| entities.iter().find(|e| e["id"] == id);
    let mut families: Vec<String> = DETAIL_SCHEMAS
        .iter()
        .chain(&[("user.start", ""), ("user.end", "")])
        .map(|(suffix, _)| format!("v2.detail.events.conversation.{{id}}.{suffix}"))
        .collect();
    families.extend([
        "v2.routing.queues.{id}.conversations.messages".to_owned(),
        "v2.users.{id}.conversations.messages".to_owned(),
        "v2.analytics.flow.{id}.metrics".to_owned(),
    ]);
    for family in &families {
        let e = find(family).ok_or_else(|| format!("{family} not listed"))?;
        let transports = if family == refused {
            "EventBridge"
        } else {
            "All"
        };
        assert_eq!(
            (&e["transports"], &e["topicParameters"], &e["visibility"]),
            (&json!([transports]), &json!(["id"]), &json!("Public")),
            "{family}"
        );
        assert!(e["description"].is_string() && e["requiresPermissions"].is_array());
    }

    // The flow-metrics and queue topics can be subscribed before any conversation exists.
    let ch = api
        .call("POST", "/api/v2/notifications/channels", "")
        .await
        .body;
    let channel_id = ch["id"].as_str().ok_or("no channel id")?.to_owned();
    let uri = ch["connectUri"].as_str().ok_or("no connectUri")?.to_owned();
    let subs = format!("/api/v2/notifications/channels/{channel_id}/subscriptions");
    let metrics_topic = format!("v2.analytics.flow.{FLOW}.metrics");
    let initial = json!([{ "id": metrics_topic }, { "id": queue_topic(QUEUE) }]);
    assert_eq!(
        api.call("PUT", &subs, &initial.to_string()).await.status,
        200
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(uri.as_str()).await?;

    // A: stays with the bot, tells the data action twice, is closed by PATCH.
    let a = sim.create_bot_conversation(BotConversationSpec {
        post_on_start: true,
        post_on_intent: true,
        ..bot_spec(BotPurpose::Workflow, "CancelSubscription", 200)
    });
    // Its detail topics, as a daemon subscribes once it learnt the id (its start
    // events are gone by then); the refused family comes back Rejected.
    let a_topics: Vec<Value> = ["attributes", "customer.end", "flow.end", "flow.start"]
        .iter()
        .map(|s| json!({ "id": detail_topic(&a, s) }))
        .collect();
    let added = api
        .call("POST", &subs, &Value::Array(a_topics).to_string())
        .await;
    assert_eq!(added.status, 200);
    no_errors(schemas.rest_errors("ChannelTopicEntityListing", &added.body));
    let states: Vec<&Value> = added.body["entities"]
        .as_array()
        .ok_or("no entities")?
        .iter()
        .map(|e| &e["state"])
        .collect();
    assert_eq!(states, ["Permitted", "Permitted", "Permitted", "Rejected"]);
    assert!(added.body["entities"][3]["rejectionReason"].is_string());
    assert_eq!(sim.channel_topic_counts(), [(channel_id.clone(), 5)]);
    let listed = sim.channel_topics(&channel_id).ok_or("no channel")?;
    assert!(listed.contains(&detail_topic(&a, "customer.end")));
    assert!(!listed.contains(&detail_topic(&a, "flow.start")));

    // B: a `botflow` that transfers to the queue; nobody subscribes to its detail topics.
    let b = sim.create_bot_conversation(BotConversationSpec {
        transfer: Some((QUEUE.into(), Duration::from_millis(50))),
        ..bot_spec(BotPurpose::Botflow, "TalkToAgent", 50)
    });

    let mut got = Vec::new();
    read_until(&mut ws, &mut got, |fs| {
        let started = |c: &str| {
            fs.iter()
                .any(|f| f["topicName"] == metrics_topic && f["eventBody"]["conversationId"] == c)
        };
        let attrs = fs
            .iter()
            .any(|f| f["topicName"] == detail_topic(&a, "attributes"));
        started(&a) && started(&b) && attrs && !frames_of(fs, &b).is_empty()
    })
    .await;
    let by_topic = |fs: &[Value], t: &str| fs.iter().find(|f| f["topicName"] == t).cloned();
    let attrs = by_topic(&got, &detail_topic(&a, "attributes")).ok_or("no attributes")?;
    assert_eq!(
        attrs["eventBody"]["attributes"]["Bot.Intent"],
        "CancelSubscription"
    );
    assert_eq!(
        attrs["eventBody"]["communications"][0]["mediaType"],
        "MESSAGE"
    );
    let metric_purpose = |c: &str| {
        got.iter()
            .find(|f| f["eventBody"]["conversationId"] == c && f["topicName"] == metrics_topic)
            .map(|f| {
                (
                    f["eventBody"]["metric"].clone(),
                    f["eventBody"]["purpose"].clone(),
                )
            })
    };
    assert_eq!(
        metric_purpose(&a),
        Some((json!("nFlow"), json!("workflow")))
    );
    assert_eq!(metric_purpose(&b), Some((json!("nFlow"), json!("botflow"))));
    let queued = frames_of(&got, &b)[0];
    assert_eq!(participant(queued, "acd")["queue"]["id"], QUEUE);
    assert_eq!(participant(queued, "botflow")["disconnectType"], "transfer");
    assert_eq!(
        participant(queued, "customer")["attributes"]["Bot.Intent"],
        "TalkToAgent"
    );

    // REST: the bot phase and after the transfer, both `MessageConversation`s.
    let rest_a = api.call("GET", &conv_path(&a), "").await;
    assert_eq!(rest_a.status, 200);
    no_errors(schemas.rest_errors("MessageConversation", &rest_a.body));
    assert_millis_z(&rest_a.body);
    let customer = participant(&rest_a.body, "customer");
    assert_eq!(customer["attributes"]["Bot.Intent"], "CancelSubscription");
    assert_eq!(customer["id"], attrs["eventBody"]["participantId"]);
    assert_eq!(participant(&rest_a.body, "workflow")["state"], "connected");
    assert_eq!(
        rest_a.body["participants"].as_array().map(Vec::len),
        Some(2)
    );
    let rest_b = api.call("GET", &conv_path(&b), "").await;
    no_errors(schemas.rest_errors("MessageConversation", &rest_b.body));
    assert_eq!(
        rest_b.body["participants"].as_array().map(Vec::len),
        Some(3)
    );

    // Closing A by PATCH: `.customer.end` and `.flow.end` arrive; a second PATCH adds nothing.
    let patch = api.call("PATCH", &conv_path(&a), DISCONNECT).await;
    assert_eq!(patch.status, 200);
    let (a_cust_end, a_flow_end) = (
        detail_topic(&a, "customer.end"),
        detail_topic(&a, "flow.end"),
    );
    read_until(&mut ws, &mut got, |fs| {
        by_topic(fs, &a_cust_end).is_some() && by_topic(fs, &a_flow_end).is_some()
    })
    .await;
    let cust_end = by_topic(&got, &a_cust_end).ok_or("no customer.end")?;
    assert_eq!(
        (
            &cust_end["eventBody"]["participantId"],
            &cust_end["eventBody"]["disconnectType"]
        ),
        (&customer["id"], &json!("PEER"))
    );
    let flow_end = by_topic(&got, &a_flow_end).ok_or("no flow.end")?;
    assert_eq!(flow_end["eventBody"]["exitReason"], "DISCONNECT");
    assert_eq!(sim.is_closed(&a), Some(true));
    let n = sim.pushed_frames().len();
    assert_eq!(
        api.call("PATCH", &conv_path(&a), DISCONNECT).await.status,
        200
    );
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(sim.pushed_frames().len(), n, "a second close pushed frames");

    // The guest of B leaves: the queue topic shows it; its detail events stay unseen.
    sim.customer_leaves(&b);
    read_until(&mut ws, &mut got, |fs| {
        frames_of(fs, &b).iter().any(|f| all_ended(f))
    })
    .await;
    for f in &got {
        no_errors(schemas.frame_errors(f));
        assert_millis_z(f);
    }
    let detail_seen = got.iter().filter(|f| {
        f["topicName"]
            .as_str()
            .is_some_and(|t| t.starts_with("v2.detail."))
    });
    for f in detail_seen {
        assert_eq!(f["eventBody"]["conversationId"], a.as_str(), "{f}");
        assert_ne!(
            f["topicName"],
            detail_topic(&a, "flow.start"),
            "refused topic delivered"
        );
    }
    // ...but they were published, and every frame in the log validates.
    let pushed = sim.pushed_frames();
    for f in &pushed {
        no_errors(schemas.frame_errors(f));
        assert_millis_z(f);
    }
    for suffix in DETAIL_SCHEMAS.map(|(s, _)| s) {
        let t = detail_topic(&b, suffix);
        assert!(by_topic(&pushed, &t).is_some(), "{t} never published");
    }
    let b_flow_end = by_topic(&pushed, &detail_topic(&b, "flow.end")).ok_or("no flow.end")?;
    assert_eq!(
        (
            &b_flow_end["eventBody"]["exitReason"],
            &b_flow_end["eventBody"]["transferType"]
        ),
        (&json!("TRANSFER"), &json!("ACD"))
    );

    // The data action got the trigger's and the flow's POST shapes, with the header;
    // the trigger's workflow passes on its event's `eventTime`.
    wait_for("two data-action POSTs", || hooked_now(&hooked).len() == 2).await;
    let auth = Some("Bearer hook-token".to_owned());
    let ct = Some("application/json".to_owned());
    let started = sim
        .pushed_frames()
        .into_iter()
        .find(|f| f["topicName"] == detail_topic(&a, "customer.start"))
        .map(|f| f["eventBody"]["eventTime"].clone())
        .ok_or("no customer.start")?;
    assert!(started.is_u64(), "{started}");
    assert_eq!(
        hooked_now(&hooked),
        [
            (
                auth.clone(),
                ct.clone(),
                json!({ "conversationId": a, "eventTime": started })
            ),
            (
                auth,
                ct,
                json!({ "conversationId": a, "intent": "CancelSubscription" })
            ),
        ]
    );
    let log = sim.data_action_log();
    assert_eq!(log.len(), 2);
    assert!(
        log.iter()
            .all(|c| c.status == 200 && c.conversation_id == a)
    );
    // Switched off at runtime: a start trigger posts nothing; `set_intent` still works.
    sim.set_data_action(None);
    let c = sim.create_bot_conversation(BotConversationSpec {
        intent: None,
        post_on_start: true,
        post_on_intent: true,
        ..bot_spec(BotPurpose::Workflow, "", 0)
    });
    sim.set_intent(&c, "Goodbye");
    let rest_c = api.call("GET", &conv_path(&c), "").await.body;
    assert_eq!(
        participant(&rest_c, "customer")["attributes"]["Bot.Intent"],
        "Goodbye"
    );
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(
        (sim.data_action_log().len(), hooked_now(&hooked).len()),
        (2, 2)
    );

    // Expired channels: `{"result":"404"}`, then the socket ends; REST answers 404.
    sim.expire_channels();
    let mut texts = Vec::new();
    let ended = loop {
        match timeout(Duration::from_secs(2), ws.next()).await? {
            Some(Ok(Message::Text(t))) => texts.push(t.to_string()),
            other => break other,
        }
    };
    assert_eq!(
        texts.last().map(String::as_str),
        Some(r#"{"result":"404"}"#)
    );
    assert!(!matches!(ended, Some(Ok(Message::Close(_)))), "{ended:?}");
    let head = format!("/api/v2/notifications/channels/{channel_id}");
    assert_eq!(api.call("HEAD", &head, "").await.status, 404);
    assert_eq!(api.call("GET", &subs, "").await.status, 404);
    assert!(sim.channel_topic_counts().is_empty());
    assert_eq!(sim.channel_topics(&channel_id), None);

    sim.shutdown().await;
    hook.abort();
    Ok(())
}

#[test]
fn the_validators_check_formats_and_closed_shapes() {
    let schemas = Schemas::load();
    for example in [
        "01-queue-bot-handled-intent-attributes.json",
        "02-user-agent-connected.json",
        "03-queue-fully-disconnected.json",
        "heartbeat.json",
        "bot-phase/04-flow-metrics-bot-flow-started.json",
        "bot-phase/05-detail-attributes-bot-intent.json",
        "bot-phase/06-detail-customer-end-after-close.json",
    ] {
        no_errors(schemas.frame_errors(&read_json(&format!("events/{example}"))));
    }
    // Without format checking a bad date-time would pass; without closed shapes, an extra field.
    let mut bad_time = read_json("events/01-queue-bot-handled-intent-attributes.json");
    bad_time["eventBody"]["participants"][0]["startTime"] = json!("yesterday");
    assert_eq!(schemas.frame_errors(&bad_time).len(), 1);
    let mut extra = read_json("events/01-queue-bot-handled-intent-attributes.json");
    extra["eventBody"]["state"] = json!("disconnected");
    assert_eq!(schemas.frame_errors(&extra).len(), 1);
    let invented = json!({ "id": "c", "state": "closed", "closedBy": "agent" });
    assert!(
        !schemas
            .rest_errors("MessageConversation", &invented)
            .is_empty()
    );
}
