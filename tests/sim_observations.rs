//! The simulator's `POST /api/v2/analytics/queues/observations/query`: it lists the
//! conversations of its own world that are in a queue now (`oWaiting`: no agent yet;
//! `oInteracting`: with an agent), never closed or bot-phase ones; its answers validate
//! against `QueueObservationQueryResponse` of the OpenAPI subset (closed shapes); bad
//! bodies get a 400 `ErrorBody` naming the field; auth, REST faults and the org's rate
//! limit apply as on every other endpoint. Real clock, loopback only.

#[path = "common/ids.rs"]
mod ids;

use std::collections::BTreeSet;
use std::time::Duration;

use genesys_sim::{
    self as sim, BotConversationSpec, BotPurpose, ConversationSpec, SimConfig, SimHandle,
};
use ids::QUEUE as Q1;
use jsonschema::{Draft, Validator};
use serde_json::{Value, json};

const GENESYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/genesys");
const QUERY: &str = "/api/v2/analytics/queues/observations/query";
const Q2: &str = "0c9a5d3e-6b1f-4e28-9a7d-2f5c8e1b4d60";
const AGENT: &str = "1d7c4e92-8a5b-4c3f-b6e0-f93a2d5c7e18";

/// The OpenAPI subset with every object definition closed, so an invented field fails.
fn openapi() -> Value {
    let path = format!("{GENESYS}/openapi-subset.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    let mut v: Value = serde_json::from_str(&text).expect("JSON");
    let defs = v["definitions"].as_object_mut().expect("definitions");
    for def in defs.values_mut().filter_map(Value::as_object_mut) {
        if def.contains_key("properties") && !def.contains_key("additionalProperties") {
            def.insert("additionalProperties".into(), json!(false));
        }
    }
    v
}

/// A validator for one definition (Swagger 2.0 ~ draft 4), `date-time` checked.
fn schema(openapi: &Value, def: &str) -> Validator {
    let s =
        json!({ "$ref": format!("#/definitions/{def}"), "definitions": openapi["definitions"] });
    jsonschema::options()
        .with_draft(Draft::Draft4)
        .should_validate_formats(true)
        .build(&s)
        .unwrap_or_else(|e| panic!("compile {def}: {e}"))
}

fn assert_valid(v: &Validator, def: &str, body: &Value) {
    let errors: Vec<String> = v
        .iter_errors(body)
        .map(|e| format!("{def}: {e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}\n{body:#}");
}

struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    async fn login(sim: &SimHandle) -> Api {
        genesys_closer::install_crypto_provider();
        let http = reqwest::Client::new();
        let base = sim.base_url();
        let resp = http
            .post(format!("{base}/oauth/token"))
            .basic_auth("5e1f0c1e-51a0-4c1e-8e57-0000000c11e7", Some("sim-secret"))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .expect("token request");
        let body: Value = resp.json().await.expect("token JSON");
        let token = body["access_token"].as_str().expect("token").to_owned();
        Api { http, base, token }
    }

    /// Posts `body` (raw text) to the query endpoint; status and JSON answer.
    async fn query_raw(&self, body: &str, auth: bool) -> (u16, Value) {
        let mut req = self
            .http
            .post(format!("{}{QUERY}", self.base))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if auth {
            req = req.bearer_auth(&self.token);
        }
        let resp = req.send().await.expect("answer");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn query(&self, body: &Value) -> (u16, Value) {
        self.query_raw(&body.to_string(), true).await
    }
}

/// The body the daemon is expected to send: every watched queue, both metrics, with
/// details.
fn body_for(queues: &[&str]) -> Value {
    let predicates: Vec<Value> = queues
        .iter()
        .map(|q| json!({ "type": "dimension", "dimension": "queueId", "operator": "matches", "value": q }))
        .collect();
    json!({
        "filter": { "type": "or", "predicates": predicates },
        "metrics": ["oWaiting", "oInteracting"],
        "detailMetrics": ["oWaiting", "oInteracting"],
    })
}

fn queue_conv(sim: &SimHandle, queue: &str, agent: Option<&str>) -> String {
    sim.create_conversation(ConversationSpec {
        queue_id: queue.into(),
        intent_attribute: "Bot.Intent".into(),
        intent: Some("Goodbye".into()),
        agent_user_id: agent.map(str::to_owned),
    })
}

fn bot_conv(sim: &SimHandle, transfer_to: Option<&str>) -> String {
    sim.create_bot_conversation(BotConversationSpec {
        flow_id: "a3c9e5f1-8b27-4d60-9e4a-2f7b1c6d8e93".into(),
        purpose: BotPurpose::Workflow,
        intent_attribute: "Bot.Intent".into(),
        intent: Some("Goodbye".into()),
        intent_after: Duration::from_millis(5),
        transfer: transfer_to.map(|q| (q.to_owned(), Duration::from_millis(5))),
        post_on_start: false,
        post_on_intent: false,
    })
}

/// The data entry for `metric` in the result for `queue`.
fn data<'a>(answer: &'a Value, queue: &str, metric: &str) -> &'a Value {
    let results = answer["results"].as_array().expect("results");
    let group = results
        .iter()
        .find(|r| r["group"]["queueId"] == queue)
        .unwrap_or_else(|| panic!("no group for {queue}: {answer:#}"));
    assert_eq!(group["group"]["mediaType"], "message");
    group["data"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["metric"] == metric))
        .unwrap_or_else(|| panic!("no {metric} for {queue}: {answer:#}"))
}

fn ids(d: &Value) -> BTreeSet<String> {
    d["observations"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|o| o["conversationId"].as_str().expect("id").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn dates(d: &Value) -> Vec<String> {
    d["observations"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|o| o["observationDate"].as_str().expect("date").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn set(v: &[&String]) -> BTreeSet<String> {
    v.iter().map(|s| (*s).clone()).collect()
}

#[tokio::test]
async fn lists_the_conversations_in_each_queue_now() {
    let sim = sim::start(SimConfig::default()).await.expect("sim");
    let api = Api::login(&sim).await;
    let openapi = openapi();
    let response = schema(&openapi, "QueueObservationQueryResponse");
    let request = schema(&openapi, "QueueObservationQuery");
    let error = schema(&openapi, "ErrorBody");

    let w1 = queue_conv(&sim, Q1, None);
    let w2 = queue_conv(&sim, Q1, None);
    let i1 = queue_conv(&sim, Q1, Some(AGENT));
    let closed = queue_conv(&sim, Q1, None);
    sim.customer_leaves(&closed);
    let other = queue_conv(&sim, Q2, None);
    let in_bot = bot_conv(&sim, None);
    let transferred = bot_conv(&sim, Some(Q1));
    tokio::time::sleep(Duration::from_millis(200)).await;

    let body = body_for(&[Q1, Q2]);
    assert_valid(&request, "QueueObservationQuery", &body);
    let (status, answer) = api.query(&body).await;
    assert_eq!(status, 200, "{answer:#}");
    assert_valid(&response, "QueueObservationQueryResponse", &answer);
    let results = answer["results"].as_array().expect("results");
    assert_eq!(results.len(), 2, "one group per queue: {answer:#}");
    assert_eq!(results[0]["group"]["queueId"], Q1, "in the order asked");

    let waiting = data(&answer, Q1, "oWaiting");
    assert_eq!(ids(waiting), set(&[&w1, &w2, &transferred]));
    assert_eq!(waiting["stats"]["count"], 3);
    assert_eq!(waiting["truncated"], false);
    let d = dates(waiting);
    assert!(d.windows(2).all(|w| w[0] <= w[1]), "oldest first: {d:?}");
    for o in waiting["observations"].as_array().expect("list") {
        assert_eq!(o["direction"], "inbound");
        assert!(
            o["sessionId"].is_string() && o.get("userId").is_none(),
            "{o}"
        );
    }
    let interacting = data(&answer, Q1, "oInteracting");
    assert_eq!(ids(interacting), set(&[&i1]));
    assert_eq!(interacting["observations"][0]["userId"], AGENT);
    assert_eq!(ids(data(&answer, Q2, "oWaiting")), set(&[&other]));
    let q2_interacting = data(&answer, Q2, "oInteracting");
    assert_eq!(q2_interacting["stats"]["count"], 0);
    assert!(q2_interacting.get("observations").is_none());
    let everyone = format!("{answer}");
    assert!(
        !everyone.contains(&closed),
        "a closed conversation is in no queue"
    );
    assert!(
        !everyone.contains(&in_bot),
        "a bot-phase conversation is in no queue"
    );

    // Without detailMetrics: counts only. Another metric: a count of 0. One queue,
    // narrowed by a clause on the media type.
    let (status, answer) = api
        .query(&json!({
            "filter": { "type": "and",
                "predicates": [{ "dimension": "queueId", "value": Q1 }],
                "clauses": [{ "type": "or", "predicates": [{ "dimension": "mediaType", "value": "message" }] }] },
            "metrics": ["oWaiting", "oAlerting"],
        }))
        .await;
    assert_eq!(status, 200, "{answer:#}");
    assert_valid(&response, "QueueObservationQueryResponse", &answer);
    assert_eq!(answer["results"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        data(&answer, Q1, "oWaiting"),
        &json!({ "metric": "oWaiting", "stats": { "count": 3 } })
    );
    assert_eq!(data(&answer, Q1, "oAlerting")["stats"]["count"], 0);
    // A media type other than message: no group.
    let (_, answer) = api
        .query(&json!({
            "filter": { "type": "and", "predicates": [
                { "dimension": "queueId", "value": Q1 },
                { "dimension": "mediaType", "value": "voice" }] },
            "metrics": ["oWaiting"],
        }))
        .await;
    assert_eq!(answer, json!({ "results": [] }));

    // Once closed, no longer listed.
    sim.customer_leaves(&w1);
    sim.customer_leaves(&i1);
    let (_, answer) = api.query(&body).await;
    assert_eq!(
        ids(data(&answer, Q1, "oWaiting")),
        set(&[&w2, &transferred])
    );
    assert_eq!(data(&answer, Q1, "oInteracting")["stats"]["count"], 0);

    // Bad bodies: 400, an ErrorBody naming the field.
    let bad = [
        ("{not json", "body"),
        ("[]", "body"),
        (r#"{"metrics":["oWaiting"]}"#, "filter"),
        (
            r#"{"filter":{"predicates":[{"dimension":"queueId","value":"q"}]},"metrics":["oWaiting"]}"#,
            "filter.type",
        ),
        (
            r#"{"filter":{"type":"or","predicates":[{"dimension":"userId","value":"u"}]},"metrics":["oWaiting"]}"#,
            "filter.predicates.dimension",
        ),
        (
            r#"{"filter":{"type":"or","predicates":[{"dimension":"queueId","value":"q"}]}}"#,
            "metrics",
        ),
        (
            r#"{"filter":{"type":"or","predicates":[{"dimension":"queueId","value":"q"}]},"metrics":[]}"#,
            "metrics",
        ),
        (
            r#"{"filter":{"type":"or","predicates":[{"dimension":"queueId","value":"q"}]},"metrics":["oWaiting"],"detailMetrics":"oWaiting"}"#,
            "detailMetrics",
        ),
    ];
    for (text, field) in bad {
        let (status, answer) = api.query_raw(text, true).await;
        assert_eq!(status, 400, "{text}: {answer:#}");
        assert_valid(&error, "ErrorBody", &answer);
        assert_eq!(answer["code"], "bad.request");
        assert_eq!(
            answer["details"][0]["fieldName"], field,
            "{text}: {answer:#}"
        );
    }
    // No token: 401, like every endpoint.
    let (status, answer) = api.query_raw(&body.to_string(), false).await;
    assert_eq!(status, 401);
    assert_valid(&error, "ErrorBody", &answer);

    // Served: 4 (the first, two narrowed ones, the one after the closes); the request
    // log holds every one, with its status.
    assert_eq!(sim.observation_queries(), 4);
    let logged: Vec<u16> = sim
        .requests()
        .iter()
        .filter(|r| r.path == QUERY && r.method == "POST")
        .map(|r| r.status)
        .collect();
    assert_eq!(logged.len(), 4 + bad.len() + 1);
    assert_eq!(logged.iter().filter(|s| **s == 200).count(), 4);

    // REST faults and the org's rate limit answer in its place.
    sim.fail_requests_for(QUERY, 503, Some(1), Duration::from_millis(300));
    let (status, answer) = api.query(&body).await;
    assert_eq!(status, 503);
    assert_valid(&error, "ErrorBody", &answer);
    tokio::time::sleep(Duration::from_millis(350)).await;
    sim.set_rate_limit(Some((1, Duration::from_secs(60))));
    let (first, _) = api.query(&body).await;
    let (second, answer) = api.query(&body).await;
    assert_eq!((first, second), (200, 429), "{answer:#}");
    sim.set_rate_limit(None);
    assert_eq!(sim.observation_queries(), 5);
    sim.shutdown().await;
}

#[tokio::test]
async fn long_lists_keep_the_oldest_and_the_newest() {
    let sim = sim::start(SimConfig {
        observation_cap: 4,
        ..SimConfig::default()
    })
    .await
    .expect("sim");
    let api = Api::login(&sim).await;
    let response = schema(&openapi(), "QueueObservationQueryResponse");
    let mut created = Vec::new();
    for _ in 0..7 {
        created.push(queue_conv(&sim, Q1, None));
        // Distinct observation dates (milliseconds).
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let (status, answer) = api.query(&body_for(&[Q1])).await;
    assert_eq!(status, 200);
    assert_valid(&response, "QueueObservationQueryResponse", &answer);
    let waiting = data(&answer, Q1, "oWaiting");
    assert_eq!(waiting["stats"]["count"], 7);
    assert_eq!(waiting["truncated"], true);
    let listed: Vec<&str> = waiting["observations"]
        .as_array()
        .expect("list")
        .iter()
        .map(|o| o["conversationId"].as_str().expect("id"))
        .collect();
    let want: Vec<&str> = [0, 1, 5, 6].iter().map(|i| created[*i].as_str()).collect();
    assert_eq!(listed, want);
    sim.shutdown().await;
}
