//! `genesys-closer demo`: the simulator and the daemon together on loopback.
//!
//! No credentials and no Genesys org: the simulator plays Genesys (and the bot flow's data
//! action), the daemon runs with an embedded config (parsed by the same validator as a
//! real file) pointed at it, and the demo creates conversations on every path at once:
//! - queue conversations, seen on the queue topics;
//! - bot-phase conversations no queue or user topic shows, in four shapes:
//!   flow discovery with the intent on `.attributes`; flow discovery with the intent
//!   posted by the flow's data action; a `.customer.start` trigger posting the id and
//!   the start event's `eventTime`, the intent on `.attributes`; and the data action
//!   alone, posting id and intent for a conversation the daemon never heard of.
//!   Two more trigger shapes, only when asked for (`--paths`), measure Set-up B's
//!   catch-up reads: a trigger that calls after the bot set its intent (a fast bot),
//!   and a workflow that passes no `eventTime`.
//!
//! Intents rotate so some match the demo rule and some do not. With `--conversations N` it
//! stops after N and prints one JSON summary line, with REST requests per closure taken
//! from the simulator's own request log.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Duration;

use secrecy::SecretString;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::closer::{CloseReport, Outcome};
use crate::config::{Config, ConfigErrors};
use crate::daemon::{self, RunOptions};
use genesys_sim::{
    self, BotConversationSpec, BotPurpose, ConversationSpec, DataAction, RecordedRequest,
    SimConfig, SimHandle,
};

/// Queues the demo conversations are routed to.
pub const DEMO_QUEUES: [&str; 2] = [
    "8f14e45f-ceea-467a-9575-3b9d1c2e4a77",
    "0c9a5d3e-6b1f-4e28-9a7d-2f5c8e1b4d60",
];

/// The bot flow the daemon discovers conversations in.
pub const DEMO_FLOW: &str = "a3c9e5f1-8b27-4d60-9e4a-2f7b1c6d8e93";
/// A bot flow the daemon does not watch: only the intake tells of its conversations.
const OTHER_FLOW: &str = "6e2f0c4b-93d1-4a7e-8b25-d0c4f1a9e376";

/// The demo's intake credential (a loopback demo value, not a secret).
const DEMO_INTAKE_TOKEN: &str = "demo-intake-credential-not-a-secret";

/// Intents the demo bot sets, in rotation; `None` is a conversation where the bot set none.
const DEMO_INTENTS: [Option<&str>; 4] = [
    Some("Goodbye"),
    Some("CancelSubscription"),
    Some("TalkToAgent"),
    None,
];

/// How long after its start a bot sets its intent: longer than the subscription window,
/// as a guest takes a few seconds to tell the bot what they want.
const INTENT_AFTER: Duration = Duration::from_millis(1500);

/// [`Shape::TriggerLate`]: the trigger calls this long after the bot set its intent.
const TRIGGER_LATE_BY: Duration = Duration::from_millis(500);

/// The embedded config; `{URL}` becomes the simulator's address.
const DEMO_CONFIG: &str = r#"
[genesys]
api_url = "{URL}"
login_url = "{URL}"
client_id = "5e1f0c1e-51a0-4c1e-8e57-0000000c11e7"
# The simulator has no org rate limit, and this run pushes ten conversations a second
# (about 300 requests a minute of closes alone, Genesys's whole allowance): the budget is
# raised so the run measures the stream, not the budget (bench/burst.sh measures that).
requests_per_minute = 6000

[stream]
queues = ["8f14e45f-ceea-467a-9575-3b9d1c2e4a77", "0c9a5d3e-6b1f-4e28-9a7d-2f5c8e1b4d60"]
flows = ["a3c9e5f1-8b27-4d60-9e4a-2f7b1c6d8e93"]
subscribe_window = "1s"
unsubscribe_window = "3s"
heartbeat_timeout = "15s"
ping_after = "7s"
backoff_min = "200ms"
backoff_max = "5s"

[intake]
enabled = true
listen = "127.0.0.1:0"

[metrics]
enabled = true
listen = "127.0.0.1:0"

[log]
format = "human"

[[rule]]
name = "goodbye"
intents = ["Goodbye", "CancelSubscription"]
confirm_timeout = "5s"
"#;

/// Demo settings from the command line.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Stop after this many conversations (None: until Ctrl-C).
    pub conversations: Option<u64>,
    /// New conversations per second.
    pub rate: f64,
    /// The shapes to create, in rotation (empty: all of [`Shape::ALL`]).
    pub paths: Vec<Shape>,
}

/// The last line of a finite demo.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DemoSummary {
    /// Conversations created.
    pub conversations: u64,
    /// Conversations a rule matched (close sequences reported).
    pub matched: u64,
    /// Confirmed by the pushed event or the one read.
    pub confirmed: u64,
    /// Confirmed after the full teardown.
    pub escalated_confirmed: u64,
    /// Closed before the decision.
    pub already_closed: u64,
    /// Dry runs.
    pub dry_run: u64,
    /// Not confirmed.
    pub failed: u64,
    /// Matched conversations still without an outcome when the demo gave up waiting.
    pub missing: u64,
    /// Median decision-to-confirmed latency, ms.
    pub p50_ms: f64,
    /// 99th percentile decision-to-confirmed latency, ms.
    pub p99_ms: f64,
    /// Largest decision-to-confirmed latency, ms.
    pub max_ms: f64,
    /// Close reports by the source whose event decided (`queue`, `detail`, `intake`, ...).
    pub by_source: BTreeMap<&'static str, u64>,
    /// Bot-phase conversations a rule matched.
    pub bot_phase_matched: u64,
    /// Bot-phase closes confirmed.
    pub bot_phase_confirmed: u64,
    /// Every REST request to the API (the token grant excluded).
    pub rest_requests: u64,
    /// REST requests about queue conversations per queue-conversation closure.
    pub rest_per_queue_closure: f64,
    /// REST requests for the bot phase (its conversations' calls, reads, and every
    /// per-conversation subscription request) per bot-phase closure.
    pub rest_per_bot_closure: f64,
    /// Catch-up and verify reads.
    pub catchup_reads: u64,
}

/// The queue the simulator-backed runs (fault matrix, burst, latency) watch.
pub(crate) const SIM_QUEUE: &str = "8f14e45f-ceea-467a-9575-3b9d1c2e4a77";
/// The bot flow those runs discover conversations in.
pub(crate) const SIM_FLOW: &str = "a3c9e5f1-8b27-4d60-9e4a-2f7b1c6d8e93";

/// A daemon running against a simulator, for the demo and the fault matrix.
pub(crate) struct Harness {
    /// The daemon's task.
    pub task: tokio::task::JoinHandle<Result<daemon::Summary, daemon::DaemonError>>,
    /// Its close reports.
    pub reports: mpsc::UnboundedReceiver<CloseReport>,
    /// Cancel to stop it (it drains first).
    pub stop: CancellationToken,
    /// The daemon's journal directory, removed when the harness goes.
    pub _state: StateDir,
    /// Where the daemon's intake listens.
    pub intake: std::net::SocketAddr,
    /// The runtime of its own the daemon runs on (`Launch::own_runtime`); dropping it
    /// ends every task of the daemon at once.
    pub runtime: Option<OwnRuntime>,
}

impl Harness {
    /// Stops the daemon as abruptly as a process can be stopped from inside one: on a
    /// runtime of its own, every task it spawned (streams, closes in flight, intake) is
    /// dropped at its next await, with no drain and no farewell to Genesys; sockets
    /// close as the kernel would close them. Without one, only its main task is
    /// aborted (tasks it spawned run on). Hands back the journal directory, still
    /// there, for a restart ([`StateDir::wait_unlocked`] first).
    pub(crate) fn kill(self) -> StateDir {
        match self.runtime {
            Some(rt) => drop(rt),
            None => self.task.abort(),
        }
        self._state
    }
}

/// A runtime of the daemon's own, shut down without waiting when dropped (allowed
/// inside an async context, unlike dropping a `Runtime`).
pub(crate) struct OwnRuntime(Option<tokio::runtime::Runtime>);

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// A private journal directory for a demo or matrix run (never /var/lib), removed on
/// drop.
pub(crate) struct StateDir(std::path::PathBuf);

impl StateDir {
    fn new() -> std::io::Result<Self> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "genesys-closer-demo-{}-{n}-{:x}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir)?;
        Ok(StateDir(dir))
    }

    /// Waits until no daemon holds the directory's lock any more (a killed daemon's
    /// tasks release it as they are dropped), at most `limit`; whether it is free.
    pub(crate) async fn wait_unlocked(&self, limit: Duration) -> bool {
        let lock = self.0.join("lock");
        let until = Instant::now() + limit;
        loop {
            let free = match std::fs::OpenOptions::new().write(true).open(&lock) {
                // Locked and released again at once (dropped).
                Ok(f) => f.try_lock().is_ok(),
                // No lock file: no daemon ever ran here.
                Err(_) => true,
            };
            if free || Instant::now() >= until {
                return free;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// How to start a daemon with [`start_daemon_with`].
#[derive(Default)]
pub(crate) struct Launch {
    /// The journal directory (a restart's: the killed daemon's); `None`: a fresh one.
    pub state: Option<StateDir>,
    /// Run the daemon on a runtime of its own, so that [`Harness::kill`] ends every
    /// task it spawned.
    pub own_runtime: bool,
}

/// Starts the daemon on `config` with its intake on, makes the simulator play the bot
/// flow's data action against that intake, and waits until every channel's socket is
/// connected (conversations created before are found only by the daemon's start-up
/// listing of the watched queues and flows).
pub(crate) async fn start_daemon_on(
    sim: &SimHandle,
    config: &Config,
    secret: SecretString,
    intake_token: &str,
) -> anyhow::Result<Harness> {
    start_daemon_with(sim, config, secret, intake_token, Launch::default()).await
}

/// [`start_daemon_on`], on the journal directory and runtime `launch` says.
pub(crate) async fn start_daemon_with(
    sim: &SimHandle,
    config: &Config,
    secret: SecretString,
    intake_token: &str,
    launch: Launch,
) -> anyhow::Result<Harness> {
    let (reports_tx, reports) = mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    let (bound_tx, bound_rx) = oneshot::channel();
    let (metrics_tx, metrics_rx) = oneshot::channel();
    let state = match launch.state {
        Some(s) => s,
        None => StateDir::new()?,
    };
    let mut config = config.clone();
    config.daemon.state_dir = state.0.clone();
    let runtime = if launch.own_runtime {
        Some(OwnRuntime(Some(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("daemon")
                .enable_all()
                .build()?,
        )))
    } else {
        None
    };
    let task = {
        let opts = RunOptions {
            shutdown: stop.clone(),
            drain_timeout: Duration::from_secs(10),
            reports: Some(reports_tx),
            notify_systemd: false,
            reload: None,
            intake_token: Some(SecretString::from(intake_token.to_string())),
            intake_bound: Some(bound_tx),
            metrics_bound: Some(metrics_tx),
            record: None,
        };
        let config = config.clone();
        let run = async move { daemon::run(&config, secret, opts).await };
        match runtime.as_ref().and_then(|r| r.0.as_ref()) {
            Some(rt) => rt.spawn(run),
            None => tokio::spawn(run),
        }
    };
    let intake = tokio::time::timeout(Duration::from_secs(20), bound_rx)
        .await
        .map_err(|_| anyhow::anyhow!("the daemon's intake did not start within 20 s"))??;
    // Started before the intake: known by now when `[metrics]` is on.
    if config.metrics.is_some()
        && let Ok(addr) = metrics_rx.await
    {
        eprintln!("demo: metrics at http://{addr}/metrics (health: /healthz, /readyz)");
    }
    sim.set_data_action(Some(DataAction {
        url: format!("http://{intake}/v1/intents"),
        authorization: Some(format!("Bearer {intake_token}")),
    }));
    let ready_by = Instant::now() + Duration::from_secs(20);
    while sim.connected_sockets() < config.stream.channels_needed() {
        if Instant::now() > ready_by || task.is_finished() {
            anyhow::bail!("the daemon did not connect to the simulator within 20 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(Harness {
        task,
        reports,
        stop,
        _state: state,
        intake,
        runtime,
    })
}

/// The embedded config, pointed at `base_url`.
pub fn demo_config(base_url: &str) -> Result<Config, ConfigErrors> {
    let text = DEMO_CONFIG.replace("{URL}", base_url);
    Config::parse(&text, Path::new("<built-in demo config>"))
}

/// The shapes a demo conversation takes, in rotation (`--paths`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// Routed to a watched queue: the queue topic shows it.
    Queue,
    /// Flow discovery; the intent on `.attributes`.
    FlowAttributes,
    /// Flow discovery; the intent posted by the flow's data action.
    FlowDataAction,
    /// A `.customer.start` trigger posts the id and `eventTime` at the start; the intent
    /// on `.attributes`.
    TriggerAttributes,
    /// Only the data action tells of it, with its intent.
    DataActionOnly,
    /// A fast bot: the trigger posts the id and `eventTime` [`TRIGGER_LATE_BY`] after
    /// the bot set its intent, which only a catch-up read can find.
    TriggerLate,
    /// The trigger's workflow passes no `eventTime`: the daemon cannot know how late
    /// it heard, and reads each conversation once.
    TriggerNoTime,
}

impl Shape {
    /// Every shape, in the demo's default rotation.
    pub const ALL: [Shape; 5] = [
        Shape::Queue,
        Shape::FlowAttributes,
        Shape::FlowDataAction,
        Shape::TriggerAttributes,
        Shape::DataActionOnly,
    ];

    /// Every shape `--paths` accepts: the default rotation and the trigger variants.
    pub const NAMED: [Shape; 7] = [
        Shape::Queue,
        Shape::FlowAttributes,
        Shape::FlowDataAction,
        Shape::TriggerAttributes,
        Shape::DataActionOnly,
        Shape::TriggerLate,
        Shape::TriggerNoTime,
    ];

    /// The `--paths` name.
    pub fn name(self) -> &'static str {
        match self {
            Shape::Queue => "queue",
            Shape::FlowAttributes => "flow",
            Shape::FlowDataAction => "flow+intake",
            Shape::TriggerAttributes => "trigger",
            Shape::DataActionOnly => "intake",
            Shape::TriggerLate => "trigger-late",
            Shape::TriggerNoTime => "trigger-no-time",
        }
    }

    /// Parses a `--paths` name.
    pub fn parse(name: &str) -> Option<Shape> {
        Shape::NAMED.into_iter().find(|s| s.name() == name)
    }
}

fn create(sim: &SimHandle, shapes: &[Shape], n: u64) -> (String, Shape, Option<&'static str>) {
    let shape = shapes[(n % shapes.len() as u64) as usize];
    // Intents advance once per full round of shapes, so every shape meets every intent.
    let intent = DEMO_INTENTS[((n / shapes.len() as u64) % DEMO_INTENTS.len() as u64) as usize];
    let bot = |flow: &str, on_start: bool, on_intent: bool| BotConversationSpec {
        flow_id: flow.into(),
        purpose: if n.is_multiple_of(2) {
            BotPurpose::Workflow
        } else {
            BotPurpose::Botflow
        },
        intent_attribute: "Bot.Intent".into(),
        intent: intent.map(str::to_string),
        intent_after: INTENT_AFTER,
        transfer: None,
        post_on_start: on_start,
        post_on_intent: on_intent,
    };
    let id = match shape {
        Shape::Queue => sim.create_conversation(ConversationSpec {
            queue_id: DEMO_QUEUES[(n % 2) as usize].to_string(),
            intent_attribute: "Bot.Intent".into(),
            intent: intent.map(str::to_string),
            agent_user_id: None,
        }),
        Shape::FlowAttributes => sim.create_bot_conversation(bot(DEMO_FLOW, false, false)),
        Shape::FlowDataAction => sim.create_bot_conversation(bot(DEMO_FLOW, false, true)),
        Shape::TriggerAttributes => sim.create_bot_conversation(bot(OTHER_FLOW, true, false)),
        Shape::DataActionOnly => sim.create_bot_conversation(bot(OTHER_FLOW, false, true)),
        Shape::TriggerLate => {
            let id = sim.create_bot_conversation(bot(OTHER_FLOW, false, false));
            let (sim, call) = (sim.clone(), id.clone());
            tokio::spawn(async move {
                tokio::time::sleep(INTENT_AFTER + TRIGGER_LATE_BY).await;
                sim.post_trigger(&call, true);
            });
            id
        }
        Shape::TriggerNoTime => {
            let id = sim.create_bot_conversation(bot(OTHER_FLOW, false, false));
            sim.post_trigger(&id, false);
            id
        }
    };
    (id, shape, intent)
}

/// Runs the demo; returns the summary (also printed as JSON by the CLI).
pub async fn run(opts: DemoOptions, shutdown: CancellationToken) -> anyhow::Result<DemoSummary> {
    let (sim, config, secret) = start_simulator().await?;
    let Harness {
        task: daemon_task,
        reports: reports_rx,
        stop: stop_daemon,
        _state,
        ..
    } = start_daemon_on(&sim, &config, secret, DEMO_INTAKE_TOKEN).await?;
    let baseline_topics = topic_total(&sim);

    let mut watch = Watch::new(reports_rx);
    let load = create_load(&sim, &config, &opts, &shutdown, &mut watch).await;
    watch.await_outcomes(&load, &shutdown).await;
    leave_and_settle(&sim, &config, &load.unmatched, baseline_topics, &shutdown).await;
    // Cleared before the summary: stdout stays exactly the JSON line.
    let (mut reports_rx, mut reports) = watch.end();
    stop_daemon.cancel();
    let run_summary = match daemon_task.await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(e.into()),
        Err(e) => anyhow::bail!("daemon task failed: {e}"),
    };
    while let Ok(r) = reports_rx.try_recv() {
        reports.push(r);
    }
    let requests = sim.requests();
    sim.shutdown().await;
    let mut summary = summarise(load.created, load.expected, &reports);
    summary.catchup_reads = run_summary.catchup_reads;
    count_requests(
        &mut summary,
        &requests,
        &reports,
        &load.queue_ids,
        &load.bot_ids,
    );
    Ok(summary)
}

/// The set-up: the simulator, the embedded config pointed at it, logging, and the
/// client secret the simulator accepts.
async fn start_simulator() -> anyhow::Result<(SimHandle, Config, SecretString)> {
    let sim_cfg = SimConfig {
        heartbeat_interval: Duration::from_secs(5),
        ..SimConfig::default()
    };
    let secret = SecretString::from(sim_cfg.client_secret.clone());
    let sim = genesys_sim::start(sim_cfg).await?;
    let config = demo_config(&sim.base_url())?;
    crate::telemetry::init_logging(&config.log);
    tracing::info!(simulator = %sim.base_url(), "demo: simulator listening");
    Ok((sim, config, secret))
}

/// The conversations the demo created, and what it expects of them.
#[derive(Default)]
struct Load {
    /// Conversations created.
    created: u64,
    /// Of those, the ones whose intent a rule matches.
    expected: u64,
    /// The bot-phase ones.
    bot_ids: HashSet<String>,
    /// The queue ones.
    queue_ids: HashSet<String>,
    /// Those whose intent no rule matches: their guests leave on their own at the end.
    unmatched: Vec<String>,
}

impl Load {
    /// Counts conversation `id`, of `shape`, with `intent`.
    fn add(&mut self, id: String, shape: Shape, intent: Option<&str>, rule_intents: &[&str]) {
        self.created += 1;
        if shape == Shape::Queue {
            self.queue_ids.insert(id.clone());
        } else {
            self.bot_ids.insert(id.clone());
        }
        if intent.is_some_and(|i| rule_intents.contains(&i)) {
            self.expected += 1;
        } else {
            self.unmatched.push(id);
        }
    }
}

/// The load: conversations at `opts.rate` in the rotation of shapes, until
/// `opts.conversations` (or Ctrl-C), taking the reports that come meanwhile.
async fn create_load(
    sim: &SimHandle,
    config: &Config,
    opts: &DemoOptions,
    shutdown: &CancellationToken,
    watch: &mut Watch,
) -> Load {
    let rule_intents: Vec<&str> = config
        .rules
        .iter()
        .flat_map(|r| r.intents.iter().map(String::as_str))
        .collect();
    let shapes: Vec<Shape> = if opts.paths.is_empty() {
        Shape::ALL.to_vec()
    } else {
        opts.paths.clone()
    };
    let period = Duration::from_secs_f64(1.0 / opts.rate.max(0.001));
    let mut tick = tokio::time::interval(period);
    let mut load = Load::default();
    let limit = opts.conversations.unwrap_or(u64::MAX);
    while load.created < limit {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = watch.redraw.tick(), if watch.status.is_some() => watch.show(load.created),
            Some(r) = watch.rx.recv() => watch.reports.push(r),
            _ = tick.tick() => {
                let (id, shape, intent) = create(sim, &shapes, load.created);
                load.add(id, shape, intent, &rule_intents);
            }
        }
    }
    load
}

/// The daemon's close reports as they come, and the progress line.
struct Watch {
    /// Where the daemon sends its reports.
    rx: mpsc::UnboundedReceiver<CloseReport>,
    /// The reports so far.
    reports: Vec<CloseReport>,
    /// Live progress on one line for a person at a terminal; nothing otherwise.
    status: Option<crate::progress::StatusLine>,
    /// When to redraw the progress line.
    redraw: tokio::time::Interval,
}

impl Watch {
    /// Watches `rx`, with a progress line when stderr is a terminal.
    fn new(rx: mpsc::UnboundedReceiver<CloseReport>) -> Self {
        Watch {
            rx,
            reports: Vec::new(),
            status: crate::progress::StatusLine::for_terminal(),
            redraw: tokio::time::interval(PROGRESS_EVERY),
        }
    }

    /// Redraws the progress line.
    fn show(&self, created: u64) {
        show_progress(self.status.as_ref(), created, &self.reports);
    }

    /// The measurement: waits for every matched conversation's outcome (bounded: bot
    /// intents come late).
    async fn await_outcomes(&mut self, load: &Load, shutdown: &CancellationToken) {
        let wait_until = Instant::now() + INTENT_AFTER + TRIGGER_LATE_BY + Duration::from_secs(30);
        while (self.reports.len() as u64) < load.expected && !shutdown.is_cancelled() {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep_until(wait_until) => break,
                _ = self.redraw.tick(), if self.status.is_some() => self.show(load.created),
                r = self.rx.recv() => match r {
                    Some(r) => self.reports.push(r),
                    None => break,
                },
            }
        }
    }

    /// Clears the progress line; hands back the receiver and the reports so far.
    fn end(self) -> (mpsc::UnboundedReceiver<CloseReport>, Vec<CloseReport>) {
        drop(self.status);
        (self.rx, self.reports)
    }
}

/// The guests of unmatched conversations leave on their own; the daemon must not have
/// touched them. Their topics (and the closed ones') are then removed in a batch: waits
/// for that, so the request count includes the removals.
async fn leave_and_settle(
    sim: &SimHandle,
    config: &Config,
    unmatched: &[String],
    baseline_topics: usize,
    shutdown: &CancellationToken,
) {
    for id in unmatched {
        sim.customer_leaves(id);
    }
    let settle_by = Instant::now() + config.stream.unsubscribe_window + Duration::from_secs(5);
    while topic_total(sim) > baseline_topics
        && Instant::now() < settle_by
        && !shutdown.is_cancelled()
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How often the terminal's progress line is redrawn.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// The progress line: counts so far and the p99 of confirmed closes.
fn show_progress(
    status: Option<&crate::progress::StatusLine>,
    created: u64,
    reports: &[CloseReport],
) {
    let Some(status) = status else { return };
    let s = summarise(created, 0, reports);
    status.set(&format!(
        "demo: {created} created, {} matched, {} confirmed, {} failed, p99 {:.0} ms",
        s.matched,
        s.confirmed + s.escalated_confirmed,
        s.failed,
        s.p99_ms
    ));
}

fn topic_total(sim: &SimHandle) -> usize {
    sim.channel_topic_counts().iter().map(|(_, n)| n).sum()
}

/// The conversation id in an API path, if any.
fn conversation_in(path: &str) -> Option<&str> {
    let rest = path
        .strip_prefix("/api/v2/conversations/messages/")
        .or_else(|| path.strip_prefix("/api/v2/conversations/"))?;
    rest.split('/').next()
}

/// REST requests per closure, from the simulator's request log: what Genesys would count.
fn count_requests(
    s: &mut DemoSummary,
    requests: &[RecordedRequest],
    reports: &[CloseReport],
    queue_ids: &HashSet<String>,
    bot_ids: &HashSet<String>,
) {
    let api: Vec<&RecordedRequest> = requests
        .iter()
        .filter(|r| r.path.starts_with("/api/"))
        .collect();
    s.rest_requests = api.len() as u64;
    let for_conv = |ids: &HashSet<String>| {
        api.iter()
            .filter(|r| conversation_in(&r.path).is_some_and(|c| ids.contains(c)))
            .count() as f64
    };
    // Subscription changes after each channel's first PUT (its set-up) are the
    // per-conversation ones: batched adds (POST) and removals (PUT).
    let mut set_up = HashSet::new();
    let mut per_conversation_subs = 0.0;
    for r in &api {
        if r.path.ends_with("/subscriptions") && (r.method == "POST" || r.method == "PUT") {
            if r.method == "PUT" && set_up.insert(r.path.clone()) {
                continue;
            }
            per_conversation_subs += 1.0;
        }
    }
    let closed = |ids: &HashSet<String>| {
        reports
            .iter()
            .filter(|r| ids.contains(&*r.conversation_id))
            .filter(|r| matches!(r.outcome, Outcome::Confirmed | Outcome::EscalatedConfirmed))
            .count() as f64
    };
    let per = |n: f64, d: f64| if d > 0.0 { round3(n / d) } else { 0.0 };
    s.rest_per_queue_closure = per(for_conv(queue_ids), closed(queue_ids));
    s.rest_per_bot_closure = per(for_conv(bot_ids) + per_conversation_subs, closed(bot_ids));
    s.bot_phase_matched = reports
        .iter()
        .filter(|r| bot_ids.contains(&*r.conversation_id))
        .count() as u64;
    s.bot_phase_confirmed = closed(bot_ids) as u64;
}

fn summarise(created: u64, expected: u64, reports: &[CloseReport]) -> DemoSummary {
    let count = |o: Outcome| reports.iter().filter(|r| r.outcome == o).count() as u64;
    let mut latencies: Vec<f64> = reports
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Confirmed | Outcome::EscalatedConfirmed))
        .map(|r| r.latency.as_secs_f64() * 1000.0)
        .collect();
    latencies.sort_by(f64::total_cmp);
    let matched = reports.len() as u64;
    let mut by_source = BTreeMap::new();
    for r in reports {
        *by_source.entry(r.source.as_str()).or_insert(0) += 1;
    }
    DemoSummary {
        conversations: created,
        matched,
        confirmed: count(Outcome::Confirmed),
        escalated_confirmed: count(Outcome::EscalatedConfirmed),
        already_closed: count(Outcome::AlreadyClosed),
        dry_run: count(Outcome::DryRun),
        failed: count(Outcome::Failed),
        missing: expected.saturating_sub(matched),
        p50_ms: round3(percentile(&latencies, 0.50)),
        p99_ms: round3(percentile(&latencies, 0.99)),
        max_ms: round3(latencies.last().copied().unwrap_or(0.0)),
        by_source,
        bot_phase_matched: 0,
        bot_phase_confirmed: 0,
        rest_requests: 0,
        rest_per_queue_closure: 0.0,
        rest_per_bot_closure: 0.0,
        catchup_reads: 0,
    }
}

/// Nearest-rank percentile of sorted values (0 when empty).
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_config_is_valid() {
        let c = demo_config("http://127.0.0.1:1").expect("valid");
        assert_eq!(c.rules.len(), 1);
        assert_eq!(c.stream.queues.len(), DEMO_QUEUES.len());
        assert_eq!(c.stream.flows, [DEMO_FLOW]);
        assert!(c.intake.is_some());
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.50), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }
}
