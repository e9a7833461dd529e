//! Wires the loop together and runs the event loop, the only writer of the state map.
//!
//! streams --StreamEvent--> event loop --apply--> state --decide--> rules --Decision--> closer
//!                               ^                   \--closed--> waiters --> closer
//!                               \------ resync (REST reads) ----------------/

use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::closer::{CloseReport, Closer, Decision, Waiters};
use crate::config::{Config, TOPICS_PER_CHANNEL};
use crate::genesys::api::{ApiClient, ApiError};
use crate::genesys::auth::TokenSource;
use crate::genesys::frames::ConversationEvent;
use crate::genesys::stream::{ChannelStream, StreamEvent};
use crate::rules::Rules;
use crate::state::Store;
use crate::telemetry::Stats;

/// Closed conversations stay this long so late duplicates find them closed and decided.
const CLOSED_GRACE: Duration = Duration::from_secs(600);
/// Open conversations with no event for this long are dropped (their end was missed).
const IDLE_MAX: Duration = Duration::from_secs(48 * 3600);
/// How often eviction runs.
const EVICT_EVERY: Duration = Duration::from_secs(30);
/// Room for bursts between the sockets and the event loop.
const EVENT_QUEUE: usize = 8192;

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
}

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Genesys refused the credentials: an operator must fix them, retrying won't.
    #[error("cannot start: {0}")]
    Credentials(ApiError),
    /// Local set-up failed.
    #[error("cannot start: {0}")]
    Setup(String),
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
}

/// Runs the daemon until `opts.shutdown` is cancelled.
pub async fn run(
    config: &Config,
    secret: SecretString,
    opts: RunOptions,
) -> Result<Summary, DaemonError> {
    let http = ApiClient::http_client().map_err(|e| DaemonError::Setup(e.to_string()))?;
    let tokens = TokenSource::new(
        http.clone(),
        &config.genesys.login_url,
        config.genesys.client_id.clone(),
        secret,
    );
    let api = Arc::new(ApiClient::new(http, config.genesys.api_url.clone(), tokens));
    // Fail fast on refused credentials; an unreachable login service is retried by the streams.
    match api.token().await {
        Ok(_) => {}
        Err(e) if !e.is_retryable() => return Err(DaemonError::Credentials(e)),
        Err(e) => tracing::warn!(error = %e, "login service not reachable yet; will keep trying"),
    }

    let rules = Rules::compile(config);
    let wanted: Arc<[Box<str>]> = rules.attributes().into();
    let stats = Arc::new(Stats::default());
    let store = Arc::new(Store::new());
    let waiters = Arc::new(Waiters::default());
    let (events_tx, mut events_rx) = mpsc::channel(EVENT_QUEUE);
    let (resync_tx, mut resync_rx) = mpsc::channel::<ConversationEvent>(256);
    let (reports_tx, mut reports_rx) = mpsc::unbounded_channel::<CloseReport>();
    let closes = TaskTracker::new();
    let closer = Closer {
        api: Arc::clone(&api),
        store: Arc::clone(&store),
        waiters: Arc::clone(&waiters),
        resync: resync_tx,
        wanted_attributes: Arc::clone(&wanted),
        reports: reports_tx,
        tracker: closes.clone(),
    };
    // Forward reports to the observer; the closer already logged them.
    let observer = opts.reports;
    let forward = tokio::spawn(async move {
        while let Some(r) = reports_rx.recv().await {
            if let Some(o) = &observer {
                let _ = o.send(r);
            }
        }
    });

    let topics = config.stream.topics();
    let stop_streams = CancellationToken::new();
    let streams = TaskTracker::new();
    let channels = topics.chunks(TOPICS_PER_CHANNEL).count();
    for (index, chunk) in topics.chunks(TOPICS_PER_CHANNEL).enumerate() {
        let s = ChannelStream {
            index,
            topics: chunk.to_vec(),
            api: Arc::clone(&api),
            config: config.stream.clone(),
            wanted_attributes: Arc::clone(&wanted),
            events: events_tx.clone(),
            stats: Arc::clone(&stats),
            cancel: stop_streams.clone(),
        };
        streams.spawn(s.run());
    }
    drop(events_tx);
    streams.close();
    tracing::info!(
        channels,
        topics = topics.len(),
        rules = config.rules.len(),
        dry_run = config.dry_run,
        "genesys-closer started"
    );

    let mut live = vec![false; channels];
    let mut ready_sent = false;
    let mut draining = false;
    let mut drain_deadline = None::<Instant>;
    let mut evict = tokio::time::interval(EVICT_EVERY);
    evict.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            // Shutdown: stop deciding, let running closes finish (they still need events).
            _ = opts.shutdown.cancelled(), if !draining => {
                draining = true;
                drain_deadline = Some(Instant::now() + opts.drain_timeout);
                closes.close();
                if opts.notify_systemd {
                    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
                }
                tracing::info!(in_flight = closes.len(), "shutting down: draining in-flight closes");
            }
            _ = closes.wait(), if draining => break,
            _ = sleep_until_opt(drain_deadline), if draining => {
                tracing::error!(in_flight = closes.len(), "drain deadline passed; closes abandoned");
                break;
            }
            Some(ev) = events_rx.recv() => match ev {
                StreamEvent::Conversation(ev, received) => {
                    apply(&ev, received, &store, &rules, &waiters, &closer, &stats, draining);
                }
                StreamEvent::Live { stream, channel_id } => {
                    live[stream] = true;
                    if !ready_sent && live.iter().all(|l| *l) {
                        ready_sent = true;
                        tracing::info!(%channel_id, "all channels live: ready");
                        if opts.notify_systemd {
                            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
                        }
                    }
                }
                StreamEvent::Down { stream, reason } => {
                    live[stream] = false;
                    tracing::debug!(stream, %reason, "stream down");
                }
            },
            Some(ev) = resync_rx.recv() => {
                // A REST read: applied like an event, but it never triggers a decision
                // (the conversation already has one).
                apply(&ev, Instant::now(), &store, &rules, &waiters, &closer, &stats, true);
            }
            _ = evict.tick() => {
                let gone = store.evict(Instant::now(), CLOSED_GRACE, IDLE_MAX);
                if gone > 0 {
                    tracing::debug!(evicted = gone, tracked = store.len(), "evicted conversations");
                }
            }
        }
    }
    let abandoned = closes.len();
    stop_streams.cancel();
    streams.wait().await;
    drop(closer);
    if abandoned == 0 {
        let _ = forward.await;
    } else {
        // Abandoned sequences still hold report senders; don't wait for them.
        forward.abort();
    }
    let summary = Summary {
        frames: stats.frames.get(),
        events: stats.conversation_events.get(),
        decisions: stats.decisions.get(),
        abandoned,
    };
    tracing::info!(
        frames = summary.frames,
        malformed_frames = stats.malformed_frames.get(),
        unknown_topics = stats.unknown_topics.get(),
        events = summary.events,
        decisions = summary.decisions,
        abandoned,
        "stopped"
    );
    Ok(summary)
}

/// Applies one event and acts on what changed. The map guard is released inside
/// `Store::apply`, before waiters are notified or a close starts.
#[allow(clippy::too_many_arguments)]
fn apply(
    ev: &ConversationEvent,
    received: Instant,
    store: &Store,
    rules: &Rules,
    waiters: &Waiters,
    closer: &Closer,
    stats: &Stats,
    no_new_decisions: bool,
) {
    let applied = store.apply(ev, received, |conv| {
        if no_new_decisions {
            return None;
        }
        let verdict = rules.evaluate(conv)?;
        Some(Decision {
            conversation_id: ev.conversation_id.clone(),
            verdict,
            queue_id: conv.queue_id().map(Into::into),
            customer_id: conv.customer_id().map(Into::into),
            already_closed: conv.is_closed(),
            decided_at: received,
        })
    });
    if applied.closed_now {
        stats.closed_seen.inc();
        waiters.notify(&ev.conversation_id, received);
    }
    if let Some(d) = applied.decision {
        stats.decisions.inc();
        tracing::info!(
            conversation_id = &*d.conversation_id,
            rule = &*d.verdict.rule.name,
            intent = &*d.verdict.intent,
            queue_id = d.queue_id.as_deref(),
            correlation_id = ev.correlation_id.as_deref(),
            "rule matched"
        );
        closer.start(d);
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
