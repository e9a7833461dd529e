//! Wires the loop together and runs the event loop, the only writer of the state map.
//!
//! ```text
//! streams --StreamEvent--> event loop --apply--> state --decide--> rules --Decision--> closer
//! intake ---IntakeCall---> |  ^  |                 \--closed--> waiters --> closer
//!                          |  |  \--watch/unwatch--> subscriptions (batched) --> streams
//!                          |  \------ REST reads (catch-up, verify, closer) ----/
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use secrecy::SecretString;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::closer::CloseReport;
use crate::config::Config;
use crate::genesys::api::ApiError;

mod event_loop;
mod group;
mod health;
mod notify;
mod read;
mod recovery;
mod reload;
mod running;
mod start;
mod stop;

pub(crate) use event_loop::{CLOSED_GRACE, IDLE_MAX};

/// How often eviction runs.
pub(crate) const EVICT_EVERY: Duration = Duration::from_secs(30);
/// How often `STATUS=` is refreshed for systemd.
const STATUS_EVERY: Duration = Duration::from_secs(15);
/// How often the journal forgets closes past retention.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// Closes a past run finished this recently become tombstones at start, so a repeated
/// intake call or a late frame after a restart starts no second decision.
const FINISHED_REMEMBERED: Duration = Duration::from_secs(24 * 3600);
/// Room for bursts between the sockets and the event loop.
const EVENT_QUEUE: usize = 8192;
/// The backlog of unfinished closes waits for the configured channels to be live, but
/// no longer than this (a platform that is down at start must not keep it for ever).
const BACKLOG_WAITS_AT_MOST: Duration = Duration::from_secs(30);

/// Options for one run.
pub struct RunOptions {
    /// Cancel to stop: no new decisions, in-flight closes drain, then streams stop.
    pub shutdown: CancellationToken,
    /// How long in-flight closes may take to finish after shutdown.
    pub drain_timeout: Duration,
    /// Every close report also goes here (demo, tests).
    pub reports: Option<mpsc::UnboundedSender<CloseReport>>,
    /// Tell systemd READY=1 / STOPPING=1 (no-op when not under systemd).
    pub notify_systemd: bool,
    /// Each message re-reads the config file and applies it (SIGHUP); `None`: no reloads.
    pub reload: Option<mpsc::Receiver<()>>,
    /// The intake credential, when `[intake]` is on (the CLI reads it before any I/O).
    pub intake_token: Option<SecretString>,
    /// Told the intake's bound address once it listens (tests, demo: port 0).
    pub intake_bound: Option<oneshot::Sender<SocketAddr>>,
    /// Told the metrics server's bound address once it listens (tests, demo: port 0).
    pub metrics_bound: Option<oneshot::Sender<SocketAddr>>,
    /// Every text frame read from a notification socket is also appended here
    /// (`run --record FILE`; `replay` reads it back).
    pub record: Option<crate::record::Recorder>,
}

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Genesys refused the credentials: an operator must fix them, retrying won't.
    #[error("cannot start: {0}")]
    Credentials(Box<ApiError>),
    /// Local set-up failed.
    #[error("cannot start: {0}")]
    Setup(String),
    /// No configured source of conversations can work in this org.
    #[error("cannot start: {0}")]
    NoSource(String),
    /// The journal cannot be used (state directory unwritable, or another daemon on it).
    #[error("cannot start: {0}")]
    Journal(#[from] crate::journal::JournalError),
}

/// Counts at the end of a run.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Frames read.
    pub frames: u64,
    /// Conversation events applied.
    pub events: u64,
    /// Decisions made.
    pub decisions: u64,
    /// Close sequences still running when the drain deadline passed.
    pub abandoned: usize,
    /// Conversations discovered through flow metrics.
    pub discovered: u64,
    /// Intake calls answered.
    pub intake_calls: u64,
    /// Catch-up and verify reads.
    pub catchup_reads: u64,
    /// Reads made to resync after stream gaps.
    pub resync_reads: u64,
    /// Events ignored because their conversation closed and was evicted earlier.
    pub late_events: u64,
}

/// Runs the daemon until `opts.shutdown` is cancelled: start-up (`start`), then the
/// loop and the bounded stop (`running`).
pub async fn run(
    config: &Config,
    secret: SecretString,
    mut opts: RunOptions,
) -> Result<Summary, DaemonError> {
    let started = Instant::now();
    // The recorder before anything is counted (start-up requests included).
    if config.metrics.is_some() {
        crate::metrics::install();
    }
    let shutdown = opts.shutdown.clone();
    match start::start(config, secret, &mut opts, started).await? {
        Some(running) => Ok(running.run(&shutdown).await),
        None => Ok(stopped_while_starting(started)),
    }
}

/// A stop signal came before the daemon was running: nothing was in flight.
fn stopped_while_starting(started: Instant) -> Summary {
    tracing::info!(
        since_start_ms = started.elapsed().as_millis() as u64,
        "stopped while starting (nothing was in flight)"
    );
    Summary::default()
}
