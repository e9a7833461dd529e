//! Crash tests: the daemon as a real process (`genesys-closer run`), killed with SIGKILL
//! (or stopped with SIGTERM) at chosen points of its close sequences, then started again
//! on the same state directory. The simulator runs in the test process; its request log,
//! its conversations and the messages it accepted are the evidence.
//!
//! Every scenario ends with the same checks ([`Scenario::finish`]): each matching
//! conversation is closed in the simulator, its last journalled/logged outcome is a
//! confirmed one, no guest got the farewell twice, Genesys accepted at most one
//! disconnect PATCH per conversation, the last daemon stops cleanly on SIGTERM, and
//! (when the binary has the `history` subcommand) the journal shows a decision and a
//! final outcome for each conversation.
//!
//! A failing scenario keeps its directory (config, state, one log per daemon run) and
//! prints where it is.

#[path = "common/ids.rs"]
mod ids;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use genesys_sim::{self as sim, ConversationSpec, Faults, RequestDelay, SimConfig, SimHandle};
use ids::QUEUE;
use serde_json::Value;
use tokio::time::Instant;

const BIN: &str = env!("CARGO_BIN_EXE_genesys-closer");
const AGENT: &str = "3d2f8a41-9c6b-4e57-a0d8-6b1e2c9f7a35";
/// The conversation PATCH (and the customer-participant PATCH under it).
const MESSAGES: &str = "/api/v2/conversations/messages/";
/// Outcomes that mean the conversation was seen closed.
const CONFIRMED: [&str; 3] = ["confirmed", "escalated_confirmed", "already_closed"];

/// One scenario: a simulator, a directory, and the daemon runs on it.
struct Scenario {
    sim: SimHandle,
    dir: Option<tempfile::TempDir>,
    child: Option<Child>,
    runs: usize,
}

impl Scenario {
    async fn new(name: &str, cfg: SimConfig) -> Self {
        let sim = sim::start(cfg).await.expect("simulator starts");
        let dir = tempfile::Builder::new()
            .prefix(&format!("genesys-closer-crash-{name}-"))
            .tempdir()
            .expect("scenario dir");
        Scenario {
            sim,
            dir: Some(dir),
            child: None,
            runs: 0,
        }
    }

    fn dir(&self) -> &Path {
        self.dir.as_ref().expect("dir kept until drop").path()
    }

    fn state_dir(&self) -> PathBuf {
        self.dir().join("state")
    }

    fn log(&self, run: usize) -> PathBuf {
        self.dir().join(format!("daemon-{run}.log"))
    }

    /// Writes the config the next [`start`](Self::start) uses; `rule_extra` may set
    /// `confirm_timeout` (else 2 s).
    fn config(&self, requests_per_minute: u32, rule_extra: &str) {
        let url = self.sim.base_url();
        let confirm = if rule_extra.contains("confirm_timeout") {
            ""
        } else {
            "confirm_timeout = \"2s\""
        };
        let text = format!(
            r#"
[genesys]
api_url = "{url}"
login_url = "{url}"
client_id = "5e1f0c1e-51a0-4c1e-8e57-0000000c11e7"
requests_per_minute = {requests_per_minute}

[daemon]
state_dir = "{state}"

[stream]
queues = ["{QUEUE}"]
mirror = false
heartbeat_timeout = "5s"
ping_after = "2s"
backoff_min = "50ms"
backoff_max = "500ms"

[log]
format = "json"
level = "genesys_closer=debug,info"

[[rule]]
name = "goodbye"
intents = ["Goodbye"]
retry_for = "2m"
{confirm}
{rule_extra}
"#,
            state = self.state_dir().display()
        );
        std::fs::write(self.dir().join("config.toml"), text).expect("config written");
    }

    /// Adds one `key = value` line to the `[daemon]` section of the written config.
    fn daemon_setting(&self, line: &str) {
        let path = self.dir().join("config.toml");
        let text = std::fs::read_to_string(&path).expect("config read");
        let text = text.replacen("[daemon]\n", &format!("[daemon]\n{line}\n"), 1);
        std::fs::write(&path, text).expect("config written");
    }

    /// Starts `genesys-closer run` and waits until its socket is attached (it subscribes
    /// before it connects, so events from then on reach it).
    async fn start(&mut self) {
        assert!(self.child.is_none(), "one daemon at a time");
        self.wait_sockets(0, "the previous daemon's socket to go")
            .await;
        self.runs += 1;
        let log = File::create(self.log(self.runs)).expect("log file");
        let child = Command::new(BIN)
            .arg("run")
            .arg("--config")
            .arg(self.dir().join("config.toml"))
            .env("GENESYSCLOUD_OAUTHCLIENT_SECRET", "sim-secret")
            .env_remove("RUST_LOG")
            .env_remove("CREDENTIALS_DIRECTORY")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("daemon starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.sim.connected_sockets() < 1 {
            if let Some(status) = self.child_mut().try_wait().expect("child status") {
                panic!("daemon run {} exited at start: {status}", self.runs);
            }
            assert!(
                Instant::now() < deadline,
                "daemon run {} did not connect within 30 s",
                self.runs
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("a daemon is running")
    }

    /// SIGKILL: no drain, no flush, nothing.
    async fn kill(&mut self) {
        let mut child = self.child.take().expect("a daemon is running");
        child.kill().expect("SIGKILL sent");
        child.wait().expect("killed daemon reaped");
        self.wait_sockets(0, "the killed daemon's socket to go")
            .await;
    }

    fn sigterm(&self) {
        let pid = self.child.as_ref().expect("a daemon is running").id();
        let ok = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "SIGTERM sent");
    }

    /// Waits for the daemon to exit on its own.
    async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child_mut().try_wait().expect("child status") {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not exit within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn exited(&mut self) -> bool {
        self.child_mut().try_wait().expect("child status").is_some()
    }

    async fn wait_sockets(&self, n: usize, what: &str) {
        wait_until(Duration::from_secs(15), what, || {
            self.sim.connected_sockets() == n
        })
        .await;
    }

    fn create(&self, agent: bool) -> String {
        self.sim.create_conversation(ConversationSpec {
            queue_id: QUEUE.into(),
            intent_attribute: "Bot.Intent".into(),
            intent: Some("Goodbye".into()),
            agent_user_id: agent.then(|| AGENT.to_string()),
        })
    }

    /// The journal's lines (`history --json`), or `None` when the binary has no
    /// `history` subcommand.
    async fn history(&self) -> Option<Vec<Value>> {
        if !history_available() {
            return None;
        }
        let state = self.state_dir();
        let out = tokio::task::spawn_blocking(move || {
            Command::new(BIN)
                .args(["history", "--json", "--since", "1h", "--state-dir"])
                .arg(&state)
                .env_remove("RUST_LOG")
                .output()
        })
        .await
        .expect("history task")
        .expect("history runs");
        assert!(
            out.status.success(),
            "history failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        Some(
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| serde_json::from_str(l).expect("history --json prints JSON lines"))
                .collect(),
        )
    }

    /// Whether the journal holds this step of `id`'s close; `None` without `history`.
    async fn journalled_step(&self, id: &str, step: &str) -> Option<bool> {
        let h = self.history().await?;
        Some(
            h.iter()
                .any(|e| e["conversation_id"] == id && e["kind"] == "step" && e["step"] == step),
        )
    }

    /// Every `outcome` logged for `id`, over every daemon run, in order.
    fn logged_outcomes(&self, id: &str) -> Vec<String> {
        self.all_outcomes().remove(id).unwrap_or_default()
    }

    /// Every `outcome` logged, per conversation, over every daemon run, in order.
    fn all_outcomes(&self) -> HashMap<String, Vec<String>> {
        let mut all: HashMap<String, Vec<String>> = HashMap::new();
        for v in self.log_lines() {
            if let (Some(id), Some(o)) = (v["conversation_id"].as_str(), v["outcome"].as_str()) {
                all.entry(id.to_owned()).or_default().push(o.to_owned());
            }
        }
        all
    }

    /// Whether daemon run `run` logged a line about `id` whose message contains `needle`.
    fn logged(&self, run: usize, id: &str, needle: &str) -> bool {
        let text = std::fs::read_to_string(self.log(run)).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .any(|v| {
                v["conversation_id"] == id
                    && v["message"].as_str().is_some_and(|m| m.contains(needle))
            })
    }

    /// Every JSON line every daemon run logged.
    fn log_lines(&self) -> Vec<Value> {
        (1..=self.runs)
            .flat_map(|run| {
                let text = std::fs::read_to_string(self.log(run)).unwrap_or_default();
                text.lines()
                    .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Waits until each of `ids` is closed in the simulator and its last logged outcome
    /// is a confirmed one; stops the daemon with SIGTERM; then checks the journal (when
    /// `history` exists) and that nothing was sent twice.
    async fn finish(&mut self, ids: &[String], within: Duration) {
        let open = |s: &Self| -> Vec<String> {
            ids.iter()
                .filter(|id| s.sim.is_closed(id) != Some(true))
                .cloned()
                .collect()
        };
        let deadline = Instant::now() + within;
        loop {
            let still_open = open(self);
            let outcomes = self.all_outcomes();
            let unconfirmed: Vec<&String> = ids
                .iter()
                .filter(|id| {
                    outcomes
                        .get(id.as_str())
                        .and_then(|o| o.last())
                        .is_none_or(|o| !CONFIRMED.contains(&o.as_str()))
                })
                .collect();
            if still_open.is_empty() && unconfirmed.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                let outcomes: Vec<(&String, Vec<String>)> = unconfirmed
                    .iter()
                    .take(5)
                    .map(|id| (*id, outcomes.get(id.as_str()).cloned().unwrap_or_default()))
                    .collect();
                panic!(
                    "within {within:?}: {} of {} still open in the simulator ({:?}...), {} \
                     without a confirmed outcome (first ones and their outcomes: {outcomes:?})",
                    still_open.len(),
                    ids.len(),
                    still_open.iter().take(3).collect::<Vec<_>>(),
                    unconfirmed.len(),
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if self.child.is_some() {
            self.sigterm();
            let status = self.wait_exit(Duration::from_secs(30)).await;
            assert!(
                status.success(),
                "daemon exits cleanly on SIGTERM: {status}"
            );
        }
        let outcomes = self.all_outcomes();
        for id in ids {
            let patches = accepted_patches(&self.sim, id);
            assert!(
                patches <= 1,
                "{id}: Genesys accepted {patches} disconnect PATCHes"
            );
            let messages = messages_for(&self.sim, id);
            assert!(messages <= 1, "{id}: the guest got {messages} farewells");
            let outcomes = outcomes.get(id.as_str()).cloned().unwrap_or_default();
            assert!(
                !outcomes.iter().any(|o| o == "failed"),
                "{id}: a run logged a failed close: {outcomes:?}"
            );
        }
        if let Some(h) = self.history().await {
            let mut decided: HashSet<&str> = HashSet::new();
            let mut outcome: HashMap<&str, &str> = HashMap::new();
            for e in &h {
                let id = e["conversation_id"].as_str().unwrap_or("");
                match e["kind"].as_str() {
                    Some("decision") => {
                        decided.insert(id);
                    }
                    Some("outcome") => {
                        outcome.insert(id, e["outcome"].as_str().unwrap_or(""));
                    }
                    _ => {}
                }
            }
            for id in ids {
                assert!(
                    decided.contains(id.as_str()),
                    "{id}: no decision in history"
                );
                let o = outcome.get(id.as_str()).copied();
                assert!(
                    o.is_some_and(|o| CONFIRMED.contains(&o)),
                    "{id}: final outcome in history is {o:?}"
                );
            }
        } else {
            eprintln!("note: no `history` subcommand in this binary; journal not checked");
        }
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking()
            && let Some(dir) = self.dir.take()
        {
            let path = dir.keep();
            eprintln!(
                "scenario directory kept for inspection: {} (config.toml, state/, daemon-N.log)",
                path.display()
            );
        }
    }
}

fn history_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        Command::new(BIN)
            .args(["history", "--help"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

async fn wait_until(within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn is_patch(r: &sim::RecordedRequest, id: &str) -> bool {
    r.method == "PATCH" && r.path.starts_with(&format!("{MESSAGES}{id}"))
}

/// Disconnect PATCHes (conversation or participant) Genesys accepted for `id`.
fn accepted_patches(sim: &SimHandle, id: &str) -> usize {
    sim.requests()
        .iter()
        .filter(|r| is_patch(r, id) && (200..300).contains(&r.status))
        .count()
}

/// Full teardowns Genesys accepted for `id`.
fn accepted_teardowns(sim: &SimHandle, id: &str) -> usize {
    let path = format!("/api/v2/conversations/{id}/disconnect");
    sim.requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path == path && (200..300).contains(&r.status))
        .count()
}

fn messages_for(sim: &SimHandle, id: &str) -> usize {
    sim.sent_messages()
        .iter()
        .filter(|m| m.conversation_id == id)
        .count()
}

/// The status of the first request for which `pick` holds, if any arrived yet.
fn status_of(sim: &SimHandle, pick: impl Fn(&sim::RecordedRequest) -> bool) -> Option<u16> {
    sim.requests().iter().find(|r| pick(r)).map(|r| r.status)
}

fn farewell_post(r: &sim::RecordedRequest, id: &str) -> bool {
    r.method == "POST"
        && r.path
            .starts_with(&format!("{MESSAGES}{id}/communications/"))
}

fn sim_config() -> SimConfig {
    SimConfig {
        heartbeat_interval: Duration::from_secs(1),
        ..SimConfig::default()
    }
}

/// (a) Killed after the decision, while the disconnect PATCH is in flight; the platform
/// carries the PATCH out while the daemon is dead (its closing event reaches nobody).
/// The restart reads the conversation once, sees it closed, sends nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_while_the_disconnect_is_in_flight() {
    let mut s = Scenario::new("patch-in-flight", sim_config()).await;
    s.config(6000, "");
    s.start().await;
    s.sim
        .delay_requests(MESSAGES, Some("PATCH"), Duration::from_secs(3), 1);
    let id = s.create(false);
    wait_until(Duration::from_secs(15), "the PATCH to be held", || {
        status_of(&s.sim, |r| is_patch(r, &id)) == Some(0)
    })
    .await;
    s.kill().await;
    wait_until(
        Duration::from_secs(15),
        "the held PATCH to be served",
        || status_of(&s.sim, |r| is_patch(r, &id)).is_some_and(|st| st != 0),
    )
    .await;
    assert!(
        status_of(&s.sim, |r| is_patch(r, &id)).is_some_and(|st| (200..300).contains(&st)),
        "the platform carried the PATCH out"
    );
    wait_until(Duration::from_secs(5), "the conversation to close", || {
        s.sim.is_closed(&id) == Some(true)
    })
    .await;
    let before = s.sim.requests().len();
    s.start().await;
    s.finish(std::slice::from_ref(&id), Duration::from_secs(20))
        .await;
    assert_eq!(accepted_patches(&s.sim, &id), 1);
    let after: Vec<String> = s.sim.requests()[before..]
        .iter()
        .filter(|r| r.path.contains(&id))
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(
        after.contains(&format!("GET {MESSAGES}{id}")),
        "the restart read the conversation: {after:?}"
    );
    assert!(
        after.iter().all(|r| r.starts_with("GET ")),
        "the restart sent nothing to a closed conversation: {after:?}"
    );
}

/// (a) Killed after the decision while the disconnect keeps failing (503, retried);
/// the restart (the platform healthy again) reads the conversation, sees it open and
/// disconnects it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_while_the_disconnect_is_being_retried() {
    let mut s = Scenario::new("patch-retried", sim_config()).await;
    s.config(6000, "");
    s.start().await;
    s.sim
        .fail_requests_for(MESSAGES, 503, None, Duration::from_secs(600));
    let id = s.create(false);
    wait_until(Duration::from_secs(20), "two PATCHes answered 503", || {
        s.sim
            .requests()
            .iter()
            .filter(|r| is_patch(r, &id) && r.status == 503)
            .count()
            >= 2
    })
    .await;
    s.kill().await;
    s.sim.clear_request_faults();
    assert_eq!(s.sim.is_closed(&id), Some(false));
    s.start().await;
    s.finish(std::slice::from_ref(&id), Duration::from_secs(20))
        .await;
    assert_eq!(accepted_patches(&s.sim, &id), 1);
}

/// (b) Killed after Genesys accepted the disconnect, before any confirmation (the
/// platform ignores the PATCH). The restart must not PATCH again: it reads, waits out
/// the rest of the confirm time, and escalates to the full teardown, which closes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_the_disconnect_was_accepted() {
    let mut s = Scenario::new(
        "patch-accepted",
        SimConfig {
            faults: Faults {
                ignore_disconnect: true,
                ..Faults::default()
            },
            ..sim_config()
        },
    )
    .await;
    // Room between the accepted PATCH and the teardown for the kill.
    s.config(6000, "confirm_timeout = \"4s\"");
    s.start().await;
    let id = s.create(false);
    wait_until(Duration::from_secs(15), "the PATCH to be accepted", || {
        accepted_patches(&s.sim, &id) == 1
    })
    .await;
    // The daemon journals "sent" once it has the answer: wait for it to be stored.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match s.journalled_step(&id, "sent:patch_conversation").await {
            Some(true) => break,
            None => {
                tokio::time::sleep(Duration::from_millis(700)).await;
                break;
            }
            Some(false) => {
                assert!(
                    Instant::now() < deadline,
                    "sent:patch_conversation never journalled"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    s.kill().await;
    assert_eq!(
        accepted_teardowns(&s.sim, &id),
        0,
        "killed before the first run escalated"
    );
    assert_eq!(s.sim.is_closed(&id), Some(false));
    s.start().await;
    s.finish(std::slice::from_ref(&id), Duration::from_secs(20))
        .await;
    assert_eq!(
        accepted_patches(&s.sim, &id),
        1,
        "no second PATCH after a restart"
    );
    assert_eq!(accepted_teardowns(&s.sim, &id), 1, "the restart escalated");
    assert_eq!(
        s.logged_outcomes(&id).last().map(String::as_str),
        Some("escalated_confirmed")
    );
}

/// (c) Killed between the farewell and the disconnect (the PATCH held; the platform
/// drops it when the client goes). The restart finds the conversation open, does not
/// send the farewell again, and disconnects it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_between_the_farewell_and_the_disconnect() {
    let mut s = Scenario::new("farewell-then-kill", sim_config()).await;
    s.config(6000, "farewell = \"Thanks, goodbye\"");
    s.start().await;
    s.sim.hold_requests(RequestDelay {
        path_prefix: MESSAGES.into(),
        method: Some("PATCH".into()),
        delay: Duration::from_secs(3),
        count: 1,
        completes_without_client: false,
    });
    let id = s.create(true);
    wait_until(Duration::from_secs(15), "the PATCH to be held", || {
        status_of(&s.sim, |r| is_patch(r, &id)) == Some(0)
    })
    .await;
    assert_eq!(messages_for(&s.sim, &id), 1, "the farewell went first");
    s.kill().await;
    wait_until(Duration::from_secs(15), "the held PATCH to end", || {
        status_of(&s.sim, |r| is_patch(r, &id)).is_some_and(|st| st != 0)
    })
    .await;
    let held = status_of(&s.sim, |r| is_patch(r, &id));
    eprintln!("held PATCH ended with status {held:?} (499: dropped with its client)");
    s.start().await;
    s.finish(std::slice::from_ref(&id), Duration::from_secs(20))
        .await;
    assert_eq!(messages_for(&s.sim, &id), 1, "exactly one farewell");
    if held == Some(499) {
        assert_eq!(
            accepted_patches(&s.sim, &id),
            1,
            "the restart disconnected it"
        );
    }
}

/// (c) Killed while the farewell itself is in flight (the platform delivers it anyway).
/// The journal says "about to send" without "sent": the restart skips the farewell
/// (at most once) and closes the conversation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_while_the_farewell_is_in_flight() {
    let mut s = Scenario::new("farewell-in-flight", sim_config()).await;
    s.config(6000, "farewell = \"Thanks, goodbye\"");
    s.start().await;
    s.sim
        .delay_requests(MESSAGES, Some("POST"), Duration::from_secs(3), 1);
    let id = s.create(true);
    wait_until(Duration::from_secs(15), "the farewell to be held", || {
        status_of(&s.sim, |r| farewell_post(r, &id)) == Some(0)
    })
    .await;
    s.kill().await;
    wait_until(
        Duration::from_secs(15),
        "the held farewell to be served",
        || status_of(&s.sim, |r| farewell_post(r, &id)).is_some_and(|st| st != 0),
    )
    .await;
    assert_eq!(
        accepted_patches(&s.sim, &id),
        0,
        "killed before the disconnect"
    );
    s.start().await;
    s.finish(std::slice::from_ref(&id), Duration::from_secs(20))
        .await;
    let farewells = s
        .sim
        .requests()
        .iter()
        .filter(|r| farewell_post(r, &id))
        .count();
    assert_eq!(farewells, 1, "the restart did not try the farewell again");
    assert!(
        s.logged(2, &id, "farewell skipped"),
        "the restart said why it skipped the farewell"
    );
    assert!(messages_for(&s.sim, &id) <= 1);
    assert_eq!(accepted_patches(&s.sim, &id), 1);
}

/// (d) Killed during a burst of 200 matches queued behind a small REST budget; the
/// restart (a larger budget) closes every one, none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_during_a_burst_queued_behind_the_budget() {
    let mut s = Scenario::new("burst", sim_config()).await;
    // 120 a minute (2 a second after a burst of 12): most of the 200 queue.
    s.config(120, "");
    s.start().await;
    let ids: Vec<String> = (0..200).map(|_| s.create(false)).collect();
    let closed = |s: &Scenario| {
        ids.iter()
            .filter(|id| s.sim.is_closed(id) == Some(true))
            .count()
    };
    wait_until(Duration::from_secs(30), "20 closes", || closed(&s) >= 20).await;
    s.kill().await;
    let at_kill = closed(&s);
    assert!(
        at_kill < 150,
        "the kill came while most were queued ({at_kill} closed)"
    );
    s.config(6000, "");
    s.start().await;
    s.finish(&ids, Duration::from_secs(60)).await;
    eprintln!("burst: {at_kill} of 200 closed before the kill, the rest after the restart");
}

/// (e) SIGTERM while matches keep arriving: closes in flight drain (one held 5 s keeps
/// the drain going), matches during the drain are journalled as deferred, and the next
/// start closes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drain_while_matches_arrive() {
    let mut s = Scenario::new("drain", sim_config()).await;
    s.config(6000, "");
    s.start().await;
    let mut ids = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(40));
    for _ in 0..25 {
        tick.tick().await;
        ids.push(s.create(false));
    }
    s.sim
        .delay_requests(MESSAGES, Some("PATCH"), Duration::from_secs(5), 2);
    let held: Vec<String> = (0..2).map(|_| s.create(false)).collect();
    ids.extend(held.iter().cloned());
    wait_until(Duration::from_secs(15), "a PATCH to be held", || {
        held.iter()
            .any(|id| status_of(&s.sim, |r| is_patch(r, id)) == Some(0))
    })
    .await;
    s.sigterm();
    let mut during_drain = Vec::new();
    for _ in 0..25 {
        tick.tick().await;
        if s.exited() {
            break;
        }
        let id = s.create(false);
        during_drain.push(id.clone());
        ids.push(id);
    }
    // Seen alive after the last one was created: every one was created before it exited.
    assert!(
        !s.exited(),
        "the drain outlasted the matches (a close held 5 s)"
    );
    let status = s.wait_exit(Duration::from_secs(30)).await;
    assert!(status.success(), "clean exit after the drain: {status}");
    let deferred = s
        .log_lines()
        .iter()
        .filter(|v| {
            v["conversation_id"]
                .as_str()
                .is_some_and(|id| during_drain.iter().any(|d| d == id))
                && v.to_string().contains("deferred")
        })
        .count();
    if let Some(h) = s.history().await {
        let journalled = h
            .iter()
            .filter(|e| e["kind"] == "decision" && e["deferred"] == true)
            .count();
        assert!(
            journalled >= 1,
            "matches during the drain journalled as deferred"
        );
    }
    assert!(deferred >= 1, "matches during the drain logged as deferred");
    let open_at_exit = ids
        .iter()
        .filter(|id| s.sim.is_closed(id) != Some(true))
        .count();
    s.start().await;
    s.finish(&ids, Duration::from_secs(30)).await;
    eprintln!(
        "drain: {} created before SIGTERM, {} during the drain; {open_at_exit} open at exit, \
         closed by the next start",
        ids.len() - during_drain.len(),
        during_drain.len()
    );
}

/// Login outage: the token revoked and the login host answering 503 for
/// `OUTAGE` while a burst of 30 matches arrives. No close can get a token; each retries
/// until the rule's `retry_for` (2 min) and all end confirmed once login recovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_outage_during_a_burst() {
    const OUTAGE: Duration = Duration::from_secs(30);
    let mut s = Scenario::new("login-outage", sim_config()).await;
    s.config(6000, "");
    s.start().await;
    let started = Instant::now();
    s.sim.fail_requests_for("/oauth/token", 503, None, OUTAGE);
    s.sim.revoke_tokens();
    let mut ids = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(30));
    for _ in 0..30 {
        tick.tick().await;
        ids.push(s.create(false));
    }
    wait_until(Duration::from_secs(10), "a refused token grant", || {
        s.sim
            .requests()
            .iter()
            .any(|r| r.path == "/oauth/token" && r.status == 503)
    })
    .await;
    // Nothing can close during the outage.
    tokio::time::sleep_until(started + OUTAGE - Duration::from_secs(3)).await;
    let closed_early = ids
        .iter()
        .filter(|id| s.sim.is_closed(id) != Some(false))
        .count();
    assert_eq!(closed_early, 0, "nothing closed without a token");
    s.finish(&ids, Duration::from_secs(120)).await;
    let took = started.elapsed();
    for id in &ids {
        assert_eq!(accepted_patches(&s.sim, id), 1, "{id}: one PATCH accepted");
    }
    eprintln!("login outage of {OUTAGE:?}: all 30 confirmed {took:?} after it began");
}

/// (h) Restarted with about a thousand unfinished closes and a small budget: the restart
/// listens first (channel created, subscribed and connected within seconds, although the
/// backlog needs minutes of the budget), and matches made while the backlog drains are
/// decided at once, not left behind it. Then a larger budget drains everything, the
/// conversations that started and got their intent while no daemon ran included (found
/// by a start-up listing, whose reads queue with the close steps): each closed, none
/// twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_with_a_thousand_unfinished_closes_listens_first() {
    let mut s = Scenario::new("backlog", sim_config()).await;
    // 120 a minute: the backlog alone would take eight minutes.
    s.config(120, "");
    s.start().await;
    let mut ids: Vec<String> = (0..1000).map(|_| s.create(false)).collect();
    let closed = |s: &Scenario, ids: &[String]| {
        ids.iter()
            .filter(|id| s.sim.is_closed(id) == Some(true))
            .count()
    };
    wait_until(Duration::from_secs(60), "10 closes", || {
        closed(&s, &ids) >= 10
    })
    .await;
    // Every match is journalled by now (decisions are written within milliseconds; the
    // closes queue behind the budget).
    wait_until(Duration::from_secs(30), "1,000 decisions logged", || {
        std::fs::read_to_string(s.log(1))
            .map(|l| l.matches("rule matched").count() >= 1000)
            .unwrap_or(false)
    })
    .await;
    s.kill().await;
    let at_kill = closed(&s, &ids);
    // Born, with their intent, while no daemon ran.
    let dark: Vec<String> = (0..5).map(|_| s.create(false)).collect();
    let restarted = Instant::now();
    s.start().await;
    let listening = restarted.elapsed();
    assert!(
        listening < Duration::from_secs(15),
        "the restart connected its socket only after {listening:?}"
    );
    // Matches while the backlog drains.
    let fresh: Vec<String> = (0..5).map(|_| s.create(false)).collect();
    let log = s.log(2);
    wait_until(
        Duration::from_secs(30),
        "the fresh conversations decided",
        || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            fresh.iter().all(|id| {
                text.lines()
                    .any(|l| l.contains("rule matched") && l.contains(id.as_str()))
            })
        },
    )
    .await;
    let ready_ms = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .find(|l| l.contains("every configured channel live: ready"))
        .map(str::to_owned);
    eprintln!(
        "backlog: {} unfinished at the kill; the restart's socket connected after {} ms; {:?}",
        1000 - at_kill,
        listening.as_millis(),
        ready_ms
    );
    assert!(ready_ms.is_some(), "the restart said it was ready");
    s.kill().await;
    s.config(6000, "");
    s.start().await;
    ids.extend(dark);
    ids.extend(fresh);
    s.finish(&ids, Duration::from_secs(120)).await;
}

/// SIGTERM with hundreds of closes queued behind the budget: the process exits within
/// `[daemon] stop_timeout` (closes not yet sent stay unfinished in the journal), and the
/// next start closes every one of them, none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_hundreds_of_closes_queued_keeps_the_stop_bound() {
    const STOP: Duration = Duration::from_secs(4);
    let mut s = Scenario::new("bound", sim_config()).await;
    // 120 a minute: 700 closes would take about six minutes.
    s.config(120, "");
    s.daemon_setting(&format!("stop_timeout = \"{}s\"", STOP.as_secs()));
    s.start().await;
    let ids: Vec<String> = (0..700).map(|_| s.create(false)).collect();
    wait_until(Duration::from_secs(60), "700 decisions logged", || {
        std::fs::read_to_string(s.log(1))
            .map(|l| l.matches("rule matched").count() >= 700)
            .unwrap_or(false)
    })
    .await;
    // Genesys then rate-limits every call for 90 s and the socket drops: the closes and
    // the stream's reconnect all wait on a Retry-After longer than the stop bound.
    s.sim
        .fail_requests_for("/api/v2/", 429, Some(90), Duration::from_secs(600));
    s.sim.drop_sockets();
    // Rate-limited (the budget then holds every request, the stream's reconnect
    // included, for the 90 s) and without a socket.
    wait_until(Duration::from_secs(30), "a 429 and the socket gone", || {
        s.sim.connected_sockets() == 0 && s.sim.requests().iter().any(|r| r.status == 429)
    })
    .await;
    let signalled = Instant::now();
    s.sigterm();
    // The bound is the promise under test; the slack covers a loaded machine.
    let status = s.wait_exit(STOP + Duration::from_secs(6)).await;
    let took = signalled.elapsed();
    assert!(status.success(), "clean exit: {status}");
    let open = ids
        .iter()
        .filter(|id| s.sim.is_closed(id) != Some(true))
        .count();
    eprintln!(
        "stop bound: exited {} ms after SIGTERM with stop_timeout {} s; {open} of 700 left \
         for the next start",
        took.as_millis(),
        STOP.as_secs()
    );
    assert!(open > 0, "the scenario had closes left to carry over");
    s.sim.clear_request_faults();
    s.config(6000, "");
    s.start().await;
    s.finish(&ids, Duration::from_secs(120)).await;
}

/// The fields an on-call engineer filters on: `rule matched` names the event's id
/// `event_correlation_id` as the outcome line does; a retried call names its
/// conversation; 503s for seconds write one warning per operation per 10 s, the rest at
/// debug.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_lines_an_on_call_engineer_filters_on() {
    let mut s = Scenario::new("fields", sim_config()).await;
    s.config(6000, "");
    s.start().await;
    s.sim
        .fail_requests_for(MESSAGES, 503, None, Duration::from_secs(4));
    let ids: Vec<String> = (0..20).map(|_| s.create(false)).collect();
    s.finish(&ids, Duration::from_secs(90)).await;
    let lines = s.log_lines();
    let matched: Vec<&Value> = lines
        .iter()
        .filter(|v| v["message"] == "rule matched")
        .collect();
    assert_eq!(matched.len(), ids.len());
    for v in &matched {
        assert!(v.get("correlation_id").is_none(), "{v}");
        assert!(v["event_correlation_id"].is_string(), "{v}");
    }
    let retries: Vec<&Value> = lines
        .iter()
        .filter(|v| v["message"] == "API call failed; retrying")
        .collect();
    let warned = retries.iter().filter(|v| v["level"] == "WARN").count();
    eprintln!(
        "retries: {} logged, {warned} at warn, over 4 s of 503s",
        retries.len()
    );
    assert!(retries.len() >= ids.len(), "the 503s were retried");
    // One per operation per 10 s: the PATCH and the read, each once in the 4 s.
    assert!(
        (1..=4).contains(&warned),
        "{warned} warnings for {} retries",
        retries.len()
    );
    for v in &retries {
        let path = v["path"].as_str().expect("path");
        let id = v["conversation_id"].as_str().expect("conversation_id");
        assert!(path.contains(id), "{v}");
    }
}
