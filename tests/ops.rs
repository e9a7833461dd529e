//! Operating under systemd: reload in place, and what systemd hears (a fake
//! `NOTIFY_SOCKET`). Loopback only.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{QUEUE, conversation, start_sim, wait_for};
use genesys_closer::config::Config;
use genesys_closer::daemon::{self, RunOptions};
use genesys_sim::{ConversationSpec, SimConfig, SimHandle};
use secrecy::SecretString;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const QUEUE_2: &str = "2b7e1516-28ae-4d2a-a6d2-abf7158809cf";

fn config_text(api: &str, state_dir: &Path, queues: &[&str], intents: &[&str]) -> String {
    let q: Vec<String> = queues.iter().map(|q| format!("\"{q}\"")).collect();
    let i: Vec<String> = intents.iter().map(|i| format!("\"{i}\"")).collect();
    format!(
        r#"
[genesys]
api_url = "{api}"
login_url = "{api}"
client_id = "5e1f0c1e-51a0-4c1e-8e57-0000000c11e7"

[stream]
queues = [{}]
mirror = false
heartbeat_timeout = "5s"
ping_after = "2s"
backoff_min = "50ms"
backoff_max = "500ms"

[daemon]
state_dir = "{}"

[log]
format = "human"
level = "genesys_closer=info,warn"

[[rule]]
name = "goodbye"
intents = [{}]
confirm_timeout = "3s"
"#,
        q.join(", "),
        state_dir.display(),
        i.join(", ")
    )
}

struct Daemon {
    stop: CancellationToken,
    reload: mpsc::Sender<()>,
    task: tokio::task::JoinHandle<Result<daemon::Summary, daemon::DaemonError>>,
}

async fn start(path: &Path, sim: &SimHandle, notify: bool) -> Daemon {
    let config = Config::load(path).expect("config loads");
    genesys_closer::telemetry::init_logging(&config.log);
    let stop = CancellationToken::new();
    let (reload, reload_rx) = mpsc::channel(1);
    let opts = RunOptions {
        shutdown: stop.clone(),
        drain_timeout: Duration::from_secs(10),
        reports: None,
        notify_systemd: notify,
        reload: Some(reload_rx),
        intake_token: None,
        intake_bound: None,
        metrics_bound: None,
        record: None,
    };
    let secret = SecretString::from("sim-secret".to_string());
    let task = tokio::spawn(async move { daemon::run(&config, secret, opts).await });
    wait_for(Duration::from_secs(15), || sim.connected_sockets() >= 1).await;
    Daemon { stop, reload, task }
}

fn in_queue(queue: &str, intent: &str) -> ConversationSpec {
    ConversationSpec {
        queue_id: queue.into(),
        ..conversation(Some(intent))
    }
}

fn channel_creations(sim: &SimHandle) -> usize {
    sim.requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path == "/api/v2/notifications/channels")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_swaps_rules_and_topics_in_place_and_keeps_them_on_a_bad_file() {
    let sim = start_sim(SimConfig::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path: PathBuf = dir.path().join("config.toml");
    let state = dir.path().join("state");
    std::fs::write(
        &path,
        config_text(&sim.base_url(), &state, &[QUEUE], &["Goodbye"]),
    )
    .expect("write config");
    let d = start(&path, &sim, false).await;

    // Not a rule yet: stays open.
    let early = sim.create_conversation(in_queue(QUEUE, "Farewell"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sim.is_closed(&early), Some(false));

    // New intent and a second queue, applied on the running channel.
    let channels_before = channel_creations(&sim);
    std::fs::write(
        &path,
        config_text(
            &sim.base_url(),
            &state,
            &[QUEUE, QUEUE_2],
            &["Goodbye", "Farewell"],
        ),
    )
    .expect("rewrite config");
    d.reload.send(()).await.expect("reload");
    let topic = format!("v2.routing.queues.{QUEUE_2}.conversations.messages");
    wait_for(Duration::from_secs(10), || {
        sim.channel_topic_counts().iter().any(|(id, _)| {
            sim.channel_topics(id)
                .is_some_and(|t| t.iter().any(|x| x.eq_ignore_ascii_case(&topic)))
        })
    })
    .await;
    let on_new_queue = sim.create_conversation(in_queue(QUEUE_2, "Farewell"));
    wait_for(Duration::from_secs(10), || {
        sim.is_closed(&on_new_queue) == Some(true)
    })
    .await;
    assert_eq!(
        channel_creations(&sim),
        channels_before,
        "the reload subscribed in place: no new channel, no reconnect"
    );

    // A broken file: the running rules and topics stay.
    std::fs::write(&path, "[genesys\nthis is not toml").expect("break config");
    d.reload.send(()).await.expect("reload");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after_bad = sim.create_conversation(in_queue(QUEUE_2, "Farewell"));
    wait_for(Duration::from_secs(10), || {
        sim.is_closed(&after_bad) == Some(true)
    })
    .await;

    d.stop.cancel();
    d.task.await.expect("join").expect("clean stop");
}

/// Reads what the daemon told the fake `NOTIFY_SOCKET` until `want` shows up.
fn expect_notify(sock: &UnixDatagram, want: &str, within: Duration) -> Vec<String> {
    let deadline = std::time::Instant::now() + within;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while std::time::Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).to_string();
            let hit = msg.lines().any(|l| l == want);
            seen.push(msg);
            if hit {
                return seen;
            }
        }
    }
    panic!("never got {want}; got {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_hears_ready_watchdog_status_reloading_and_stopping() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind notify socket");
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    // This test binary runs alone in its process (nextest), so the environment is ours.
    #[allow(unsafe_code)]
    unsafe {
        std::env::set_var("NOTIFY_SOCKET", &sock_path);
        std::env::set_var("WATCHDOG_USEC", "400000");
        std::env::set_var("WATCHDOG_PID", std::process::id().to_string());
    }
    let sim = start_sim(SimConfig::default()).await;
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        config_text(
            &sim.base_url(),
            &dir.path().join("state"),
            &[QUEUE],
            &["Goodbye"],
        ),
    )
    .expect("write config");
    let d = start(&path, &sim, true).await;

    let seen =
        tokio::task::block_in_place(|| expect_notify(&sock, "READY=1", Duration::from_secs(10)));
    let ready = seen.last().expect("ready message");
    assert!(
        ready.contains("STATUS=1/1 channels live"),
        "READY comes with the connection state: {ready}"
    );
    // The loop pings every WatchdogSec/2 (200 ms here).
    tokio::task::block_in_place(|| expect_notify(&sock, "WATCHDOG=1", Duration::from_secs(3)));
    tokio::task::block_in_place(|| expect_notify(&sock, "WATCHDOG=1", Duration::from_secs(3)));

    d.reload.send(()).await.expect("reload");
    tokio::task::block_in_place(|| expect_notify(&sock, "RELOADING=1", Duration::from_secs(5)));
    let after =
        tokio::task::block_in_place(|| expect_notify(&sock, "READY=1", Duration::from_secs(5)));
    assert!(
        after.last().is_some_and(|m| m.contains("STATUS=reloaded")),
        "{after:?}"
    );

    d.stop.cancel();
    tokio::task::block_in_place(|| expect_notify(&sock, "STOPPING=1", Duration::from_secs(5)));
    d.task.await.expect("join").expect("clean stop");
}

#[test]
fn under_journald_each_line_carries_its_priority_and_a_bad_rust_log_is_said() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.toml");
    // Nothing listens on port 9: the daemon logs that the login service is unreachable.
    std::fs::write(
        &path,
        config_text(
            "http://127.0.0.1:9",
            &dir.path().join("state"),
            &[QUEUE],
            &["Goodbye"],
        ),
    )
    .expect("config");
    // stderr is a file whose device and inode JOURNAL_STREAM names, as systemd does for
    // the journal's socket (the daemon compares both).
    let log = dir.path().join("stderr.log");
    let file = std::fs::File::create(&log).expect("log file");
    let journal_stream = {
        use std::os::unix::fs::MetadataExt as _;
        let m = file.metadata().expect("meta");
        format!("{}:{}", m.dev(), m.ino())
    };
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_genesys-closer"))
        .args(["run", "--config"])
        .arg(&path)
        .env("GENESYSCLOUD_OAUTHCLIENT_SECRET", "sim-secret")
        .env("JOURNAL_STREAM", journal_stream)
        .env("RUST_LOG", "genesys_closer=[")
        .stdout(std::process::Stdio::null())
        .stderr(file)
        .spawn()
        .expect("daemon starts");
    // Until it has said the login service is unreachable (after the journal opened).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("not reachable")
    {
        assert!(std::time::Instant::now() < deadline, "no login warning");
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).expect("log");
    let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    assert!(!lines.is_empty(), "it logged something");
    for l in &lines {
        assert!(
            ["<3>", "<4>", "<6>", "<7>"]
                .iter()
                .any(|p| l.starts_with(p)),
            "every line starts with its priority: {l}"
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("<4>") && l.contains("RUST_LOG")),
        "the bad RUST_LOG is reported at warning level: {text}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("<6>") && l.contains("journal open")),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_stop_signal_exits_at_once_and_the_next_start_finishes_the_close() {
    use genesys_sim::RequestDelay;
    let sim = start_sim(SimConfig::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        config_text(
            &sim.base_url(),
            &dir.path().join("state"),
            &[QUEUE],
            &["Goodbye"],
        ),
    )
    .expect("config");
    let spawn = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_genesys-closer"))
            .args(["run", "--config"])
            .arg(&path)
            .env("GENESYSCLOUD_OAUTHCLIENT_SECRET", "sim-secret")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("daemon starts")
    };
    let mut first = spawn();
    wait_for(Duration::from_secs(20), || sim.connected_sockets() >= 1).await;
    // The disconnect hangs (dropped unserved if the daemon goes), so the drain waits on it.
    sim.hold_requests(RequestDelay {
        path_prefix: "/api/v2/conversations/messages/".into(),
        method: Some("PATCH".into()),
        delay: Duration::from_secs(30),
        count: 1,
        completes_without_client: false,
    });
    let id = sim.create_conversation(conversation(Some("Goodbye")));
    wait_for(Duration::from_secs(10), || {
        sim.requests()
            .iter()
            .any(|r| r.method == "PATCH" && r.path.contains(&id))
    })
    .await;
    let pid = first.id().to_string();
    let term = || {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status();
    };
    term();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        first.try_wait().expect("wait").is_none(),
        "the first signal drains: the held close keeps it running"
    );
    let asked = std::time::Instant::now();
    term();
    let status = tokio::task::spawn_blocking(move || first.wait())
        .await
        .expect("join")
        .expect("exit");
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "the second signal exits at once"
    );
    assert_eq!(status.code(), Some(130));
    assert_eq!(
        sim.is_closed(&id),
        Some(false),
        "the held disconnect never took"
    );
    // The close was journalled: the next start carries it out.
    let mut second = spawn();
    wait_for(Duration::from_secs(20), || sim.is_closed(&id) == Some(true)).await;
    let _ = second.kill();
    let _ = second.wait();
}
