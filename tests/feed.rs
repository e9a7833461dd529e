//! The outcome feed: every final outcome reaches the endpoint (and the file) at least
//! once, with a stable idempotency key, through endpoint failures and across a SIGKILL
//! of the daemon. Loopback only.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use common::{QUEUE, config, conversation, start_daemon, start_sim, wait_for};
use genesys_sim::SimConfig;

#[derive(Default)]
struct Endpoint {
    /// (Idempotency-Key header, body) of every request answered 2xx.
    got: Mutex<Vec<(String, serde_json::Value)>>,
    /// Answer 503 to this many requests first.
    fail_first: AtomicUsize,
}

async fn receive(State(ep): State<Arc<Endpoint>>, headers: HeaderMap, body: String) -> StatusCode {
    if ep
        .fail_first
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    ep.got.lock().expect("lock").push((key, v));
    StatusCode::NO_CONTENT
}

async fn serve(ep: Arc<Endpoint>, addr: SocketAddr) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
    let bound = listener.local_addr().expect("addr");
    let app = Router::new()
        .route("/outcomes", post(receive))
        .with_state(ep);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    bound
}

fn keys_for(ep: &Endpoint, id: &str) -> Vec<String> {
    ep.got
        .lock()
        .expect("lock")
        .iter()
        .filter(|(_, v)| v["conversation_id"] == id)
        .map(|(k, _)| k.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_outcome_reaches_the_endpoint_and_the_file_through_failures() {
    let sim = start_sim(SimConfig::default()).await;
    let ep = Arc::new(Endpoint {
        fail_first: AtomicUsize::new(2),
        ..Endpoint::default()
    });
    let addr = serve(Arc::clone(&ep), "127.0.0.1:0".parse().expect("addr")).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("outcomes.jsonl");
    let extra = format!(
        "confirm_timeout = \"3s\"\n\n[feed]\nurl = \"http://{addr}/outcomes\"\nfile = \"{}\"\n",
        file.display()
    );
    let cfg = config(&sim.base_url(), &sim.base_url(), &extra);
    let mut d = start_daemon(cfg, &sim).await;
    let a = sim.create_conversation(conversation(Some("Goodbye")));
    let b = sim.create_conversation(conversation(Some("Goodbye")));
    for _ in 0..2 {
        d.next_report(Duration::from_secs(10)).await;
    }
    // Two 503s first: the first entry is retried (1 s, then 2 s) and still arrives.
    wait_for(Duration::from_secs(15), || {
        !keys_for(&ep, &a).is_empty() && !keys_for(&ep, &b).is_empty()
    })
    .await;
    for id in [&a, &b] {
        let keys = keys_for(&ep, id);
        assert!(
            keys.iter()
                .all(|k| k == &keys[0] && k.starts_with(id.as_str())),
            "one stable key per outcome: {keys:?}"
        );
        let got = ep.got.lock().expect("lock");
        let (_, v) = got
            .iter()
            .find(|(_, v)| v["conversation_id"] == id.as_str())
            .expect("body");
        assert_eq!(v["outcome"], "confirmed");
        assert_eq!(v["rule"], "goodbye");
        assert_eq!(v["intent"], "Goodbye");
        assert_eq!(v["source"], "queue");
        assert_eq!(v["queue_id"], QUEUE);
        assert!(v["latency_ms"].as_i64().is_some_and(|l| l >= 0), "{v}");
        assert!(
            v["decided_at"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{v}"
        );
        assert_eq!(v["idempotency_key"], keys[0]);
    }
    let lines = std::fs::read_to_string(&file).expect("feed file");
    let ids: Vec<String> = lines
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json line");
            v["conversation_id"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert!(ids.contains(&a) && ids.contains(&b), "{lines}");
    assert_eq!(ids.len(), 2, "each outcome once in the file: {lines}");
    d.shutdown().await;
}

fn daemon(config: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_genesys-closer"))
        .args(["run", "--config"])
        .arg(config)
        .env("GENESYSCLOUD_OAUTHCLIENT_SECRET", "sim-secret")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the daemon")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_journalled_before_a_sigkill_are_delivered_after_the_restart() {
    let sim = start_sim(SimConfig::default()).await;
    // The endpoint is down at first: its port is reserved, then released.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("reserve");
        l.local_addr().expect("addr").port()
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[genesys]
api_url = "{url}"
login_url = "{url}"
client_id = "5e1f0c1e-51a0-4c1e-8e57-0000000c11e7"

[stream]
queues = ["{QUEUE}"]
mirror = false
heartbeat_timeout = "5s"
ping_after = "2s"
backoff_min = "50ms"
backoff_max = "500ms"

[daemon]
state_dir = "{state}"

[feed]
url = "http://127.0.0.1:{port}/outcomes"

[log]
format = "json"
level = "warn"

[[rule]]
name = "goodbye"
intents = ["Goodbye"]
confirm_timeout = "3s"
"#,
            url = sim.base_url(),
            state = dir.path().join("state").display(),
        ),
    )
    .expect("config");
    let mut first = daemon(&path);
    wait_for(Duration::from_secs(20), || sim.connected_sockets() >= 1).await;
    let ids: Vec<String> = (0..3)
        .map(|_| sim.create_conversation(conversation(Some("Goodbye"))))
        .collect();
    wait_for(Duration::from_secs(20), || {
        ids.iter().all(|id| sim.is_closed(id) == Some(true))
    })
    .await;
    // Closed; give the daemon a moment to journal the confirmed outcomes, then kill it
    // while their deliveries are still failing (nothing listens on the port).
    tokio::time::sleep(Duration::from_millis(800)).await;
    first.kill().expect("SIGKILL");
    let _ = first.wait();

    let ep = Arc::new(Endpoint::default());
    serve(
        Arc::clone(&ep),
        format!("127.0.0.1:{port}").parse().expect("addr"),
    )
    .await;
    let mut second = daemon(&path);
    wait_for(Duration::from_secs(30), || {
        ids.iter().all(|id| !keys_for(&ep, id).is_empty())
    })
    .await;
    let _ = second.kill();
    let _ = second.wait();
    for id in &ids {
        let keys = keys_for(&ep, id);
        assert!(
            keys.iter().all(|k| k == &keys[0]),
            "the same key on every delivery: {keys:?}"
        );
    }
}
