//! `genesys-closer burst`: a burst of matching conversations against the built-in
//! simulator, with the org's rate limit switched on, to see what the REST budget does
//! with it (`bench/burst.sh`).
//!
//! Every conversation is created at once (a queue conversation whose bot already set a
//! matching intent), so every decision is made within a moment and the closes queue behind
//! `[genesys] requests_per_minute`. The report says how many were confirmed, how many
//! 429s the simulated org answered, how long it all took, how many REST requests one
//! closure cost, and how long a close waited for its disconnect to go out (from the
//! conversation's creation to the disconnect PATCH reaching the simulator: almost all of
//! it is the wait behind the budget).

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use secrecy::SecretString;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::demo::{Harness, start_daemon_on};
use crate::closer::{CloseReport, Outcome};
use crate::config::Config;
use genesys_sim::{self as sim, ConversationSpec, RecordedRequest, SimConfig, SimHandle};

const QUEUE: &str = super::demo::SIM_QUEUE;
const TOKEN: &str = "burst-bench-intake-credential";
/// Conversation PATCHes (and customer-participant PATCHes under them).
const MESSAGES: &str = "/api/v2/conversations/messages/";

/// The daemon's defaults but for the budget; the intake is on only because the shared
/// harness waits for it.
const CONFIG: &str = r#"
[genesys]
api_url = "{URL}"
login_url = "{URL}"
client_id = "5e1f0c1e-51a0-4c1e-8e57-0000000c11e7"
requests_per_minute = {RPM}

[stream]
queues = ["8f14e45f-ceea-467a-9575-3b9d1c2e4a77"]

[intake]
enabled = true
listen = "127.0.0.1:0"

[log]
format = "human"
level = "warn"

[[rule]]
name = "goodbye"
intents = ["Goodbye"]
"#;

/// What one burst did.
#[derive(Debug, Clone)]
pub struct BurstReport {
    /// Conversations created (all matching).
    pub conversations: usize,
    /// The simulated org's rate limit, if any.
    pub sim_rate: Option<(u32, Duration)>,
    /// The daemon's `requests_per_minute`.
    pub requests_per_minute: u32,
    /// Closes confirmed (by event, read or after a teardown).
    pub confirmed: usize,
    /// Closes that ended `failed`.
    pub failed: usize,
    /// Conversations with no outcome when the run gave up waiting.
    pub missing: usize,
    /// Requests the simulator answered 429.
    pub rate_limited: usize,
    /// Of those, the ones after the first: a budget under the limit that honours
    /// `Retry-After` keeps this at 0.
    pub rate_limited_after_first: usize,
    /// Disconnect PATCHes Genesys accepted beyond the first for one conversation.
    pub duplicate_disconnects: usize,
    /// From the first conversation created to the last outcome.
    pub wall: Duration,
    /// API requests (token grants excluded) from the first conversation created to the
    /// last outcome.
    pub rest_requests: usize,
    /// Creation to the disconnect PATCH reaching the simulator: median, 95th
    /// percentile, largest (the wait behind the budget, plus a few milliseconds).
    pub queue_wait: [Duration; 3],
}

impl BurstReport {
    /// REST requests per confirmed closure.
    pub fn rest_per_closure(&self) -> f64 {
        if self.confirmed == 0 {
            return 0.0;
        }
        self.rest_requests as f64 / self.confirmed as f64
    }

    /// Whether every conversation was confirmed, once.
    pub fn passes(&self) -> bool {
        self.confirmed == self.conversations && self.duplicate_disconnects == 0
    }
}

impl fmt::Display for BurstReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Duration| d.as_millis();
        let limit = match self.sim_rate {
            Some((n, w)) => format!("{n} per {} s", w.as_secs_f64()),
            None => "none".into(),
        };
        writeln!(f, "| measure | value |")?;
        writeln!(f, "|---|---|")?;
        writeln!(f, "| simulated org rate limit | {limit} |")?;
        writeln!(
            f,
            "| daemon budget (requests_per_minute) | {} |",
            self.requests_per_minute
        )?;
        writeln!(f, "| conversations | {} |", self.conversations)?;
        writeln!(f, "| confirmed | {} |", self.confirmed)?;
        writeln!(f, "| failed | {} |", self.failed)?;
        writeln!(f, "| no outcome | {} |", self.missing)?;
        writeln!(
            f,
            "| duplicate disconnects | {} |",
            self.duplicate_disconnects
        )?;
        writeln!(
            f,
            "| 429s answered by the simulator | {} |",
            self.rate_limited
        )?;
        writeln!(
            f,
            "| 429s after the first | {} |",
            self.rate_limited_after_first
        )?;
        writeln!(f, "| wall time | {:.1} s |", self.wall.as_secs_f64())?;
        writeln!(f, "| REST requests | {} |", self.rest_requests)?;
        writeln!(
            f,
            "| REST requests per closure | {:.3} |",
            self.rest_per_closure()
        )?;
        writeln!(
            f,
            "| budget queue wait (creation to PATCH) p50 / p95 / max | {} / {} / {} ms |",
            ms(self.queue_wait[0]),
            ms(self.queue_wait[1]),
            ms(self.queue_wait[2])
        )
    }
}

/// Runs one burst: `conversations` matching conversations created at once against a
/// simulator limited to `sim_rate` (Genesys's default is 300 per 60 s), the daemon
/// spending `requests_per_minute`. Waits for every outcome (up to twice the time the
/// budget needs, plus two minutes).
pub async fn run(
    conversations: usize,
    sim_rate: Option<(u32, Duration)>,
    requests_per_minute: u32,
) -> anyhow::Result<BurstReport> {
    let (sim, config) = start_simulator(sim_rate, requests_per_minute).await?;
    let Harness {
        task,
        mut reports,
        stop,
        _state,
        ..
    } = start_daemon_on(
        &sim,
        &config,
        SecretString::from("sim-secret".to_string()),
        TOKEN,
    )
    .await?;

    let burst = Burst::create(&sim, conversations);
    let per_second = f64::from(requests_per_minute.max(1)) / 60.0;
    let budget_time = Duration::from_secs_f64(conversations as f64 / per_second);
    let deadline = burst.started + budget_time * 2 + Duration::from_secs(120);
    let outcomes = burst.await_outcomes(&mut reports, deadline).await;
    stop.cancel();
    match task.await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(e.into()),
        Err(e) => anyhow::bail!("daemon task failed: {e}"),
    }
    let requests = sim.requests_timed();
    sim.shutdown().await;
    Ok(burst.report(&outcomes, &requests, sim_rate, requests_per_minute))
}

/// The set-up: a simulator limited to `sim_rate`, and the config pointed at it with
/// the budget `requests_per_minute`; logging started.
async fn start_simulator(
    sim_rate: Option<(u32, Duration)>,
    requests_per_minute: u32,
) -> anyhow::Result<(SimHandle, Config)> {
    let sim = sim::start(SimConfig {
        heartbeat_interval: Duration::from_secs(5),
        rate_limit: sim_rate,
        ..SimConfig::default()
    })
    .await?;
    let config = Config::parse(
        &CONFIG
            .replace("{URL}", &sim.base_url())
            .replace("{RPM}", &requests_per_minute.to_string()),
        Path::new("<burst>"),
    )?;
    crate::telemetry::init_logging(&config.log);
    Ok((sim, config))
}

/// The burst's conversations, and when each was created.
struct Burst {
    /// Conversations asked for.
    conversations: usize,
    /// Just before the first was created.
    started: Instant,
    /// The same, on the clock of the simulator's request log.
    started_std: std::time::Instant,
    /// Each conversation's creation.
    created: HashMap<String, std::time::Instant>,
}

/// The outcomes of a burst, and when the last came.
struct Outcomes {
    /// The report of each conversation of the burst that got one.
    by_id: HashMap<Box<str>, CloseReport>,
    /// When the last came (the start when none did).
    last: Instant,
    /// The same, on the clock of the simulator's request log.
    last_std: std::time::Instant,
}

impl Burst {
    /// The load: `conversations` queue conversations with a matching intent, at once.
    fn create(sim: &SimHandle, conversations: usize) -> Self {
        let started = Instant::now();
        let started_std = std::time::Instant::now();
        let mut created: HashMap<String, std::time::Instant> = HashMap::new();
        for _ in 0..conversations {
            let id = sim.create_conversation(ConversationSpec {
                queue_id: QUEUE.into(),
                intent_attribute: "Bot.Intent".into(),
                intent: Some("Goodbye".into()),
                agent_user_id: None,
            });
            created.insert(id, std::time::Instant::now());
        }
        Burst {
            conversations,
            started,
            started_std,
            created,
        }
    }

    /// Takes the daemon's reports until every conversation of the burst has one, the
    /// daemon stops, or `deadline`; progress every 10 s on stderr.
    async fn await_outcomes(
        &self,
        reports: &mut mpsc::UnboundedReceiver<CloseReport>,
        deadline: Instant,
    ) -> Outcomes {
        let conversations = self.conversations;
        let mut outcomes = Outcomes {
            by_id: HashMap::new(),
            last: self.started,
            last_std: self.started_std,
        };
        let mut progress = tokio::time::interval(Duration::from_secs(10));
        progress.tick().await;
        while outcomes.by_id.len() < conversations {
            tokio::select! {
                r = reports.recv() => match r {
                    Some(r) => {
                        if self.created.contains_key(&*r.conversation_id) {
                            outcomes.last = Instant::now();
                            outcomes.last_std = std::time::Instant::now();
                            outcomes.by_id.insert(r.conversation_id.clone(), r);
                        }
                    }
                    None => break,
                },
                _ = progress.tick() => eprintln!(
                    "burst: {} of {conversations} outcomes after {:.0} s",
                    outcomes.by_id.len(),
                    self.started.elapsed().as_secs_f64()
                ),
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        outcomes
    }

    /// The measurement and the report: outcomes counted, and the simulator's request log
    /// read from the first creation to the last outcome.
    fn report(
        &self,
        outcomes: &Outcomes,
        requests: &[(std::time::Instant, RecordedRequest)],
        sim_rate: Option<(u32, Duration)>,
        requests_per_minute: u32,
    ) -> BurstReport {
        let conversations = self.conversations;
        let confirmed = outcomes
            .by_id
            .values()
            .filter(|r| {
                matches!(
                    r.outcome,
                    Outcome::Confirmed | Outcome::EscalatedConfirmed | Outcome::AlreadyClosed
                )
            })
            .count();
        let failed = outcomes
            .by_id
            .values()
            .filter(|r| r.outcome == Outcome::Failed)
            .count();
        let during: Vec<_> = requests
            .iter()
            .filter(|(at, r)| {
                *at >= self.started_std && *at <= outcomes.last_std && r.path.starts_with("/api/")
            })
            .collect();
        let rate_limited = requests.iter().filter(|(_, r)| r.status == 429).count();
        let (first_patch, accepted) = disconnects(&during);
        BurstReport {
            conversations,
            sim_rate,
            requests_per_minute,
            confirmed,
            failed,
            missing: conversations - outcomes.by_id.len(),
            rate_limited,
            rate_limited_after_first: rate_limited.saturating_sub(1),
            duplicate_disconnects: accepted.values().map(|n| n.saturating_sub(1)).sum(),
            wall: outcomes.last.saturating_duration_since(self.started),
            rest_requests: during.len(),
            queue_wait: self.queue_wait(&first_patch),
        }
    }

    /// Creation to the first disconnect PATCH: median, 95th percentile, largest.
    fn queue_wait(&self, first_patch: &HashMap<&str, std::time::Instant>) -> [Duration; 3] {
        let mut waits: Vec<Duration> = self
            .created
            .iter()
            .filter_map(|(id, made)| {
                first_patch
                    .get(id.as_str())
                    .map(|at| at.saturating_duration_since(*made))
            })
            .collect();
        waits.sort();
        let pick = |q: f64| -> Duration {
            if waits.is_empty() {
                return Duration::ZERO;
            }
            let i = ((waits.len() - 1) as f64 * q).round() as usize;
            waits[i]
        };
        [pick(0.5), pick(0.95), pick(1.0)]
    }
}

/// Of the disconnect requests among `during`: when each conversation's first PATCH
/// came, and how many PATCHes for it Genesys accepted.
fn disconnects<'a>(
    during: &[&'a (std::time::Instant, RecordedRequest)],
) -> (
    HashMap<&'a str, std::time::Instant>,
    HashMap<&'a str, usize>,
) {
    let mut first_patch: HashMap<&str, std::time::Instant> = HashMap::new();
    let mut accepted: HashMap<&str, usize> = HashMap::new();
    for (at, r) in during {
        let is_disconnect = (r.method == "PATCH" && r.path.starts_with(MESSAGES))
            || (r.method == "POST" && r.path.ends_with("/disconnect"));
        if !is_disconnect {
            continue;
        }
        let id = r
            .path
            .strip_prefix(MESSAGES)
            .or_else(|| r.path.strip_prefix("/api/v2/conversations/"))
            .and_then(|rest| rest.split('/').next())
            .unwrap_or("");
        if r.method == "PATCH" {
            first_patch.entry(id).or_insert(*at);
        }
        if r.method == "PATCH" && (200..300).contains(&r.status) {
            *accepted.entry(id).or_default() += 1;
        }
    }
    (first_patch, accepted)
}
