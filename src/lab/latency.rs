//! `genesys-closer latency`: decision latency against the built-in simulator
//! (`bench/latency.sh`), with other events flowing.
//!
//! Two paths, each measured to the moment the disconnect PATCH reaches the simulator:
//! - **event**: a queue conversation whose bot already set a matching intent is
//!   published on the queue topic; from just before it is published;
//! - **intake**: a bot-phase conversation the daemon already watches (found by flow
//!   discovery, no intent yet) gets an intake call with the intent; from just before
//!   the call is sent.
//!
//! Meanwhile `background` other conversation frames a second (a pool of 1,000 queue
//! conversations, no matching intent, about 1.3 KB each) reach every socket. Latency
//! includes loopback networking, the simulator's own work and the daemon's: frame
//! read, parse, state update, rule, close sequence, budget permit, journal writes
//! (`synchronous = FULL`: an fsync before the PATCH) and the HTTP request.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

use super::demo::{Harness, start_daemon_on};
use crate::config::Config;
use genesys_sim::{
    self as sim, BotConversationSpec, BotPurpose, ConversationSpec, RecordedRequest, SimConfig,
    SimHandle,
};

const QUEUE: &str = super::demo::SIM_QUEUE;
const FLOW: &str = super::demo::SIM_FLOW;
const TOKEN: &str = "latency-bench-intake-credential";
const MESSAGES: &str = "/api/v2/conversations/messages/";

/// The daemon's defaults, but for a budget that never makes a close wait (the
/// simulator has no org limit; the budget's own cost is measured by `burst`).
const CONFIG: &str = r#"
[genesys]
api_url = "{URL}"
login_url = "{URL}"
client_id = "5e1f0c1e-51a0-4c1e-8e57-0000000c11e7"
requests_per_minute = 100000

[stream]
queues = ["8f14e45f-ceea-467a-9575-3b9d1c2e4a77"]
flows = ["a3c9e5f1-8b27-4d60-9e4a-2f7b1c6d8e93"]

[intake]
enabled = true
listen = "127.0.0.1:0"

[log]
format = "human"
level = "error"

[[rule]]
name = "goodbye"
intents = ["Goodbye"]
"#;

/// Percentiles of one path.
#[derive(Debug, Clone, Default)]
pub struct Percentiles {
    /// Samples measured.
    pub samples: usize,
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Largest.
    pub max: Duration,
}

impl Percentiles {
    fn of(mut v: Vec<Duration>) -> Self {
        v.sort();
        let at = |q: f64| {
            v.get(((v.len() as f64 * q).ceil() as usize).saturating_sub(1))
                .copied()
                .unwrap_or_default()
        };
        Percentiles {
            samples: v.len(),
            p50: at(0.5),
            p99: at(0.99),
            max: v.last().copied().unwrap_or_default(),
        }
    }
}

/// What one run measured.
#[derive(Debug, Clone)]
pub struct LatencyReport {
    /// Other frames a second asked for, and how many were pushed.
    pub background_per_s: u32,
    /// Background frames pushed during the run.
    pub background_sent: u64,
    /// Seconds the background ran.
    pub background_secs: f64,
    /// Published intent event -> disconnect request.
    pub event: Percentiles,
    /// Intake request -> disconnect request.
    pub intake: Percentiles,
    /// Samples whose disconnect never arrived.
    pub missing: usize,
}

impl fmt::Display for LatencyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Duration| format!("{:.3}", d.as_secs_f64() * 1e3);
        writeln!(
            f,
            "background: {} frames pushed in {:.1} s ({:.0}/s; asked {}/s)",
            self.background_sent,
            self.background_secs,
            self.background_sent as f64 / self.background_secs.max(1e-9),
            self.background_per_s
        )?;
        writeln!(f, "| path | samples | p50 ms | p99 ms | max ms |")?;
        writeln!(f, "|---|---|---|---|---|")?;
        for (name, p) in [
            ("intent event -> disconnect request", &self.event),
            ("intake request -> disconnect request", &self.intake),
        ] {
            writeln!(
                f,
                "| {name} | {} | {} | {} | {} |",
                p.samples,
                ms(p.p50),
                ms(p.p99),
                ms(p.max)
            )?;
        }
        write!(f, "missing disconnects: {}", self.missing)
    }
}

/// A queue conversation frame for the background (no matching intent).
fn background_frame(id: &str) -> String {
    serde_json::json!({
        "topicName": format!("v2.routing.queues.{QUEUE}.conversations.messages"),
        "version": "2",
        "eventBody": {
            "id": id,
            "participants": [
                {"id": format!("{id}-c"), "purpose": "customer", "state": "connected",
                 "direction": "inbound", "type": "webmessaging",
                 "startTime": "2026-12-01T10:00:00.000Z",
                 "attributes": {"Bot.Intent": "TalkToAgent", "Locale": "en-GB"},
                 "messages": [{"message": {"id": format!("{id}-m")},
                               "messageTime": "2026-12-01T10:00:01.000Z",
                               "messageStatus": "received", "messageSegmentCount": 1}]},
                {"id": format!("{id}-w"), "purpose": "workflow", "state": "disconnected",
                 "startTime": "2026-12-01T10:00:00.000Z", "endTime": "2026-12-01T10:00:20.000Z"},
                {"id": format!("{id}-a"), "purpose": "acd", "state": "connected",
                 "queue": {"id": QUEUE}, "startTime": "2026-12-01T10:00:20.000Z"}
            ],
            "divisions": [{"division": {"id": "d"}, "entities": [{"id": QUEUE}]}]
        },
        "metadata": {"CorrelationId": format!("{id}-corr")}
    })
    .to_string()
}

/// When a sample started: its conversation, and the moment just before its event or
/// intake call.
type Start = (String, std::time::Instant);

/// Runs `samples` measurements of each path with `background` other frames a second.
pub async fn run(samples: usize, background: u32) -> anyhow::Result<LatencyReport> {
    let (sim_rt, sim, config) = start_simulator().await?;
    let Harness {
        task,
        stop,
        intake,
        _state,
        ..
    } = start_daemon_on(
        &sim,
        &config,
        SecretString::from("sim-secret".to_string()),
        TOKEN,
    )
    .await?;
    // The intake is called by this driver, not by the simulated flow.
    sim.set_data_action(None);

    let (stop_bg, bg) = start_background(&sim_rt, &sim, background);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let event_starts = event_path(&sim_rt, &sim, samples).await;
    let intake_starts = intake_path(&sim_rt, &sim, intake, samples).await?;
    await_disconnects(&sim, &event_starts, &intake_starts).await;
    stop_bg.cancel();
    let (background_sent, background_secs) = bg.await?;

    let reqs = sim.requests_timed();
    let mut missing = 0;
    let event = measure(&reqs, &event_starts, &mut missing);
    let intake_p = measure(&reqs, &intake_starts, &mut missing);
    stop.cancel();
    let _ = task.await;
    sim.shutdown().await;
    sim_rt.shutdown_background();
    Ok(LatencyReport {
        background_per_s: background,
        background_sent,
        background_secs,
        event,
        intake: intake_p,
        missing,
    })
}

/// The set-up: the simulator on a runtime of its own, and the config pointed at it;
/// logging started.
async fn start_simulator() -> anyhow::Result<(tokio::runtime::Runtime, SimHandle, Config)> {
    // The simulator (and the background it pushes) gets a runtime of its own, as Genesys
    // is another machine: its tasks never queue in front of the daemon's in one
    // scheduler. They still share the machine's cores with the daemon.
    let sim_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("sim")
        .enable_all()
        .build()?;
    let sim = sim_rt
        .spawn(sim::start(SimConfig {
            // A close is confirmed when Genesys pushes the end; keep it prompt here.
            close_delay: Duration::from_millis(5),
            ..SimConfig::default()
        }))
        .await??;
    let config = Config::parse(
        &CONFIG.replace("{URL}", &sim.base_url()),
        Path::new("<latency>"),
    )?;
    crate::telemetry::init_logging(&config.log);
    Ok((sim_rt, sim, config))
}

/// The background load: `background` frames a second, spread over each second (a few
/// every millisecond), on the simulator's runtime until cancelled; the task answers how
/// many it pushed in how many seconds.
fn start_background(
    sim_rt: &tokio::runtime::Runtime,
    sim: &SimHandle,
    background: u32,
) -> (CancellationToken, tokio::task::JoinHandle<(u64, f64)>) {
    let pool: Vec<String> = (0..1000)
        .map(|i| background_frame(&format!("00000000-0000-4000-8000-{i:012}")))
        .collect();
    let stop_bg = CancellationToken::new();
    let bg = {
        let sim = sim.clone();
        let stop_bg = stop_bg.clone();
        sim_rt.spawn(async move {
            let started = std::time::Instant::now();
            let mut sent: u64 = 0;
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut i = 0usize;
            while !stop_bg.is_cancelled() {
                tick.tick().await;
                let due = (started.elapsed().as_secs_f64() * f64::from(background)) as u64;
                while sent < due {
                    sim.push_raw_text(&pool[i % pool.len()]);
                    i += 1;
                    sent += 1;
                }
            }
            (sent, started.elapsed().as_secs_f64())
        })
    };
    (stop_bg, bg)
}

/// Path 1: intent events on the queue topic, one every 20 ms.
async fn event_path(
    sim_rt: &tokio::runtime::Runtime,
    sim: &SimHandle,
    samples: usize,
) -> Vec<Start> {
    let mut event_starts = Vec::with_capacity(samples);
    for _ in 0..samples {
        let t0 = std::time::Instant::now();
        // Entered so the conversation's own tasks run on the simulator's runtime.
        let _on_sim = sim_rt.enter();
        let id = sim.create_conversation(ConversationSpec {
            queue_id: QUEUE.into(),
            intent_attribute: "Bot.Intent".into(),
            intent: Some("Goodbye".into()),
            agent_user_id: None,
        });
        drop(_on_sim);
        event_starts.push((id, t0));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    event_starts
}

/// Path 2: watched bot-phase conversations, then the intake call for each, one every
/// 20 ms.
async fn intake_path(
    sim_rt: &tokio::runtime::Runtime,
    sim: &SimHandle,
    intake: std::net::SocketAddr,
    samples: usize,
) -> anyhow::Result<Vec<Start>> {
    let watched = watched_bot_conversations(sim_rt, sim, samples).await;
    let http = reqwest::Client::new();
    let url = format!("http://{intake}/v1/intents");
    let mut intake_starts = Vec::with_capacity(samples);
    for id in &watched {
        let t0 = std::time::Instant::now();
        let r = http
            .post(&url)
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({"conversationId": id, "intent": "Goodbye"}))
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "intake answered {}", r.status());
        intake_starts.push((id.clone(), t0));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(intake_starts)
}

/// `samples` bot-phase conversations without an intent, once the daemon watches each
/// (its `customer.end` detail topic subscribed; at most 30 s).
async fn watched_bot_conversations(
    sim_rt: &tokio::runtime::Runtime,
    sim: &SimHandle,
    samples: usize,
) -> Vec<String> {
    let mut watched = Vec::with_capacity(samples);
    for _ in 0..samples {
        let _on_sim = sim_rt.enter();
        watched.push(sim.create_bot_conversation(BotConversationSpec {
            flow_id: FLOW.into(),
            purpose: BotPurpose::Workflow,
            intent_attribute: "Bot.Intent".into(),
            intent: None,
            intent_after: Duration::from_secs(3600),
            transfer: None,
            post_on_start: false,
            post_on_intent: false,
        }));
    }
    let topic_live = |id: &str| {
        let want = format!("v2.detail.events.conversation.{id}.customer.end");
        sim.channel_topic_counts().iter().any(|(ch, _)| {
            sim.channel_topics(ch)
                .is_some_and(|t| t.iter().any(|x| x.eq_ignore_ascii_case(&want)))
        })
    };
    let ready_by = std::time::Instant::now() + Duration::from_secs(30);
    while !watched.iter().all(|id| topic_live(id)) && std::time::Instant::now() < ready_by {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    watched
}

/// Whether `r` is a disconnect PATCH of conversation `id`.
fn is_disconnect_of(r: &RecordedRequest, id: &str) -> bool {
    r.method == "PATCH" && r.path.starts_with(MESSAGES) && r.path.contains(id)
}

/// Every disconnect should be in by now; gives stragglers a moment (at most 10 s).
async fn await_disconnects(sim: &SimHandle, event_starts: &[Start], intake_starts: &[Start]) {
    let all: Vec<&String> = event_starts
        .iter()
        .chain(intake_starts)
        .map(|(id, _)| id)
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let reqs = sim.requests_timed();
        let done = all
            .iter()
            .all(|id| reqs.iter().any(|(_, r)| is_disconnect_of(r, id)));
        if done || std::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The measurement of one path: each start to its disconnect PATCH in `reqs`; the
/// samples without one are added to `missing`.
fn measure(
    reqs: &[(std::time::Instant, RecordedRequest)],
    starts: &[Start],
    missing: &mut usize,
) -> Percentiles {
    let mut v = Vec::new();
    for (id, t0) in starts {
        match reqs.iter().find(|(_, r)| is_disconnect_of(r, id)) {
            Some((at, _)) => v.push(at.saturating_duration_since(*t0)),
            None => *missing += 1,
        }
    }
    Percentiles::of(v)
}
