//! No secret in any output: the whole loop (login, subscriptions, the intake called by the
//! bot flow's data action with the right credential and by a caller with a wrong one,
//! closes) runs in a real process at debug level, with the client secret, the intake
//! credential and the feed token set to known values; none of them, and none of the
//! access tokens Genesys issued, appears on stdout or stderr, in `check`'s output, or in
//! the `Debug` of the config. Loopback only.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{QUEUE, bot, conversation, start_sim, wait_for};
use genesys_closer::config::Config;
use genesys_sim::{DataAction, SimConfig};

const CLIENT_SECRET: &str = "client-secret-5f8e2a91c7d3";
const INTAKE_TOKEN: &str = "intake-credential-9b1d47e6a02c";
const WRONG_TOKEN: &str = "wrong-credential-3c7a90d1e5f8";
const FEED_TOKEN: &str = "feed-token-7e2b5c8a1f04";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_credential_or_token_appears_in_any_output() {
    let sim = start_sim(SimConfig {
        client_secret: CLIENT_SECRET.into(),
        ..SimConfig::default()
    })
    .await;
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
flows = ["{flow}"]
mirror = false
subscribe_window = "100ms"

[intake]
enabled = true
listen = "127.0.0.1:{port}"

[daemon]
state_dir = "{state}"

[feed]
file = "{feed}"

[log]
format = "json"
level = "genesys_closer=trace,debug"

[[rule]]
name = "goodbye"
intents = ["Goodbye"]
confirm_timeout = "3s"
"#,
            url = sim.base_url(),
            flow = common::FLOW,
            state = dir.path().join("state").display(),
            feed = dir.path().join("feed.jsonl").display(),
        ),
    )
    .expect("config");

    // `check` and the config's Debug.
    let check = Command::new(env!("CARGO_BIN_EXE_genesys-closer"))
        .args(["check", "--config"])
        .arg(&path)
        .env("GENESYSCLOUD_OAUTHCLIENT_SECRET", CLIENT_SECRET)
        .env("GENESYS_CLOSER_INTAKE_TOKEN", INTAKE_TOKEN)
        .env("GENESYS_CLOSER_FEED_TOKEN", FEED_TOKEN)
        .output()
        .expect("check runs");
    assert!(check.status.success(), "{check:?}");
    let config = Config::load(&path).expect("config loads");
    let mut outputs = vec![
        String::from_utf8_lossy(&check.stdout).to_string(),
        String::from_utf8_lossy(&check.stderr).to_string(),
        format!("{config:?}"),
        format!("{config:#?}"),
    ];

    let child = Command::new(env!("CARGO_BIN_EXE_genesys-closer"))
        .args(["run", "--config"])
        .arg(&path)
        .env("GENESYSCLOUD_OAUTHCLIENT_SECRET", CLIENT_SECRET)
        .env("GENESYS_CLOSER_INTAKE_TOKEN", INTAKE_TOKEN)
        .env("GENESYS_CLOSER_FEED_TOKEN", FEED_TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("daemon starts");
    wait_for(Duration::from_secs(20), || sim.connected_sockets() >= 1).await;
    let intake = format!("http://127.0.0.1:{port}/v1/intents");
    sim.set_data_action(Some(DataAction {
        url: intake.clone(),
        authorization: Some(format!("Bearer {INTAKE_TOKEN}")),
    }));
    let queue_conv = sim.create_conversation(conversation(Some("Goodbye")));
    let bot_conv = sim.create_bot_conversation(bot(Some("Goodbye"), 200, false, true));
    wait_for(Duration::from_secs(20), || {
        sim.is_closed(&queue_conv) == Some(true) && sim.is_closed(&bot_conv) == Some(true)
    })
    .await;
    // A caller with a wrong credential, in the header and in Basic form.
    let http = reqwest::Client::new();
    for auth in [
        format!("Bearer {WRONG_TOKEN}"),
        format!(
            "Basic {}",
            base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                format!("genesys:{WRONG_TOKEN}")
            )
        ),
    ] {
        let r = http
            .post(&intake)
            .header("authorization", auth)
            .json(&serde_json::json!({"conversationId": queue_conv, "intent": "Goodbye"}))
            .send()
            .await
            .expect("intake answers");
        assert_eq!(r.status(), 401);
    }
    let issued = sim.issued_tokens();
    assert!(!issued.is_empty(), "the daemon logged in");
    // SIGTERM: a clean stop, then read everything it wrote.
    let pid = child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("join")
        .expect("daemon output");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        stderr.contains("conversation closed and confirmed"),
        "the loop ran: {}",
        &stderr[stderr.len().saturating_sub(2000)..]
    );
    outputs.push(String::from_utf8_lossy(&out.stdout).to_string());
    outputs.push(stderr);
    outputs.push(std::fs::read_to_string(dir.path().join("feed.jsonl")).unwrap_or_default());

    let mut secrets: Vec<String> = vec![
        CLIENT_SECRET.into(),
        INTAKE_TOKEN.into(),
        WRONG_TOKEN.into(),
        FEED_TOKEN.into(),
    ];
    secrets.extend(issued);
    for (i, text) in outputs.iter().enumerate() {
        for s in &secrets {
            assert!(
                !text.contains(s.as_str()),
                "output #{i} contains a secret ({}…)",
                &s[..6]
            );
        }
    }
}
