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
use genesys_closer::sim::{Faults, SimConfig};

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

async fn start_prism(upstream: &str) -> Prism {
    let spec =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/genesys/openapi-subset.json");
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
