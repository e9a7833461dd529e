//! `genesys-closer demo`: the simulator and the daemon together on loopback.
//!
//! No credentials and no Genesys org: the simulator plays Genesys, the daemon runs with an
//! embedded config (parsed by the same validator as a real file) pointed at it, and the demo
//! creates conversations with a mix of intents, some matching the demo rule and some not.
//! With `--conversations N` it stops after N and prints one JSON summary line.

use std::path::Path;
use std::time::Duration;

use secrecy::SecretString;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::closer::{CloseReport, Outcome};
use crate::config::{Config, ConfigErrors};
use crate::daemon::{self, RunOptions};
use crate::sim::{self, ConversationSpec, SimConfig};

/// Queues the demo conversations are routed to.
pub const DEMO_QUEUES: [&str; 2] = [
    "8f14e45f-ceea-467a-9575-3b9d1c2e4a77",
    "0c9a5d3e-6b1f-4e28-9a7d-2f5c8e1b4d60",
];

/// Intents the demo bot sets, in rotation; `None` is a conversation where the bot set none.
const DEMO_INTENTS: [Option<&str>; 4] = [
    Some("Goodbye"),
    Some("CancelSubscription"),
    Some("TalkToAgent"),
    None,
];

/// The embedded config; `{URL}` becomes the simulator's address.
const DEMO_CONFIG: &str = r#"
[genesys]
api_url = "{URL}"
login_url = "{URL}"
client_id = "sim-client"

[stream]
queues = ["8f14e45f-ceea-467a-9575-3b9d1c2e4a77", "0c9a5d3e-6b1f-4e28-9a7d-2f5c8e1b4d60"]
heartbeat_timeout = "15s"
ping_after = "7s"
backoff_min = "200ms"
backoff_max = "5s"

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
}

/// The embedded config, pointed at `base_url`.
pub fn demo_config(base_url: &str) -> Result<Config, ConfigErrors> {
    let text = DEMO_CONFIG.replace("{URL}", base_url);
    Config::parse(&text, Path::new("<built-in demo config>"))
}

/// Runs the demo; returns the summary (also printed as JSON by the CLI).
pub async fn run(opts: DemoOptions, shutdown: CancellationToken) -> anyhow::Result<DemoSummary> {
    let sim_cfg = SimConfig {
        heartbeat_interval: Duration::from_secs(5),
        ..SimConfig::default()
    };
    let secret = SecretString::from(sim_cfg.client_secret.clone());
    let sim = sim::start(sim_cfg).await?;
    let config = demo_config(&sim.base_url())?;
    crate::telemetry::init_logging(&config.log);
    tracing::info!(simulator = %sim.base_url(), "demo: simulator listening");

    let (reports_tx, mut reports_rx) = mpsc::unbounded_channel();
    let stop_daemon = CancellationToken::new();
    let daemon_task = {
        let opts = RunOptions {
            shutdown: stop_daemon.clone(),
            drain_timeout: Duration::from_secs(10),
            reports: Some(reports_tx),
            notify_systemd: false,
            intake_token: None,
            intake_bound: None,
        };
        let config = config.clone();
        tokio::spawn(async move { daemon::run(&config, secret, opts).await })
    };

    // No backfill exists: conversations created before the socket is live would be missed.
    let ready_by = Instant::now() + Duration::from_secs(20);
    while sim.connected_sockets() < config.stream.channels_needed() {
        if Instant::now() > ready_by || daemon_task.is_finished() {
            anyhow::bail!("the daemon did not connect to the simulator within 20 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let rule_intents: Vec<&str> = config
        .rules
        .iter()
        .flat_map(|r| r.intents.iter().map(String::as_str))
        .collect();
    let period = Duration::from_secs_f64(1.0 / opts.rate.max(0.001));
    let mut tick = tokio::time::interval(period);
    let mut created = 0u64;
    let mut expected = 0u64;
    let mut unmatched = Vec::new();
    let mut reports: Vec<CloseReport> = Vec::new();
    let limit = opts.conversations.unwrap_or(u64::MAX);
    while created < limit {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(r) = reports_rx.recv() => reports.push(r),
            _ = tick.tick() => {
                let intent = DEMO_INTENTS[(created % DEMO_INTENTS.len() as u64) as usize];
                let id = sim.create_conversation(ConversationSpec {
                    queue_id: DEMO_QUEUES[(created % 2) as usize].to_string(),
                    intent_attribute: "Bot.Intent".into(),
                    intent: intent.map(str::to_string),
                    agent_user_id: None,
                });
                created += 1;
                if intent.is_some_and(|i| rule_intents.contains(&i)) {
                    expected += 1;
                } else {
                    unmatched.push(id);
                }
            }
        }
    }

    // Wait for every matched conversation's outcome (bounded).
    let wait_until = Instant::now() + Duration::from_secs(30);
    while (reports.len() as u64) < expected && !shutdown.is_cancelled() {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep_until(wait_until) => break,
            r = reports_rx.recv() => match r {
                Some(r) => reports.push(r),
                None => break,
            },
        }
    }
    // The guests of unmatched conversations leave on their own; the daemon must not have
    // touched them.
    for id in &unmatched {
        sim.customer_leaves(id);
    }
    stop_daemon.cancel();
    match daemon_task.await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(e.into()),
        Err(e) => anyhow::bail!("daemon task failed: {e}"),
    }
    while let Ok(r) = reports_rx.try_recv() {
        reports.push(r);
    }
    sim.shutdown().await;
    Ok(summarise(created, expected, &reports))
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
