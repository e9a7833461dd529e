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
use crate::config::{Config, MAX_CHANNELS, TOPICS_PER_CHANNEL};
use crate::genesys::api::{ApiClient, ApiError};
use crate::genesys::auth::TokenSource;
use crate::genesys::frames::ConversationEvent;
use crate::genesys::stream::{ChannelStream, StreamEvent};
use crate::genesys::subscriptions::{Manager, Slot, Subscriptions};
use crate::genesys::topics::{self, Family};
use crate::intake::{self, IntakeCall};
use crate::rules::Rules;
use crate::state::Store;
use crate::telemetry::Stats;

mod event_loop;
mod health;
mod notify;
mod recovery;
mod reload;

use event_loop::EventLoop;
pub(crate) use event_loop::{CLOSED_GRACE, IDLE_MAX};
use health::Health;

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
    Credentials(ApiError),
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
    // The journal first: without it a crash could lose a close, so no state directory,
    // no start. It also refuses a second daemon on the same directory.
    let sinks = crate::journal::Sinks {
        http: config.feed.as_ref().is_some_and(|f| f.url.is_some()),
        file: config.feed.as_ref().is_some_and(|f| f.file.is_some()),
    };
    let feed_token = match &config.feed {
        Some(f) => crate::feed::load_token(f).map_err(DaemonError::Setup)?,
        None => None,
    };
    let opened = crate::journal::open_with(
        &config.daemon.state_dir,
        crate::journal::now_ms() - FINISHED_REMEMBERED.as_millis() as i64,
        sinks,
    )?;
    let journal = opened.journal.clone();
    journal.prune(config.daemon.retention);
    tracing::info!(
        state_dir = %config.daemon.state_dir.display(),
        unfinished = opened.unfinished.len(),
        recently_finished = opened.recently_finished.len(),
        "journal open"
    );
    let http = ApiClient::http_client().map_err(|e| DaemonError::Setup(e.to_string()))?;
    // The outcome feed delivers from the journal's outbox on its own task.
    let stop_feed = CancellationToken::new();
    let feed_task = config.feed.as_ref().map(|f| {
        tracing::info!(
            url = f.url.as_ref().map(|u| u.as_str()),
            file = f.file.as_ref().map(|p| p.display().to_string()),
            "outcome feed on"
        );
        tokio::spawn(
            crate::feed::Feed {
                journal: journal.clone(),
                http: http.clone(),
                url: f.url.clone(),
                token: feed_token.clone(),
                file: f.file.clone(),
                timeout: f.timeout,
            }
            .run(stop_feed.clone()),
        )
    });
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
            Err(e) if !e.is_retryable() => return Err(DaemonError::Credentials(e)),
            Err(e) => {
                tracing::warn!(error = %e, "login service not reachable yet; will keep trying");
            }
        }
        usable_sources(config, &api).await
    };
    let usable = tokio::select! {
        r = starting => r?,
        () = opts.shutdown.cancelled() => {
            stop_feed.cancel();
            if let Some(t) = feed_task {
                let _ = t.await;
            }
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
    let (reports_tx, mut reports_rx) = mpsc::unbounded_channel::<CloseReport>();
    let (notice_tx, mut notice_rx) = mpsc::unbounded_channel::<event_loop::Notice>();
    let (live_tx, mut live_rx) = mpsc::channel::<Vec<Box<str>>>(256);
    let closes = TaskTracker::new();
    let stop_streams = CancellationToken::new();
    let streams = TaskTracker::new();

    // One slot per channel; the manager may add slots (and streams) for conversations.
    let slots: Vec<Arc<Slot>> = {
        let chunks: Vec<Vec<String>> = usable
            .topics
            .chunks(TOPICS_PER_CHANNEL)
            .map(<[String]>::to_vec)
            .collect();
        if chunks.is_empty() {
            vec![Slot::new(Vec::new())]
        } else {
            chunks.into_iter().map(Slot::new).collect()
        }
    };
    let statics = if usable.topics.is_empty() {
        0
    } else {
        slots.len()
    };
    let health = Health::new(statics, config.stream.mirror);
    let mirrors = health.mirrors();
    let spawn_stream = {
        let api = Arc::clone(&api);
        let stream_config = config.stream.clone();
        let wanted = Arc::clone(&wanted);
        let events = events_tx.clone();
        let stats = Arc::clone(&stats);
        let cancel = stop_streams.clone();
        let streams = streams.clone();
        let record = opts.record.clone();
        let reconnects = Arc::new(crate::genesys::stream::Reconnects::default());
        move |index: usize, slot: Arc<Slot>| {
            let s = ChannelStream {
                index,
                slot,
                api: Arc::clone(&api),
                config: stream_config.clone(),
                wanted_attributes: Arc::clone(&wanted),
                events: events.clone(),
                stats: Arc::clone(&stats),
                cancel: cancel.clone(),
                all_rejected: Default::default(),
                record: record.clone(),
                reconnects: Arc::clone(&reconnects),
                held_at: Default::default(),
                event_seen: Default::default(),
            };
            streams.spawn(s.run());
        }
    };
    for (index, slot) in slots.iter().enumerate() {
        spawn_stream(index, Arc::clone(slot));
    }
    // The mirrors hold the configured topics again, on channels of their own (the
    // slots hold no conversation yet: this is the configured set).
    let mut mirror_slots = Vec::new();
    for (&index, slot) in mirrors.iter().zip(&slots) {
        let m = Slot::new(slot.expected_live());
        mirror_slots.push(Arc::clone(&m));
        spawn_stream(index, m);
    }
    let static_slots: Vec<Arc<Slot>> = slots[..statics].to_vec();
    let slots_at_start = slots.len();
    let channels = slots_at_start + mirrors.len();
    let subs = match &usable.detail {
        Ok(()) => Manager {
            slots,
            api: Arc::clone(&api),
            max_channels: MAX_CHANNELS - mirrors.len(),
            subscribe_window: config.stream.subscribe_window,
            unsubscribe_window: config.stream.unsubscribe_window,
            spawn: Box::new(spawn_stream),
            live: live_tx,
            cancel: stop_streams.clone(),
        }
        .start(),
        Err(why) => Subscriptions::disabled(why),
    };
    drop(events_tx);

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
    // Forward reports to the observer; the closer already logged them. A failed close
    // is told to the event loop, which gives back the topics nothing waits on now.
    let observer = opts.reports;
    let close_failed = notice_tx.clone();
    let forward = tokio::spawn(async move {
        while let Some(r) = reports_rx.recv().await {
            if r.outcome == crate::closer::Outcome::Failed {
                let _ =
                    close_failed.send(event_loop::Notice::CloseFailed(r.conversation_id.clone()));
            }
            if let Some(o) = &observer {
                let _ = o.send(r);
            }
        }
    });

    // Metrics and health (`[metrics]`), until `run` returns.
    let probes = crate::metrics::Probes::new(journal.writable());
    let _metrics = match &config.metrics {
        Some(m) => {
            let server = crate::metrics::start(m, probes.clone())
                .await
                .map_err(|e| DaemonError::Setup(e.to_string()))?;
            if let Some(tell) = opts.metrics_bound {
                let _ = tell.send(server.addr);
            }
            Some(server)
        }
        None => None,
    };
    // The intake listens only once everything it feeds exists.
    let (intake_tx, mut intake_rx) = mpsc::channel::<IntakeCall>(intake::QUEUE);
    let stop_intake = CancellationToken::new();
    if let Some(icfg) = &config.intake {
        let token = match opts.intake_token {
            Some(t) => t,
            None => {
                intake::load_token(&icfg.token).map_err(|e| DaemonError::Setup(e.to_string()))?
            }
        };
        let bound = intake::start(icfg, token, intake_tx.clone(), stop_intake.clone())
            .await
            .map_err(|e| DaemonError::Setup(e.to_string()))?;
        if let Some(tell) = opts.intake_bound {
            let _ = tell.send(bound.addr);
        }
    }
    drop(intake_tx);

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
    let listed = |prefix: &str, on: bool, ids: &[String]| {
        (on && !ids.is_empty() && usable.topics.iter().any(|t| t.starts_with(prefix)))
            .then(|| Arc::<[String]>::from(ids))
    };
    let recovery = recovery::Recovery::start(
        Arc::clone(&api),
        recovery::Sources {
            queues: listed(
                "v2.routing.queues.",
                config.stream.recover_queues,
                &config.stream.queues,
            ),
            flows: listed(
                "v2.analytics.flow.",
                config.stream.discover_after_gap && subs.enabled(),
                &config.stream.flows,
            ),
        },
        Arc::clone(&wanted),
        ask_tx,
    );
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
    // Closed only now: the subscription manager may open streams while running.
    streams.close();
    let streams_by = stop_by - teardown_reserve(opts.drain_timeout) / 2;
    if tokio::time::timeout_at(streams_by, streams.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            streams = streams.len(),
            "streams did not stop in time; leaving them (the process ends)"
        );
    }
    drop(lp);
    // Deferred decisions and the last outcomes must be on disk before the process ends.
    match tokio::time::timeout_at(stop_by, journal.flush()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "journal: could not store the last records"),
        Err(_) => tracing::error!(
            "journal: the last records were not stored within the stop bound; the next \
             start resumes from what is on disk"
        ),
    }
    // Outcomes not yet delivered stay in the outbox for the next start.
    stop_feed.cancel();
    if let Some(t) = feed_task
        && tokio::time::timeout_at(stop_by, t).await.is_err()
    {
        tracing::warn!("outcome feed did not stop in time; what it had not sent stays queued");
    }
    drop(journal);
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
        discovered: stats.discovered.get(),
        intake_calls: stats.intake_calls.get(),
        catchup_reads: stats.catchup_reads.get(),
        resync_reads: stats.resync_reads.get(),
        late_events: stats.late_events.get(),
    };
    tracing::info!(
        frames = summary.frames,
        malformed_frames = stats.malformed_frames.get(),
        unknown_topics = stats.unknown_topics.get(),
        events = summary.events,
        decisions = summary.decisions,
        discovered = summary.discovered,
        intake_calls = summary.intake_calls,
        catchup_reads = summary.catchup_reads,
        resync_reads = summary.resync_reads,
        late_events = summary.late_events,
        rotations = stats.rotations.get(),
        topics_found_dropped = stats.dropped_topics.get(),
        binary_frames = stats.binary_frames.get(),
        oversized_frames = stats.oversized_frames.get(),
        abandoned,
        "stopped"
    );
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
