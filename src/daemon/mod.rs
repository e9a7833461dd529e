//! Wires the loop together and runs the event loop, the only writer of the state map.
//!
//! ```text
//! streams --StreamEvent--> event loop --apply--> state --decide--> rules --Decision--> closer
//! intake ---IntakeCall---> |  ^  |                 \--closed--> waiters --> closer
//!                          |  |  \--watch/unwatch--> subscriptions (batched) --> streams
//!                          |  \------ REST reads (catch-up, verify, closer) ----/
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::closer::{CloseReport, Closer, Waiters};
use crate::config::Config;
use crate::genesys::api::{ApiClient, ApiError};
use crate::genesys::auth::TokenSource;
use crate::genesys::frames::ConversationEvent;
use crate::genesys::stream::StreamEvent;
use crate::genesys::topics::{self, Family};
use crate::rules::Rules;
use crate::state::Store;
use crate::telemetry::Stats;

mod event_loop;
mod health;
mod notify;
mod read;
mod recovery;
mod reload;
mod start;
mod stop;

use event_loop::EventLoop;
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

/// Resumes the unfinished closes of a past run; what to log its progress by.
fn resume_backlog(
    lp: &mut EventLoop,
    unfinished: Vec<crate::journal::Unfinished>,
) -> Option<(Instant, usize)> {
    let n = unfinished.len();
    if n == 0 {
        return None;
    }
    tracing::info!(
        unfinished = n,
        "resuming the closes a past run left unfinished"
    );
    lp.resume(unfinished);
    Some((Instant::now(), n))
}

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

/// Which sources survived the `availabletopics` check.
struct Usable {
    /// Topics of the configured families that can be used.
    topics: Vec<String>,
    /// Per-conversation detail topics can be used; else why not.
    detail: Result<(), String>,
}

/// Asks `availabletopics` (when `check_topics`) and drops what cannot work, one error
/// line per family; refuses to start when nothing can.
async fn usable_sources(config: &Config, api: &ApiClient) -> Result<Usable, DaemonError> {
    let all = config.stream.topics();
    let mut usable = Usable {
        topics: all.clone(),
        detail: Ok(()),
    };
    if !config.stream.check_topics || topics::families_in_use(config).is_empty() {
        return Ok(usable);
    }
    let reports = match topics::check(api, config).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, correlation_id = e.correlation_id(),
                "cannot read availabletopics; using every configured topic family unchecked");
            return Ok(usable);
        }
    };
    let mut bad = Vec::new();
    for r in &reports {
        if r.usable() {
            tracing::info!(topic_family = r.family.template(), "{r}");
        } else {
            tracing::error!(topic_family = r.family.template(), "{r}");
            bad.push(r.family);
        }
    }
    let prefix = |f: Family| match f {
        Family::Queue => Some("v2.routing.queues."),
        Family::User => Some("v2.users."),
        Family::FlowMetrics => Some("v2.analytics.flow."),
        _ => None,
    };
    let mut drop_prefixes: Vec<&str> = bad.iter().filter_map(|f| prefix(*f)).collect();
    if let Some(f) = bad.iter().find(|f| f.is_detail()) {
        usable.detail = Err(format!(
            "{} cannot be used over the WebSocket",
            f.template()
        ));
        if !config.stream.flows.is_empty() {
            tracing::error!("flow discovery needs the per-conversation detail topics: it is off");
            drop_prefixes.push("v2.analytics.flow.");
        }
    }
    usable
        .topics
        .retain(|t| !drop_prefixes.iter().any(|p| t.starts_with(p)));
    if usable.topics.is_empty() && config.intake.is_none() {
        return Err(DaemonError::NoSource(
            "none of the configured topic families can be used over the WebSocket (see the \
             error lines above); fix the org or the config"
                .into(),
        ));
    }
    Ok(usable)
}

/// Runs the daemon until `opts.shutdown` is cancelled.
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
    let (opened, feed_token) = start::open_journal(config)?;
    let journal = opened.journal.clone();
    let http = ApiClient::http_client().map_err(|e| DaemonError::Setup(e.to_string()))?;
    let feed = stop::FeedTask::start(config, &journal, &http, feed_token);
    let tokens = TokenSource::new(
        http.clone(),
        &config.genesys.login_url,
        config.genesys.client_id.clone(),
        secret,
    );
    let api = Arc::new(
        ApiClient::new(http, config.genesys.api_url.clone(), tokens).with_budget(Arc::new(
            crate::genesys::budget::Budget::new(config.genesys.requests_per_minute),
        )),
    );
    // Fail fast on refused credentials; an unreachable login service is retried by the
    // streams. A stop signal meanwhile ends the start at once: nothing is in flight yet.
    let starting = async {
        match api.token().await {
            Ok(_) => {}
            Err(e) if !e.is_retryable() => return Err(DaemonError::Credentials(Box::new(e))),
            Err(e) => {
                tracing::warn!(error = %e, "login service not reachable yet; will keep trying");
            }
        }
        usable_sources(config, &api).await
    };
    let usable = tokio::select! {
        r = starting => r?,
        () = opts.shutdown.cancelled() => {
            feed.stop(None).await;
            drop(journal);
            drop(opened.journal);
            opened.guard.finish();
            return Ok(stopped_while_starting(started));
        }
    };

    let rules = Rules::compile(config);
    let wanted = crate::genesys::frames::Wanted::new(rules.attributes());
    let stats = Arc::new(Stats::default());
    let store = Arc::new(Store::new());
    let waiters = Arc::new(Waiters::default());
    let (events_tx, mut events_rx) = mpsc::channel(EVENT_QUEUE);
    let (reads_tx, mut reads_rx) = mpsc::channel::<ConversationEvent>(256);
    let (reports_tx, reports_rx) = mpsc::unbounded_channel::<CloseReport>();
    let (notice_tx, mut notice_rx) = mpsc::unbounded_channel::<event_loop::Notice>();
    let (live_tx, mut live_rx) = mpsc::channel::<Vec<Box<str>>>(256);
    let closes = TaskTracker::new();
    let stop_streams = CancellationToken::new();
    let streams = TaskTracker::new();

    let start::Channels {
        subs,
        health,
        mirrors,
        static_slots,
        mirror_slots,
        slots_at_start,
        channels,
    } = start::spawn_streams(
        config,
        &usable,
        start::StreamParts {
            api: Arc::clone(&api),
            wanted: Arc::clone(&wanted),
            events: events_tx,
            stats: Arc::clone(&stats),
            cancel: stop_streams.clone(),
            streams: streams.clone(),
            record: opts.record.clone(),
            live: live_tx,
        },
    );

    let closer = Closer {
        api: Arc::clone(&api),
        store: Arc::clone(&store),
        waiters: Arc::clone(&waiters),
        resync: reads_tx.clone(),
        wanted_attributes: Arc::clone(&wanted),
        reports: reports_tx,
        tracker: closes.clone(),
        subs: subs.clone(),
        journal: journal.clone(),
        running: Arc::new(tokio::sync::Semaphore::new(
            config.daemon.max_concurrent_closes,
        )),
    };
    let forward = start::forward_reports(reports_rx, opts.reports.take(), notice_tx.clone());

    // Metrics and health (`[metrics]`), until `run` returns.
    let probes = crate::metrics::Probes::new(journal.writable());
    let start::Endpoints {
        metrics: _metrics,
        intake: mut intake_rx,
        stop_intake,
    } = start::endpoints(
        config,
        probes.clone(),
        opts.intake_token.take(),
        opts.metrics_bound.take(),
        opts.intake_bound.take(),
    )
    .await?;

    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        config = %config.source.display(),
        channels,
        topics = usable.topics.len(),
        rules = config.rules.len(),
        intake = config.intake.is_some(),
        per_conversation_topics = subs.enabled(),
        dry_run = config.dry_run,
        "genesys-closer started"
    );

    // After every blind window (this start included) the watched queues and flows are
    // listed, so what started meanwhile is found (see `recovery`).
    let (ask_tx, mut ask_rx) = mpsc::channel::<recovery::Ask>(256);
    let recovery = start::recovery(config, &usable, &api, &wanted, subs.enabled(), ask_tx);
    let mut lp = EventLoop {
        store: Arc::clone(&store),
        rules,
        waiters: Arc::clone(&waiters),
        closer,
        stats: Arc::clone(&stats),
        subs,
        api: Arc::clone(&api),
        wanted: Arc::clone(&wanted),
        reads: reads_tx,
        notices: notice_tx,
        catchup_after: config.stream.catchup_after,
        verify: config.intake.as_ref().is_some_and(|i| i.verify),
        draining: false,
        owed_catchup: Default::default(),
        verifying: Default::default(),
        resyncing: Default::default(),
        health,
        recovery,
    };
    store.bury_decided(opened.recently_finished.iter().map(String::as_str));
    // The backlog a past run left waits until the configured topics are live: its reads
    // and disconnects must not hold the subscriptions up (they would leave the daemon
    // deaf, and not ready, for as long as the backlog takes). Its conversations are
    // marked decided now, so no event or intake call starts a second close meanwhile.
    lp.hold(&opened.unfinished);
    let mut backlog = Some(opened.unfinished);
    let backlog_deadline = Instant::now() + BACKLOG_WAITS_AT_MOST;
    let mut draining_backlog: Option<(Instant, usize)> = None;
    let mut prune = tokio::time::interval_at(Instant::now() + PRUNE_EVERY, PRUNE_EVERY);
    prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Readiness: every configured stream and mirror live.
    let mut live: HashMap<usize, bool> = (0..slots_at_start)
        .chain(mirrors.iter().copied())
        .map(|i| (i, false))
        .collect();
    let mut ready_sent = false;
    let notifier = notify::Notifier::new(opts.notify_systemd);
    let mut reloader = reload::Reloader {
        current: config.clone(),
        static_slots,
        mirror_slots,
    };
    let mut reload_rx = opts.reload.take();
    let mut watchdog = notifier.watchdog_every().map(tokio::time::interval);
    let mut status_tick = tokio::time::interval(STATUS_EVERY);
    status_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut drain_deadline = None::<Instant>;
    // When the process must be gone (set by the stop signal).
    let mut stop_by = None::<Instant>;
    let mut beat = tokio::time::interval(crate::metrics::TICK_EVERY);
    let mut evict = tokio::time::interval(EVICT_EVERY);
    evict.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        probes.tick();
        tokio::select! {
            // Shutdown: stop deciding, let running closes finish (they still need events).
            _ = opts.shutdown.cancelled(), if !lp.draining => {
                lp.draining = true;
                stop_intake.cancel();
                // The whole stop fits in `drain_timeout`: the drain gets all but the
                // last part, which the streams, the journal and the feed share.
                let now = Instant::now();
                stop_by = Some(now + opts.drain_timeout);
                drain_deadline = Some(now + opts.drain_timeout - teardown_reserve(opts.drain_timeout));
                closes.close();
                notifier.stopping(&format!("draining {} close(s) in flight", closes.len()));
                tracing::info!(in_flight = closes.len(), "shutting down: draining in-flight closes");
            }
            _ = closes.wait(), if lp.draining => break,
            _ = sleep_until_opt(drain_deadline), if lp.draining => {
                tracing::warn!(in_flight = closes.len(),
                    "stop bound reached: closes not finished stay unfinished in the journal and \
                     the next start carries them on");
                break;
            }
            Some(ev) = events_rx.recv() => match ev {
                StreamEvent::Conversation(ev, received) => {
                    lp.on_event(&ev, received);
                }
                StreamEvent::Discovered(m, received) => {
                    lp.on_discovered(&m, received);
                }
                StreamEvent::Watching(ids, at) => lp.on_watching(&ids, at),
                StreamEvent::Live { stream, gap, .. } => {
                    if let Some(gap) = gap {
                        lp.on_gap(stream, gap, "the socket was down", false);
                    }
                    lp.health.up(stream, Instant::now());
                    // A stream the subscription manager added is not awaited for readiness.
                    live.insert(stream, true);
                    probes.set_ready(live.values().all(|l| *l));
                    if !ready_sent && live.values().all(|l| *l) {
                        ready_sent = true;
                        tracing::info!(channels = live.len(),
                            since_start_ms = started.elapsed().as_millis() as u64,
                            "every configured channel live: ready");
                        notifier.ready(&status_line(&live, &lp, &stats));
                        // Listening now: what started while the daemon was not running
                        // is listed, and the backlog may use the budget.
                        lp.recovery.trigger("start-up", None);
                        if let Some(b) = backlog.take() {
                            draining_backlog = resume_backlog(&mut lp, b);
                        }
                    }
                }
                StreamEvent::Gap { stream, gap, reason, silent } => {
                    lp.on_gap(stream, gap, reason, silent);
                }
                StreamEvent::Down { stream, reason } => {
                    lp.health.down(stream);
                    if let Some(l) = live.get_mut(&stream) {
                        *l = false;
                    }
                    probes.set_ready(live.values().all(|l| *l));
                    tracing::debug!(stream = %crate::genesys::StreamName(stream), %reason, "stream down");
                }
            },
            Some(ids) = live_rx.recv() => lp.on_watching(&ids, Instant::now()),
            Some(ask) = ask_rx.recv() => lp.on_recovery(ask, config.stream.recover_max_reads),
            // A read that gave nothing, or a close that failed.
            Some(notice) = notice_rx.recv() => lp.on_notice(notice),
            // The streams did not come up in time: the backlog goes ahead anyway (its
            // closes retry what fails, and confirm by reads if no event comes).
            _ = sleep_until_opt(Some(backlog_deadline)), if backlog.is_some() => {
                if let Some(b) = backlog.take() {
                    tracing::warn!(unfinished = b.len(),
                        waited_ms = BACKLOG_WAITS_AT_MOST.as_millis() as u64,
                        "the configured channels are not all live yet; resuming the unfinished \
                         closes anyway");
                    draining_backlog = resume_backlog(&mut lp, b);
                }
            }
            Some(call) = intake_rx.recv() => lp.on_intake(call),
            // A REST read (catch-up, verify, or the closer's): applied like an event.
            Some(ev) = reads_rx.recv() => {
                lp.on_event(&ev, Instant::now());
            }
            _ = evict.tick() => lp.evict(),
            _ = beat.tick() => crate::metrics::set_tracked(store.len()),
            _ = prune.tick() => journal.prune(config.daemon.retention),
            // Sent from the loop itself: a wedged loop stops it and systemd restarts us.
            _ = tick_opt(&mut watchdog) => notifier.watchdog(),
            _ = status_tick.tick() => {
                if !lp.draining {
                    notifier.status(&status_line(&live, &lp, &stats));
                }
                if let Some((since, resumed)) = draining_backlog {
                    let in_flight = closes.len();
                    let queued = api.budget().queued();
                    if in_flight == 0 {
                        tracing::info!(resumed, took_ms = since.elapsed().as_millis() as u64,
                            "the resumed backlog is done");
                        draining_backlog = None;
                    } else {
                        tracing::info!(resumed, in_flight, queued_close = queued[1],
                            queued_read = queued[2], elapsed_ms = since.elapsed().as_millis() as u64,
                            "draining the resumed backlog behind the live channels");
                    }
                }
            }
            Some(()) = recv_opt(&mut reload_rx), if !lp.draining => {
                notifier.reloading();
                match reloader.reload(&mut lp) {
                    Ok(status) | Err(status) => notifier.ready(&status),
                }
            }
        }
    }
    let abandoned = closes.len();
    // Every step below is bounded: the stop signal's bound holds whatever Genesys, the
    // disk or the feed endpoint do (a stream waiting out a 90 s Retry-After, say).
    let stop_by = stop_by.unwrap_or_else(|| Instant::now() + opts.drain_timeout);
    stop_intake.cancel();
    stop_streams.cancel();
    // Nobody reads events any more: a stream blocked on a full queue must not wait.
    drop(events_rx);
    stop::streams(&streams, stop_by - teardown_reserve(opts.drain_timeout) / 2).await;
    drop(lp);
    stop::journal_and_feed(&journal, feed, stop_by).await;
    drop(journal);
    if abandoned == 0 {
        let _ = forward.await;
    } else {
        // Abandoned sequences still hold report senders; don't wait for them.
        forward.abort();
    }
    let summary = stop::summary(&stats, abandoned);
    if abandoned == 0 {
        // Every handle is gone: wait for the writer to finish.
        drop(opened.journal);
        opened.guard.finish();
    }
    Ok(summary)
}

/// The part of the stop bound kept for the streams, the journal and the feed after the
/// drain: a quarter, at most 3 s.
fn teardown_reserve(stop: Duration) -> Duration {
    (stop / 4).min(Duration::from_secs(3))
}

/// A stop signal came before the daemon was running: nothing was in flight.
fn stopped_while_starting(started: Instant) -> Summary {
    tracing::info!(
        since_start_ms = started.elapsed().as_millis() as u64,
        "stopped while starting (nothing was in flight)"
    );
    Summary::default()
}

/// `STATUS=` for systemd: connection state and counts.
fn status_line(live: &HashMap<usize, bool>, lp: &EventLoop, stats: &Stats) -> String {
    let up = live.values().filter(|l| **l).count();
    format!(
        "{up}/{} channels live; {} conversations tracked; {} decisions, {} closes in flight",
        live.len(),
        lp.store.len(),
        stats.decisions.get(),
        lp.waiters.len()
    )
}

async fn tick_opt(i: &mut Option<tokio::time::Interval>) {
    match i {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn recv_opt(rx: &mut Option<mpsc::Receiver<()>>) -> Option<()> {
    match rx {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
