//! Contract: every REST request the daemon sends is validated against
//! ../shared/genesys/openapi-subset.json by an independent validator, Prism, running as a
//! validating proxy in front of the simulator. Prism answers an invalid request itself
//! (422) and does not forward it, so any violation shows up as a failed close or a
//! missing request in the simulator's log. `bash .ci/run` installs Prism; elsewhere set
//! PRISM_BIN to a `prism` executable.

mod common;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use genesys_closer::closer::Outcome;
use genesys_closer::genesys::frames::Source;
use genesys_sim::{DataAction, Faults, RecordedRequest, SimConfig, SimHandle};

struct Prism {
    child: Child,
    url: String,
}

impl Drop for Prism {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn prism_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("PRISM_BIN") {
        return PathBuf::from(p);
    }
    let local = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".ci/node_modules/.bin/prism");
    assert!(
        local.exists(),
        "Prism is not installed: run `bash .ci/run` (it installs @stoplight/prism-cli into .ci/) \
         or set PRISM_BIN"
    );
    local
}

fn spec_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/genesys/openapi-subset.json")
}

async fn start_prism(upstream: &str) -> Prism {
    let spec = spec_path();
    assert!(spec.exists(), "{} missing", spec.display());
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").expect("free port");
        l.local_addr().expect("addr").port()
    };
    let child = Command::new(prism_bin())
        .args(["proxy", "-h", "127.0.0.1", "-p", &port.to_string()])
        .arg(&spec)
        .arg(upstream)
        .arg("--errors")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prism starts");
    let prism = Prism {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    // Prism needs a few seconds to load the spec.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "prism did not start listening"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    prism
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_the_daemon_sends_conforms_to_the_openapi_subset() {
    let sim = start_sim(SimConfig::default()).await;
    let prism = start_prism(&sim.base_url()).await;

    // The validator is live: an invalid subscription body is refused and not forwarded.
    genesys_closer::install_crypto_provider();
    let http = reqwest::Client::new();
    let bad = http
        .put(format!(
            "{}/api/v2/notifications/channels/x/subscriptions?ignoreErrors=maybe",
            prism.url
        ))
        .bearer_auth("t")
        .json(&serde_json::json!({"id": "not-an-array"}))
        .send()
        .await
        .expect("prism answers");
    assert_eq!(
        bad.status().as_u16(),
        422,
        "prism must refuse an invalid request"
    );
    assert!(
        sim.requests()
            .iter()
            .all(|r| r.path != "/api/v2/notifications/channels/x/subscriptions"),
        "an invalid request must not reach the simulator"
    );

    // The token endpoint lives on the login host, outside the subset: straight to the sim.
    let mut d = start_daemon(
        config(&prism.url, &sim.base_url(), "confirm_timeout = \"500ms\""),
        &sim,
    )
    .await;

    // Happy path: PATCH conversation.
    let a = sim.create_conversation(conversation(Some("Goodbye")));
    let r = d.next_report(Duration::from_secs(15)).await;
    assert_eq!(
        (&*r.conversation_id, r.outcome),
        (a.as_str(), Outcome::Confirmed),
        "{r:?}"
    );

    // Escalation path: GET conversation and POST .../disconnect as well.
    sim.set_faults(Faults {
        ignore_disconnect: true,
        ignore_teardown: false,
        ..Faults::default()
    });
    let b = sim.create_conversation(conversation(Some("Goodbye")));
    let r = d.next_report(Duration::from_secs(15)).await;
    assert_eq!(
        (&*r.conversation_id, r.outcome),
        (b.as_str(), Outcome::EscalatedConfirmed),
        "{r:?}"
    );
    d.shutdown().await;

    // Everything the daemon sent to the API reached the simulator through Prism, i.e. it
    // was valid; the simulator recorded no client error for any of it.
    let seen: Vec<String> = sim
        .requests()
        .iter()
        .filter(|q| q.path.starts_with("/api/"))
        .map(|q| format!("{} {} -> {}", q.method, q.path, q.status))
        .collect();
    for op in [
        "POST /api/v2/notifications/channels -> 200".to_string(),
        format!("PATCH /api/v2/conversations/messages/{a} -> 200"),
        format!("PATCH /api/v2/conversations/messages/{b} -> 200"),
        format!("GET /api/v2/conversations/messages/{b} -> 200"),
        format!("POST /api/v2/conversations/{b}/disconnect -> 202"),
    ] {
        assert!(seen.contains(&op), "{op} missing from {seen:#?}");
    }
    assert!(
        seen.iter()
            .any(|s| s.starts_with("PUT /api/v2/notifications/channels/")
                && s.ends_with("/subscriptions -> 200")),
        "{seen:#?}"
    );
    assert!(
        sim.requests()
            .iter()
            .filter(|q| q.path.starts_with("/api/"))
            .all(|q| q.status < 400),
        "{seen:#?}"
    );
    sim.shutdown().await;
}

/// Total topics on every channel of the simulator.
fn topics(sim: &SimHandle) -> usize {
    sim.channel_topic_counts().iter().map(|(_, n)| n).sum()
}

/// The three per-conversation detail topics the bot phase watches.
fn detail_topics(conversation_id: &str) -> [String; 3] {
    ["attributes", "customer.end", "flow.end"]
        .map(|s| format!("v2.detail.events.conversation.{conversation_id}.{s}"))
}

fn is_subscriptions(r: &RecordedRequest, method: &str) -> bool {
    r.method == method
        && r.path.starts_with("/api/v2/notifications/channels/")
        && r.path.ends_with("/subscriptions")
}

/// The `id`s of a subscriptions body (`[{"id": ...}, ...]`), lowercased.
fn body_topics(r: &RecordedRequest) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(&r.body)
        .unwrap_or_else(|e| panic!("subscriptions body is JSON ({e}): {}", r.body));
    v.as_array()
        .unwrap_or_else(|| panic!("subscriptions body is an array: {}", r.body))
        .iter()
        .map(|t| t["id"].as_str().expect("topic id").to_ascii_lowercase())
        .collect()
}

/// The bot phase's calls pass the same validator: the `availabletopics` check at
/// start-up, the batched `POST` adding a conversation's detail topics (flow discovery,
/// and an intake post whose close subscribes its confirming topic first), and the
/// batched `PUT` of the remaining list once a closed conversation's topics go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bot_phase_requests_conform_to_the_openapi_subset() {
    let sim = start_sim(SimConfig::default()).await;
    let prism = start_prism(&sim.base_url()).await;
    let (mut d, intake) =
        start_bot_daemon(bot_config_with(&prism.url, &sim.base_url(), ""), &sim).await;
    sim.set_data_action(Some(DataAction {
        url: intake,
        authorization: Some(format!("Bearer {INTAKE_TOKEN}")),
    }));
    // The queue and the flow-metrics topic, subscribed through Prism.
    wait_for(Duration::from_secs(15), || topics(&sim) == 2).await;
    let baseline = topics(&sim);

    // Flow discovery on the watched flow: POST its detail topics, the intent arrives on
    // `.attributes`, PATCH, `.customer.end` confirms, PUT the remaining list.
    let by_flow = sim.create_bot_conversation(bot(Some("Goodbye"), 800, false, false));
    let r = d.next_report(Duration::from_secs(15)).await;
    assert_eq!(
        (&*r.conversation_id, r.outcome, r.source),
        (by_flow.as_str(), Outcome::Confirmed, Source::Detail),
        "{r:?}"
    );
    wait_for(Duration::from_secs(15), || topics(&sim) == baseline).await;

    // The intake path: a conversation on a flow nobody watches, its intent posted by the
    // flow's data action; the close subscribes its confirming topic urgently first.
    let mut spec = bot(Some("Goodbye"), 50, false, true);
    spec.flow_id = "0b0b0b0b-1111-4222-8333-444455556666".into();
    let by_intake = sim.create_bot_conversation(spec);
    let r = d.next_report(Duration::from_secs(15)).await;
    assert_eq!(
        (&*r.conversation_id, r.outcome, r.source),
        (by_intake.as_str(), Outcome::Confirmed, Source::Intake),
        "{r:?}"
    );
    wait_for(Duration::from_secs(15), || topics(&sim) == baseline).await;
    d.shutdown().await;

    let requests: Vec<RecordedRequest> = sim
        .requests()
        .into_iter()
        .filter(|q| q.path.starts_with("/api/"))
        .collect();
    let seen: Vec<String> = requests
        .iter()
        .map(|q| {
            let query = q
                .query
                .as_deref()
                .map(|s| format!("?{s}"))
                .unwrap_or_default();
            format!("{} {}{query} -> {}", q.method, q.path, q.status)
        })
        .collect();
    let ok = |q: &RecordedRequest| (200..300).contains(&q.status);

    // `GET .../availabletopics` reached the simulator, i.e. Prism passed it, and asked
    // to expand fields the subset's `AvailableTopic` has, one `expand=` each as its
    // `collectionFormat: multi` says (a comma-joined value names no field).
    let available: Vec<&RecordedRequest> = requests
        .iter()
        .filter(|q| q.method == "GET" && q.path == "/api/v2/notifications/availabletopics")
        .collect();
    assert!(
        !available.is_empty() && available.iter().all(|q| ok(q)),
        "GET availabletopics with a 2xx: {seen:#?}"
    );
    let spec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(spec_path()).expect("read the subset"))
            .expect("the subset is JSON");
    let fields = spec["definitions"]["AvailableTopic"]["properties"]
        .as_object()
        .expect("AvailableTopic properties");
    for q in &available {
        let expand: Vec<String> =
            url::form_urlencoded::parse(q.query.as_deref().unwrap_or("").as_bytes())
                .filter(|(k, _)| k == "expand")
                .map(|(_, v)| v.into_owned())
                .collect();
        for wanted in ["transports", "requiresPermissions"] {
            assert!(
                expand.iter().any(|e| e == wanted),
                "expand={wanted} missing: {seen:#?}"
            );
        }
        for e in &expand {
            assert!(
                fields.contains_key(e),
                "expand={e:?} is not an AvailableTopic field: {seen:#?}"
            );
        }
    }

    // Each conversation's three detail topics were added by a POST that passed.
    let posts: Vec<(usize, Vec<String>)> = requests
        .iter()
        .enumerate()
        .filter(|(_, q)| is_subscriptions(q, "POST") && ok(q))
        .map(|(i, q)| (i, body_topics(q)))
        .collect();
    assert!(
        posts.iter().any(|(_, t)| t
            .iter()
            .any(|t| t.starts_with("v2.detail.events.conversation."))),
        "a POST subscriptions with a detail topic: {seen:#?}"
    );
    for id in [&by_flow, &by_intake] {
        let want = detail_topics(id);
        let (at, _) = posts
            .iter()
            .find(|(_, t)| want.iter().all(|w| t.contains(w)))
            .unwrap_or_else(|| panic!("no 2xx POST subscriptions with {want:?}: {seen:#?}"));
        // ... and removed later by a PUT of the remaining list that passed too.
        assert!(
            requests[at + 1..].iter().any(|q| {
                is_subscriptions(q, "PUT")
                    && ok(q)
                    && !body_topics(q).iter().any(|t| t.contains(id.as_str()))
            }),
            "no 2xx PUT subscriptions removing {id} after its POST: {seen:#?}"
        );
    }

    // The close itself.
    for id in [&by_flow, &by_intake] {
        assert!(
            requests.iter().any(|q| q.method == "PATCH"
                && q.path == format!("/api/v2/conversations/messages/{id}")
                && ok(q)),
            "PATCH {id} with a 2xx: {seen:#?}"
        );
    }
    assert!(
        requests.iter().all(|q| q.status < 400),
        "no client or server error: {seen:#?}"
    );
    sim.shutdown().await;
}
