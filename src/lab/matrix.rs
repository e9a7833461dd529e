//! `genesys-closer fault-matrix`: the stream's fault matrix, against the built-in simulator.
//!
//! Each scenario starts a fresh simulator and daemon on loopback, keeps matching and
//! non-matching conversations arriving (queue path and bot-phase path, ten a second),
//! injects one fault a second in, keeps the load going, then waits for every matching
//! conversation's outcome. A row says what a user would: how many matched, how many were
//! confirmed closed, how many were lost, how many disconnects were sent twice for one
//! conversation, how many REST requests it all took, how long closing took to work again
//! (a probe conversation created at the moment of the fault, until its close is confirmed),
//! and how many events of the scenario's conversations Genesys pushed while no socket of
//! the daemon received them (the simulator numbers every event per conversation).
//!
//! Most faults strike one channel, or the REST API, or the frames. The rows of
//! [`Fault::BLIND`] open a window in which the daemon is blind on every socket at once
//! (no mirror covers it): an outage, a kill and restart, every socket refused, stalled,
//! unsubscribed silently or gone (also with channel creation failing). What happened in
//! such a window can only be learnt by listing: the flows' conversations
//! (`POST /api/v2/analytics/flows/activity/query`) and the queues' conversations
//! (`POST /api/v2/analytics/queues/observations/query`); the `REST by kind` column
//! shows which of them a row used.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use secrecy::SecretString;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::demo::{Harness, Launch, start_daemon_with};
use crate::closer::{CloseReport, Outcome};
use crate::config::Config;
use genesys_sim::{
    self, BotConversationSpec, BotPurpose, ConversationSpec, EventRecord, Faults, RecordedRequest,
    Scope, SimConfig, SimHandle,
};

const QUEUE: &str = super::demo::SIM_QUEUE;
const FLOW: &str = super::demo::SIM_FLOW;
const TOKEN: &str = "fault-matrix-intake-credential";

/// Timings shortened so a dead socket is noticed in about 2 s (the defaults, 35 s and 45 s,
/// suit Genesys's 30 s heartbeat; the matrix would take minutes with them).
const CONFIG: &str = r#"
[genesys]
api_url = "{URL}"
login_url = "{URL}"
client_id = "5e1f0c1e-51a0-4c1e-8e57-0000000c11e7"
# The simulator has no org rate limit, and this run pushes ten conversations a second
# (about 300 requests a minute of closes alone, Genesys's whole allowance): the budget is
# raised so the run measures the stream, not the budget (bench/burst.sh measures that).
requests_per_minute = 6000

[stream]
queues = ["8f14e45f-ceea-467a-9575-3b9d1c2e4a77"]
flows = ["a3c9e5f1-8b27-4d60-9e4a-2f7b1c6d8e93"]
subscribe_window = "200ms"
unsubscribe_window = "1s"
heartbeat_timeout = "2s"
ping_after = "1s"
backoff_min = "100ms"
backoff_max = "1s"
verify_every = "1s"

[intake]
enabled = true
listen = "127.0.0.1:0"

[log]
format = "human"
level = "warn"

[[rule]]
name = "goodbye"
intents = ["Goodbye"]
confirm_timeout = "4s"
"#;

/// One fault to inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// One socket closed abruptly (the busiest channel's, as when the server node
    /// holding it goes away).
    Drop,
    /// One socket (the busiest channel's) sends nothing and answers no ping (for 4 s);
    /// connections made later work.
    Stall,
    /// `socket_closing`, then the old sockets close 500 ms later.
    SocketClosing,
    /// Channels expire (their `expires` passes): `{"result":"404"}` and closed.
    ChannelExpiry,
    /// `no_longer_subscribed` on the busiest channel: its topics are gone.
    NoLongerSubscribed,
    /// `{"result":"404"}`: the busiest channel vanishes.
    ChannelGone,
    /// Every token revoked: the next API call gets 401.
    TokenRevoked,
    /// 429 with `Retry-After: 1` on every API call for 3 s.
    RateLimited,
    /// 503 on every API call for 2 s.
    ServerErrors,
    /// Malformed, binary and oversized frames on every socket.
    BadFrames,
    /// Every event pushed twice, and out of order.
    DuplicatedReordered,
    /// The busiest channel's topics dropped by the server without a word while
    /// heartbeats go on.
    TopicsDroppedSilently,
    /// An outage: every socket dropped, and for 3 s no socket can connect and every
    /// API call gets 503.
    Outage,
    /// The daemon killed (every task dropped at once: no drain, nothing said to
    /// Genesys) and started again 2 s later on the same state directory and config,
    /// while conversations keep starting and getting their intents.
    Restart,
    /// Every socket dropped, and for 4 s WebSocket upgrades are refused (503) while
    /// the REST API works.
    SocketsDown,
    /// `{"result":"404"}` on every channel (both mirrors gone), and channel creation
    /// (`POST /api/v2/notifications/channels`) answering 503 for 3 s.
    ChannelsGoneNoCreate,
    /// Every socket sends nothing and answers no ping for 4 s; connections made later
    /// work.
    StallEvery,
    /// Every channel's topics dropped without a word while heartbeats go on.
    TopicsDroppedEvery,
    /// `{"result":"404"}` on every channel: every channel vanishes at once.
    ChannelGoneEvery,
}

impl Fault {
    /// Every scenario, in table order.
    pub const ALL: [Fault; 19] = [
        Fault::Drop,
        Fault::Stall,
        Fault::SocketClosing,
        Fault::ChannelExpiry,
        Fault::NoLongerSubscribed,
        Fault::ChannelGone,
        Fault::TokenRevoked,
        Fault::RateLimited,
        Fault::ServerErrors,
        Fault::BadFrames,
        Fault::DuplicatedReordered,
        Fault::TopicsDroppedSilently,
        Fault::Outage,
        Fault::Restart,
        Fault::SocketsDown,
        Fault::ChannelsGoneNoCreate,
        Fault::StallEvery,
        Fault::TopicsDroppedEvery,
        Fault::ChannelGoneEvery,
    ];

    /// The windows in which every socket of the daemon is blind at once (no mirror
    /// covers them): the rows after `Outage` in [`Fault::ALL`], plus `Outage`.
    pub const BLIND: [Fault; 7] = [
        Fault::Outage,
        Fault::Restart,
        Fault::SocketsDown,
        Fault::ChannelsGoneNoCreate,
        Fault::StallEvery,
        Fault::TopicsDroppedEvery,
        Fault::ChannelGoneEvery,
    ];

    /// The row's name.
    pub fn name(self) -> &'static str {
        match self {
            Fault::Drop => "one socket dropped abruptly",
            Fault::Stall => "one socket stalled (nothing sent; new connections work)",
            Fault::SocketClosing => "socket_closing, closed 500 ms later",
            Fault::ChannelExpiry => "channel expiry (4 s channel lifetime)",
            Fault::NoLongerSubscribed => "no_longer_subscribed on one channel",
            Fault::ChannelGone => "{\"result\":\"404\"} on one channel",
            Fault::TokenRevoked => "token revoked (401)",
            Fault::RateLimited => "429 Retry-After 1 s, for 3 s",
            Fault::ServerErrors => "503 for 2 s",
            Fault::BadFrames => "malformed, binary, 2 MiB frames",
            Fault::DuplicatedReordered => "duplicated and reordered events",
            Fault::TopicsDroppedSilently => "one channel's topics dropped silently",
            Fault::Outage => "outage: every socket, and the API, down for 3 s",
            Fault::Restart => "daemon killed, restarted 2 s later on the same state",
            Fault::SocketsDown => "every socket down for 4 s (upgrades refused; API up)",
            Fault::ChannelsGoneNoCreate => {
                "{\"result\":\"404\"} on every channel, channel creation 503 for 3 s"
            }
            Fault::StallEvery => "every socket stalled for 4 s (new connections work)",
            Fault::TopicsDroppedEvery => "every channel's topics dropped silently",
            Fault::ChannelGoneEvery => "{\"result\":\"404\"} on every channel",
        }
    }

    /// Whether the transition is planned: no event may go unreceived.
    pub fn planned(self) -> bool {
        matches!(
            self,
            Fault::SocketClosing
                | Fault::ChannelExpiry
                | Fault::BadFrames
                | Fault::DuplicatedReordered
        )
    }

    /// The bar a row must meet: nothing lost and nothing closed twice, always; and, for
    /// planned transitions and frame faults, no event unreceived.
    pub fn bar(self, r: &Row) -> bool {
        r.lost == 0 && r.duplicate_closes == 0 && (!self.planned() || r.unreceived_events == 0)
    }

    async fn inject(self, sim: &SimHandle) {
        match self {
            Fault::Drop => sim.drop_sockets_on(Scope::Busiest),
            Fault::Stall => sim.stall_sockets_on(Scope::Busiest, Duration::from_secs(4)),
            Fault::SocketClosing => sim.socket_closing_then_close(Duration::from_millis(500)),
            // The simulator gives this scenario's channels a 4 s lifetime from the start.
            Fault::ChannelExpiry => {}
            Fault::NoLongerSubscribed => sim.no_longer_subscribed_on(Scope::Busiest),
            Fault::ChannelGone => sim.expire_channels_on(Scope::Busiest),
            Fault::TokenRevoked => sim.revoke_tokens(),
            Fault::RateLimited => {
                sim.fail_requests_for("/api/", 429, Some(1), Duration::from_secs(3));
            }
            Fault::ServerErrors => {
                sim.fail_requests_for("/api/", 503, None, Duration::from_secs(2))
            }
            Fault::BadFrames => {
                sim.push_raw_text("{not json");
                sim.push_raw_text(r#"{"topicName":"v2.routing.queues.x.conversations.messages","eventBody":{"id":5}}"#);
                sim.push_raw_text(r#"{"topicName":"v2.made.up.topic","eventBody":{}}"#);
                sim.push_binary(vec![0, 1, 2, 3]);
                sim.push_oversized(2 << 20);
            }
            Fault::DuplicatedReordered => sim.set_faults(Faults {
                duplicate_events: true,
                reorder_events: true,
                ..Faults::default()
            }),
            Fault::TopicsDroppedSilently => sim.drop_topics_silently_on(Scope::Busiest),
            Fault::Outage => sim.outage(Duration::from_secs(3)),
            // The harness kills and restarts the daemon (see `run`).
            Fault::Restart => {}
            Fault::SocketsDown => {
                sim.refuse_sockets_for(Duration::from_secs(4));
                sim.drop_sockets_on(Scope::Every);
            }
            Fault::ChannelsGoneNoCreate => {
                sim.fail_endpoint_for(
                    "POST",
                    "/api/v2/notifications/channels",
                    503,
                    None,
                    Duration::from_secs(3),
                );
                sim.expire_channels_on(Scope::Every);
            }
            Fault::StallEvery => sim.stall_sockets_on(Scope::Every, Duration::from_secs(4)),
            Fault::TopicsDroppedEvery => sim.drop_topics_silently_on(Scope::Every),
            Fault::ChannelGoneEvery => sim.expire_channels_on(Scope::Every),
        }
    }
}

/// One row of the matrix.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// The scenario.
    pub scenario: &'static str,
    /// Conversations whose intent matches the rule.
    pub matched: usize,
    /// Of those, confirmed closed.
    pub confirmed: usize,
    /// Of those, not confirmed closed when the scenario ended.
    pub lost: usize,
    /// Disconnects accepted beyond the first for one conversation.
    pub duplicate_closes: usize,
    /// API requests (the token grant excluded).
    pub rest_requests: usize,
    /// Those requests by kind (see `rest_kind`: `close`, `read`, `sub`, `channel`,
    /// `topics`, `flowq`, `queueq`, `other`), the kinds with none left out.
    pub rest_by_kind: Vec<(&'static str, usize)>,
    /// From the fault to the confirmed close of a probe conversation created then, ms;
    /// `None` when the probe itself fell in the gap (never seen).
    pub recover_ms: Option<u64>,
    /// Events of the scenario's conversations no daemon socket received (on the topics
    /// the daemon subscribes: the queue, the flow's metrics, the watched detail topics).
    pub unreceived_events: usize,
    /// Of the lost, those no daemon socket ever received an event of: their only events
    /// so far fell in the gap, and the recovery listing after it did not find them
    /// either.
    pub lost_unseen: usize,
    /// The path of each lost conversation (`queue`, `flow`, `intake`), for diagnosis.
    pub lost_paths: Vec<&'static str>,
    /// The row meets its bar (see [`Fault::bar`]).
    pub passes: bool,
}

impl Row {
    /// Whether every conversation the daemon had heard of was closed, once.
    pub fn ok_for_seen(&self) -> bool {
        self.lost == self.lost_unseen && self.duplicate_closes == 0
    }
}

/// Runs one scenario.
pub async fn run(fault: Fault) -> anyhow::Result<Row> {
    let (sim, config) = start_simulator(fault).await?;
    // The restart row runs the daemon on a runtime of its own, so it can be killed.
    let launch = Launch {
        state: None,
        own_runtime: fault == Fault::Restart,
    };
    let mut daemon = start_daemon_with(&sim, &config, secret(), TOKEN, launch).await?;
    // Stamped on arrival, for the time to recover.
    let (stamped_tx, reports_rx) = mpsc::unbounded_channel::<(Instant, CloseReport)>();
    forward_reports(&mut daemon, stamped_tx.clone());
    let mut reports = Reports {
        rx: reports_rx,
        got: Vec::new(),
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (load, daemon) =
        load_with_fault(fault, &sim, &config, daemon, stamped_tx, &mut reports).await?;
    let probe_done = await_outcomes(&load, &mut reports).await;
    for id in &load.unmatched {
        sim.customer_leaves(id);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    if let Some(mut d) = daemon {
        d.stop.cancel();
        let _ = (&mut d.task).await;
        // The runtime (if its own) and the state directory go with it.
        drop(d);
    }
    reports.drain();
    let requests = sim.requests();
    let events = sim.event_log();
    sim.shutdown().await;
    Ok(row(
        fault,
        &load,
        &reports.got,
        probe_done,
        &requests,
        &events,
    ))
}

/// The set-up: the simulator (channels living 4 s for the expiry row) and the config
/// pointed at it; logging started.
async fn start_simulator(fault: Fault) -> anyhow::Result<(SimHandle, Config)> {
    let mut sim_cfg = SimConfig {
        heartbeat_interval: Duration::from_millis(500),
        ..SimConfig::default()
    };
    if fault == Fault::ChannelExpiry {
        sim_cfg.channel_ttl = Duration::from_secs(4);
    }
    let sim = genesys_sim::start(sim_cfg).await?;
    let config = Config::parse(
        &CONFIG.replace("{URL}", &sim.base_url()),
        Path::new("<fault matrix>"),
    )?;
    crate::telemetry::init_logging(&config.log);
    Ok((sim, config))
}

/// The daemon's close reports, stamped on arrival.
struct Reports {
    /// Where [`forward_reports`] sends them.
    rx: mpsc::UnboundedReceiver<(Instant, CloseReport)>,
    /// Those taken so far.
    got: Vec<(Instant, CloseReport)>,
}

impl Reports {
    /// Takes every report that has arrived.
    fn drain(&mut self) {
        while let Ok(r) = self.rx.try_recv() {
            self.got.push(r);
        }
    }
}

/// The conversations a scenario created.
#[derive(Default)]
struct Load {
    /// Those whose intent matches the rule, the probe included.
    expected: HashSet<String>,
    /// Each one's path (`queue`, `flow`, `intake`, `queue (probe)`).
    path_of: HashMap<String, &'static str>,
    /// Every one.
    all: Vec<String>,
    /// Those whose intent matches no rule: their guests leave at the end.
    unmatched: Vec<String>,
    /// The probe, and the moment of the fault.
    probe: Option<(String, Instant)>,
}

impl Load {
    /// The probe: a queue conversation with a matching intent, right at the fault (`at`).
    fn add_probe(&mut self, sim: &SimHandle, at: Instant) {
        let id = sim.create_conversation(queue(Some("Goodbye")));
        self.path_of.insert(id.clone(), "queue (probe)");
        self.expected.insert(id.clone());
        self.all.push(id.clone());
        self.probe = Some((id, at));
    }

    /// The `n`th conversation: every other one matching, the paths in rotation.
    fn add(&mut self, sim: &SimHandle, n: u64) {
        let matching = n.is_multiple_of(2);
        let intent = matching.then_some("Goodbye").or(Some("TalkToAgent"));
        let (id, path) = match n % 3 {
            0 => (sim.create_conversation(queue(intent)), "queue"),
            1 => (sim.create_bot_conversation(bot(intent, false)), "flow"),
            _ => (sim.create_bot_conversation(bot(intent, true)), "intake"),
        };
        self.path_of.insert(id.clone(), path);
        self.all.push(id.clone());
        if matching {
            self.expected.insert(id);
        } else {
            self.unmatched.push(id);
        }
    }
}

/// The load and the fault: ten conversations a second for 5 s, the fault 1 s in (the
/// restart row kills the daemon then, and starts it again [`DOWN_FOR`] later). Returns
/// what was created and the daemon running at the end.
async fn load_with_fault(
    fault: Fault,
    sim: &SimHandle,
    config: &Config,
    daemon: Harness,
    stamped_tx: mpsc::UnboundedSender<(Instant, CloseReport)>,
    reports: &mut Reports,
) -> anyhow::Result<(Load, Option<Harness>)> {
    let mut daemon = Some(daemon);
    let mut restarted = None;
    let mut load = Load::default();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    for n in 0..50u64 {
        tick.tick().await;
        if n == 10 {
            let at = Instant::now();
            if fault == Fault::Restart
                && let Some(d) = daemon.take()
            {
                restarted = Some(restart(d, at, sim, config, stamped_tx.clone()));
            } else {
                fault.inject(sim).await;
            }
            load.add_probe(sim, at);
        }
        load.add(sim, n);
        reports.drain();
    }
    drop(stamped_tx);
    // The restarted daemon (its start began 2 s after the kill).
    if let Some(r) = restarted {
        daemon = Some(
            r.await
                .map_err(|e| anyhow::anyhow!("the restart task failed: {e}"))??,
        );
    }
    Ok((load, daemon))
}

/// Waits (at most 25 s) for every matching conversation's outcome; returns when the
/// probe's confirmation arrived, if it did.
async fn await_outcomes(load: &Load, reports: &mut Reports) -> Option<Instant> {
    let deadline = Instant::now() + Duration::from_secs(25);
    let mut probe_done: Option<Instant> = None;
    loop {
        reports.drain();
        let confirmed = confirmed_ids(&reports.got);
        if let Some((p, _)) = &load.probe
            && probe_done.is_none()
            && confirmed.contains(p.as_str())
        {
            probe_done = reports
                .got
                .iter()
                .find(|(_, r)| &*r.conversation_id == p.as_str())
                .map(|(at, _)| *at);
        }
        if load
            .expected
            .iter()
            .all(|id| confirmed.contains(id.as_str()))
            || Instant::now() > deadline
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    probe_done
}

/// The measurement: the row, from the reports and the simulator's request and event
/// logs.
fn row(
    fault: Fault,
    load: &Load,
    reports: &[(Instant, CloseReport)],
    probe_done: Option<Instant>,
    requests: &[RecordedRequest],
    events: &[EventRecord],
) -> Row {
    let confirmed = confirmed_ids(reports);
    let confirmed_expected = load
        .expected
        .iter()
        .filter(|id| confirmed.contains(id.as_str()))
        .count();
    let lost: Vec<&String> = load
        .expected
        .iter()
        .filter(|id| !confirmed.contains(id.as_str()))
        .collect();
    let lost_paths = lost
        .iter()
        .map(|id| load.path_of.get(*id).copied().unwrap_or("?"))
        .collect();
    let lost_unseen = lost
        .iter()
        .filter(|id| {
            !events
                .iter()
                .any(|e| e.conversation_id == ***id && e.delivered > 0 && subscribed(&e.topic))
        })
        .count();
    let recover_ms = match (&load.probe, probe_done) {
        (Some((_, at)), Some(done)) => Some(done.saturating_duration_since(*at).as_millis() as u64),
        _ => None,
    };
    let api: Vec<&RecordedRequest> = requests
        .iter()
        .filter(|r| r.path.starts_with("/api/"))
        .collect();
    let mut row = Row {
        scenario: fault.name(),
        matched: load.expected.len(),
        confirmed: confirmed_expected,
        lost: load.expected.len() - confirmed_expected,
        duplicate_closes: duplicate_closes(requests, &confirmed),
        rest_requests: api.len(),
        rest_by_kind: rest_by_kind(&api),
        recover_ms,
        unreceived_events: unreceived_events(events, &load.all),
        lost_unseen,
        lost_paths,
        passes: false,
    };
    row.passes = fault.bar(&row);
    row
}

/// Disconnects Genesys accepted beyond the first for one confirmed conversation.
fn duplicate_closes(requests: &[RecordedRequest], confirmed: &HashSet<&str>) -> usize {
    let mut accepted: HashMap<&str, usize> = HashMap::new();
    for r in requests {
        if rest_kind(r) == "close"
            && (200..300).contains(&r.status)
            && let Some(id) = r.path.split('/').nth(5)
        {
            *accepted.entry(id).or_default() += 1;
        }
    }
    accepted
        .iter()
        .filter(|(id, _)| confirmed.contains(**id))
        .map(|(_, n)| n.saturating_sub(1))
        .sum()
}

/// Whether the daemon subscribes `topic`: the queue, the flow's metrics, the watched
/// detail topics.
fn subscribed(topic: &str) -> bool {
    let t = topic.to_ascii_lowercase();
    t.starts_with(&format!("v2.routing.queues.{QUEUE}"))
        || t.starts_with(&format!("v2.analytics.flow.{FLOW}"))
        || crate::genesys::frames::WATCH_SUFFIXES
            .iter()
            .any(|s| t.starts_with("v2.detail.events.conversation.") && t.ends_with(s))
}

/// Events of the scenario's conversations (`all`), on subscribed topics, that no daemon
/// socket received.
fn unreceived_events(events: &[EventRecord], all: &[String]) -> usize {
    let ours: HashSet<&str> = all.iter().map(String::as_str).collect();
    events
        .iter()
        .filter(|e| {
            ours.contains(e.conversation_id.as_str()) && e.delivered == 0 && subscribed(&e.topic)
        })
        .count()
}

/// API requests by kind, in [`REST_KINDS`] order, the kinds with none left out.
fn rest_by_kind(api: &[&RecordedRequest]) -> Vec<(&'static str, usize)> {
    let mut rest_by_kind: Vec<(&'static str, usize)> = Vec::new();
    for kind in REST_KINDS {
        let n = api.iter().filter(|r| rest_kind(r) == kind).count();
        if n > 0 {
            rest_by_kind.push((kind, n));
        }
    }
    rest_by_kind
}

/// How long the restart row's daemon stays down.
const DOWN_FOR: Duration = Duration::from_secs(2);

fn secret() -> SecretString {
    SecretString::from("sim-secret".to_string())
}

/// Forwards the daemon's close reports, stamped on arrival, until it stops.
fn forward_reports(daemon: &mut Harness, to: mpsc::UnboundedSender<(Instant, CloseReport)>) {
    let (_, empty) = mpsc::unbounded_channel();
    let mut from = std::mem::replace(&mut daemon.reports, empty);
    tokio::spawn(async move {
        while let Some(r) = from.recv().await {
            let _ = to.send((Instant::now(), r));
        }
    });
}

/// Kills the daemon now and, `DOWN_FOR` after `at`, starts it again on the same state
/// directory and config; the new daemon's reports go to `to`.
fn restart(
    daemon: Harness,
    at: Instant,
    sim: &SimHandle,
    config: &Config,
    to: mpsc::UnboundedSender<(Instant, CloseReport)>,
) -> tokio::task::JoinHandle<anyhow::Result<Harness>> {
    let state = daemon.kill();
    let sim = sim.clone();
    let config = config.clone();
    tokio::spawn(async move {
        tokio::time::sleep_until(at + DOWN_FOR).await;
        if !state.wait_unlocked(Duration::from_secs(10)).await {
            anyhow::bail!("the killed daemon still holds its state directory after 10 s");
        }
        let launch = Launch {
            state: Some(state),
            own_runtime: true,
        };
        let mut d = start_daemon_with(&sim, &config, secret(), TOKEN, launch).await?;
        forward_reports(&mut d, to);
        Ok(d)
    })
}

/// The kinds of API request the table counts, in column order.
const REST_KINDS: [&str; 8] = [
    "close", "read", "sub", "channel", "topics", "flowq", "queueq", "other",
];

/// What an API request was for: `close` (a disconnect PATCH or teardown), `read` (a
/// conversation GET), `sub` (subscriptions), `channel` (channel creation, listing,
/// HEAD), `topics` (availabletopics), `flowq` (flow activity query), `queueq` (queue
/// observation query), `other`.
fn rest_kind(r: &RecordedRequest) -> &'static str {
    let p = r.path.as_str();
    let m = r.method.as_str();
    if p.starts_with("/api/v2/notifications/channels/") && p.ends_with("/subscriptions") {
        "sub"
    } else if p == "/api/v2/notifications/channels"
        || p.starts_with("/api/v2/notifications/channels/")
    {
        "channel"
    } else if p == "/api/v2/notifications/availabletopics" {
        "topics"
    } else if p == "/api/v2/analytics/flows/activity/query" {
        "flowq"
    } else if p == "/api/v2/analytics/queues/observations/query" {
        "queueq"
    } else if (m == "PATCH" && p.starts_with("/api/v2/conversations/messages/"))
        || (m == "POST" && p.starts_with("/api/v2/conversations/") && p.ends_with("/disconnect"))
    {
        "close"
    } else if m == "GET" && p.starts_with("/api/v2/conversations/") {
        "read"
    } else {
        "other"
    }
}

fn confirmed_ids(reports: &[(Instant, CloseReport)]) -> HashSet<&str> {
    reports
        .iter()
        .filter(|(_, r)| {
            matches!(
                r.outcome,
                Outcome::Confirmed | Outcome::EscalatedConfirmed | Outcome::AlreadyClosed
            )
        })
        .map(|(_, r)| &*r.conversation_id)
        .collect()
}

fn queue(intent: Option<&str>) -> ConversationSpec {
    ConversationSpec {
        queue_id: QUEUE.into(),
        intent_attribute: "Bot.Intent".into(),
        intent: intent.map(str::to_string),
        agent_user_id: None,
    }
}

fn bot(intent: Option<&str>, by_intake: bool) -> BotConversationSpec {
    BotConversationSpec {
        flow_id: FLOW.into(),
        purpose: BotPurpose::Workflow,
        intent_attribute: "Bot.Intent".into(),
        intent: intent.map(str::to_string),
        intent_after: Duration::from_millis(800),
        transfer: None,
        post_on_start: false,
        post_on_intent: by_intake,
    }
}

/// The markdown table of rows.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| scenario | matched | confirmed | lost | of which never seen | duplicate closes \
         | REST requests | REST by kind | recover ms | unreceived events | verdict |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let mut lost = r.lost.to_string();
        if r.lost > 0 {
            let mut by: Vec<(&str, usize)> = Vec::new();
            for p in &r.lost_paths {
                let p = p.split(' ').next().unwrap_or(p);
                match by.iter_mut().find(|(q, _)| *q == p) {
                    Some(e) => e.1 += 1,
                    None => by.push((p, 1)),
                }
            }
            let parts: Vec<String> = by.iter().map(|(p, n)| format!("{p} {n}")).collect();
            lost += &format!(" ({})", parts.join(", "));
        }
        let by_kind: Vec<String> = r
            .rest_by_kind
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        out += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.scenario,
            r.matched,
            r.confirmed,
            lost,
            r.lost_unseen,
            r.duplicate_closes,
            r.rest_requests,
            by_kind.join(", "),
            r.recover_ms
                .map_or_else(|| "probe never seen".to_string(), |ms| ms.to_string()),
            r.unreceived_events,
            if r.passes { "pass" } else { "FAIL" }
        );
    }
    out
}
