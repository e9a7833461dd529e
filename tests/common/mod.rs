//! Shared harness: the simulator plus the daemon on loopback, driven through the library.
#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod ha;
mod ids;

use std::path::Path;
use std::time::Duration;

use genesys_closer::closer::CloseReport;
use genesys_closer::config::Config;
use genesys_closer::daemon::{self, RunOptions};
use genesys_sim::{self as sim, ConversationSpec, RecordedRequest, SimConfig, SimHandle};
use secrecy::SecretString;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use ids::QUEUE;

/// A config for the simulator; `api_url` may differ from the simulator (a proxy).
pub fn config(api_url: &str, login_url: &str, rule_extra: &str) -> Config {
    let text = format!(
        r#"
[genesys]
api_url = "{api_url}"
login_url = "{login_url}"
client_id = "5e1f0c1e-51a0-4c1e-8e57-0000000c11e7"

[stream]
queues = ["{QUEUE}"]
# One copy of the configured topics: these tests watch one channel's behaviour; the
# mirror is exercised by the fault matrix (tests/faults.rs).
mirror = false
heartbeat_timeout = "5s"
ping_after = "2s"
backoff_min = "50ms"
backoff_max = "500ms"

[log]
format = "human"
level = "genesys_closer=debug,warn"

[[rule]]
name = "goodbye"
intents = ["Goodbye", "CancelSubscription"]
{rule_extra}
"#
    );
    Config::parse(&text, Path::new("test.toml")).expect("test config is valid")
}

/// A running daemon and its report stream.
pub struct Running {
    pub reports: mpsc::UnboundedReceiver<CloseReport>,
    pub stop: CancellationToken,
    pub task: JoinHandle<Result<daemon::Summary, daemon::DaemonError>>,
    /// The journal's directory when the test did not choose one (removed at the end).
    pub _state: Option<tempfile::TempDir>,
}

/// A test never writes to /var/lib: a config that left `[daemon] state_dir` at its
/// default gets a fresh temporary directory (kept alive by the returned guard).
pub fn private_state_dir(config: &mut Config) -> Option<tempfile::TempDir> {
    if config.daemon.state_dir != genesys_closer::config::DaemonConfig::default().state_dir {
        return None;
    }
    let dir = tempfile::tempdir().expect("temp state dir");
    config.daemon.state_dir = dir.path().to_path_buf();
    Some(dir)
}

impl Running {
    /// The next close report, or a panic after `within`.
    pub async fn next_report(&mut self, within: Duration) -> CloseReport {
        tokio::time::timeout(within, self.reports.recv())
            .await
            .expect("a close report in time")
            .expect("report channel open")
    }

    /// Asserts no further report arrives within `quiet`.
    pub async fn assert_no_report(&mut self, quiet: Duration) {
        if let Ok(Some(r)) = tokio::time::timeout(quiet, self.reports.recv()).await {
            panic!("unexpected close report: {r:?}");
        }
    }

    pub async fn shutdown(self) -> daemon::Summary {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("daemon stops in time")
            .expect("daemon task did not panic")
            .expect("daemon ran")
    }
}

pub async fn start_sim(cfg: SimConfig) -> SimHandle {
    sim::start(cfg).await.expect("simulator starts")
}

/// Starts the daemon and waits until its socket is connected to the simulator.
pub async fn start_daemon(mut config: Config, sim: &SimHandle) -> Running {
    genesys_closer::telemetry::init_logging(&config.log);
    let state = private_state_dir(&mut config);
    let (tx, reports) = mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    let opts = RunOptions {
        shutdown: stop.clone(),
        drain_timeout: Duration::from_secs(10),
        reports: Some(tx),
        notify_systemd: false,
        reload: None,
        intake_token: None,
        intake_bound: None,
        metrics_bound: None,
        record: None,
    };
    let secret = SecretString::from("sim-secret".to_string());
    // At every start the daemon lists the watched queues once its channels are live
    // (recovery). A conversation a test creates before that listing is answered may be
    // found by it and read: wait for it, so what the test counts is the test's own.
    let lists_queues = config.stream.recover_queues && !config.stream.queues.is_empty();
    let listings = |sim: &SimHandle| {
        sim.requests()
            .iter()
            // Status 0 while it is being answered.
            .filter(|r| r.path == "/api/v2/analytics/queues/observations/query" && r.status != 0)
            .count()
    };
    let listed_before = listings(sim);
    let task = tokio::spawn(async move { daemon::run(&config, secret, opts).await });
    wait_for(Duration::from_secs(15), || sim.connected_sockets() >= 1).await;
    if lists_queues {
        // Answered (whatever the answer: a test may refuse it).
        wait_for(Duration::from_secs(15), || listings(sim) > listed_before).await;
    }
    Running {
        reports,
        stop,
        task,
        _state: state,
    }
}

pub async fn wait_for(within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn conversation(intent: Option<&str>) -> ConversationSpec {
    ConversationSpec {
        queue_id: QUEUE.into(),
        intent_attribute: "Bot.Intent".into(),
        intent: intent.map(str::to_string),
        agent_user_id: None,
    }
}

/// Requests the daemon made about one conversation, as "METHOD path".
pub fn calls_for(sim: &SimHandle, conversation_id: &str) -> Vec<String> {
    sim.requests()
        .into_iter()
        .filter(|r: &RecordedRequest| r.path.contains(conversation_id))
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

pub const FLOW: &str = "a3c9e5f1-8b27-4d60-9e4a-2f7b1c6d8e93";
pub const INTAKE_TOKEN: &str = "intake-test-token-0123456789";

/// A bot-phase config: the queue, flow discovery on `FLOW`, the intake on a free
/// loopback port, short batch windows so tests run fast.
pub fn bot_config(url: &str, intake_extra: &str) -> Config {
    bot_config_with(url, url, intake_extra)
}

/// [`bot_config`] with the API and the login host apart: `api_url` may be a proxy
/// (the contract test's validator) while tokens come straight from `login_url`.
pub fn bot_config_with(api_url: &str, login_url: &str, intake_extra: &str) -> Config {
    let text = format!(
        r#"
[genesys]
api_url = "{api_url}"
login_url = "{login_url}"
client_id = "5e1f0c1e-51a0-4c1e-8e57-0000000c11e7"

[stream]
queues = ["{QUEUE}"]
flows = ["{FLOW}"]
mirror = false
subscribe_window = "100ms"
unsubscribe_window = "200ms"
catchup_after = "5s"
heartbeat_timeout = "5s"
ping_after = "2s"
backoff_min = "50ms"
backoff_max = "500ms"

[intake]
enabled = true
listen = "127.0.0.1:0"
{intake_extra}

[log]
format = "human"
level = "genesys_closer=debug,warn"

[[rule]]
name = "goodbye"
intents = ["Goodbye", "CancelSubscription"]
confirm_timeout = "3s"
"#
    );
    Config::parse(&text, Path::new("bot.toml")).expect("bot test config is valid")
}

/// Starts the daemon with the intake on; returns it and the intake's URL.
pub async fn start_bot_daemon(mut config: Config, sim: &SimHandle) -> (Running, String) {
    genesys_closer::telemetry::init_logging(&config.log);
    let state = private_state_dir(&mut config);
    let (tx, reports) = mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
    let opts = RunOptions {
        shutdown: stop.clone(),
        drain_timeout: Duration::from_secs(10),
        reports: Some(tx),
        notify_systemd: false,
        reload: None,
        intake_token: Some(SecretString::from(INTAKE_TOKEN.to_string())),
        intake_bound: Some(bound_tx),
        metrics_bound: None,
        record: None,
    };
    let secret = SecretString::from("sim-secret".to_string());
    let task = tokio::spawn(async move { daemon::run(&config, secret, opts).await });
    let addr = tokio::time::timeout(Duration::from_secs(15), bound_rx)
        .await
        .expect("intake bound in time")
        .expect("intake bound");
    wait_for(Duration::from_secs(15), || sim.connected_sockets() >= 1).await;
    (
        Running {
            reports,
            stop,
            task,
            _state: state,
        },
        format!("http://{addr}/v1/intents"),
    )
}

/// Starts the daemon with `[metrics]` on a free loopback port (and the intake when the
/// config has it); returns it, the metrics address and the intake's, once its socket is
/// connected.
pub async fn start_metrics_daemon(
    mut config: Config,
    sim: &SimHandle,
) -> (Running, std::net::SocketAddr, Option<std::net::SocketAddr>) {
    genesys_closer::telemetry::init_logging(&config.log);
    let state = private_state_dir(&mut config);
    config.metrics = Some(genesys_closer::config::MetricsConfig {
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
    });
    let (tx, reports) = mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    let (intake_tx, intake_rx) = tokio::sync::oneshot::channel();
    let (metrics_tx, metrics_rx) = tokio::sync::oneshot::channel();
    let intake = config.intake.is_some();
    let opts = RunOptions {
        shutdown: stop.clone(),
        drain_timeout: Duration::from_secs(10),
        reports: Some(tx),
        notify_systemd: false,
        reload: None,
        intake_token: intake.then(|| SecretString::from(INTAKE_TOKEN.to_string())),
        intake_bound: Some(intake_tx),
        metrics_bound: Some(metrics_tx),
        record: None,
    };
    let secret = SecretString::from("sim-secret".to_string());
    let task = tokio::spawn(async move { daemon::run(&config, secret, opts).await });
    let metrics = tokio::time::timeout(Duration::from_secs(15), metrics_rx)
        .await
        .expect("metrics bound in time")
        .expect("metrics bound");
    let intake = if intake {
        Some(intake_rx.await.expect("intake bound"))
    } else {
        None
    };
    wait_for(Duration::from_secs(15), || sim.connected_sockets() >= 1).await;
    (
        Running {
            reports,
            stop,
            task,
            _state: state,
        },
        metrics,
        intake,
    )
}

/// A bot conversation on `FLOW` with the given intent timing and data-action posts.
pub fn bot(
    intent: Option<&str>,
    after_ms: u64,
    on_start: bool,
    on_intent: bool,
) -> sim::BotConversationSpec {
    sim::BotConversationSpec {
        flow_id: FLOW.into(),
        purpose: sim::BotPurpose::Workflow,
        intent_attribute: "Bot.Intent".into(),
        intent: intent.map(str::to_string),
        intent_after: Duration::from_millis(after_ms),
        transfer: None,
        post_on_start: on_start,
        post_on_intent: on_intent,
    }
}

/// One HTTP/1.1 exchange on a fresh connection: (status, body).
pub async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    extra: &str,
) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{extra}\r\n");
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    s.write_all(req.as_bytes()).await.expect("send");
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut out))
        .await
        .expect("answer in time")
        .expect("read");
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}
