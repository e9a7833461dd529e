//! Start-up: the journal, the login and the `availabletopics` check, the channels for
//! the configured topics (and their mirrors), each on a stream task of its own, the
//! subscription manager that adds channels for the conversations the daemon watches,
//! the closer, what listens, and the event loop they all feed.

use std::sync::Arc;

use secrecy::SecretString;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::event_loop::EventLoop;
use super::group::{Group, channels_left};
use super::health::Health;
use super::running::{Inputs, Parts, Running, Teardown};
use super::stop::FeedTask;
use super::{DaemonError, EVENT_QUEUE, RunOptions};
use crate::closer::{Closer, Waiters};
use crate::config::{Config, TOPICS_PER_CHANNEL};
use crate::genesys::api::ApiClient;
use crate::genesys::auth::TokenSource;
use crate::genesys::frames::Wanted;
use crate::genesys::stream::{ChannelStream, Reconnects, StreamEvent};
use crate::genesys::subscriptions::{Manager, Slot, Subscriptions};
use crate::genesys::topics::{self, Family};
use crate::journal::Opened;
use crate::rules::Rules;
use crate::state::Store;
use crate::telemetry::Stats;

/// Start-up: the journal first, then the login. Refused credentials fail the start;
/// an unreachable login service is retried by the streams. A stop signal meanwhile
/// ends the start at once (`None`): nothing is in flight yet.
pub(super) async fn start(
    config: &Config,
    secret: SecretString,
    opts: &mut RunOptions,
    started: Instant,
) -> Result<Option<Running>, DaemonError> {
    let group = match &config.ha {
        Some(ha) => Some(Group::start(config, ha)?),
        None => None,
    };
    let (opened, feed_token) = open_journal(config, group.as_ref())?;
    let http = ApiClient::http_client().map_err(|e| DaemonError::Setup(e.to_string()))?;
    let feed = FeedTask::start(config, &opened.journal, &http, feed_token);
    let tokens = TokenSource::new(
        http.clone(),
        &config.genesys.login_url,
        config.genesys.client_id.clone(),
        secret,
    );
    let mut client =
        ApiClient::new(http, config.genesys.api_url.clone(), tokens).with_budget(Arc::new(
            crate::genesys::budget::Budget::new(config.genesys.requests_per_minute),
        ));
    if let Some(g) = &group {
        client = client.in_group(
            &g.settings.instance,
            g.role.clone(),
            std::sync::Arc::clone(&g.gate),
        );
    }
    let api = Arc::new(client);
    let login = async {
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
        r = login => r?,
        () = opts.shutdown.cancelled() => {
            feed.stop(None).await;
            let Opened { journal, guard, .. } = opened;
            drop(journal);
            guard.finish();
            return Ok(None);
        }
    };
    let begun = Begun {
        api,
        usable,
        opened,
        feed,
        group,
    };
    let running = assemble(config, opts, started, begun).await?;
    Ok(Some(running))
}

/// What the first steps of the start made: the client, the sources that can work, the
/// journal, the feed and, in a group, the lease loop.
struct Begun {
    api: Arc<ApiClient>,
    usable: Usable,
    opened: Opened,
    feed: FeedTask,
    group: Option<Group>,
}

/// Everything the loop runs with, built from what start-up found: the streams, the
/// closer, what listens, recovery, and the event loop.
///
/// Longer than most functions here because it is the wiring: channels and struct
/// literals, one part per line, in the order they must start (the intake listens only
/// once everything it feeds exists). Split up, the same parts would only be passed
/// around between the pieces.
async fn assemble(
    config: &Config,
    opts: &mut RunOptions,
    started: Instant,
    begun: Begun,
) -> Result<Running, DaemonError> {
    let Begun {
        api,
        usable,
        opened,
        feed,
        group,
    } = begun;
    let Opened {
        journal,
        unfinished,
        recently_finished,
        guard,
    } = opened;
    let rules = Rules::compile(config);
    let wanted = Wanted::new(rules.attributes());
    let stats = Arc::new(Stats::default());
    let store = Arc::new(Store::new());
    let waiters = Arc::new(Waiters::default());
    let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
    let (reads_tx, reads) = mpsc::channel(256);
    let (reports_tx, reports_rx) = mpsc::unbounded_channel();
    let (notice_tx, notices) = mpsc::unbounded_channel();
    let (live_tx, live) = mpsc::channel(256);
    let (ask_tx, asks) = mpsc::channel(256);
    let closes = TaskTracker::new();
    let stop_streams = CancellationToken::new();
    let streams = TaskTracker::new();
    let ch = spawn_streams(
        config,
        &usable,
        StreamParts {
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
        subs: ch.subs.clone(),
        journal: journal.clone(),
        running: Arc::new(tokio::sync::Semaphore::new(
            config.daemon.max_concurrent_closes,
        )),
        in_progress: Default::default(),
    };
    let forward = forward_reports(reports_rx, opts.reports.take(), notice_tx.clone());
    // Metrics and health (`[metrics]`), until `run` returns.
    let probes = crate::metrics::Probes::new(journal.writable());
    // In a group, standing by until the lease is taken (`/readyz` says so).
    probes.set_standby(group.is_some());
    let ends = endpoints(
        config,
        probes.clone(),
        opts.intake_token.take(),
        opts.metrics_bound.take(),
        opts.intake_bound.take(),
    )
    .await?;
    log_started(config, &usable, &ch);
    // [ha]: intake calls on a standby go to the acting instance through the database;
    // the acting one takes them into its own queue.
    let relay = group.as_ref().map(|g| {
        crate::ha::relay::spawn(
            crate::ha::relay::RelaySettings {
                schema: g.settings.schema.clone(),
                lease_name: g.settings.name.clone(),
                instance: g.settings.instance.clone(),
            },
            g.connector.clone(),
            g.role.clone(),
            ends.calls.clone(),
        )
    });
    // After every blind window (this start included) the watched queues and flows are
    // listed, so what started meanwhile is found (see `recovery`).
    let recovery = recovery(config, &usable, &api, &wanted, ch.subs.enabled(), ask_tx);
    let lp = EventLoop {
        store: Arc::clone(&store),
        rules,
        waiters,
        closer,
        stats: Arc::clone(&stats),
        subs: ch.subs,
        api: Arc::clone(&api),
        wanted,
        reads: reads_tx,
        notices: notice_tx,
        catchup_after: config.stream.catchup_after,
        verify: config.intake.as_ref().is_some_and(|i| i.verify),
        draining: false,
        // In a group, nothing is decided until the lease is taken.
        acting: group.is_none(),
        relay: relay.as_ref().map(|r| r.forward.clone()),
        orphans: Default::default(),
        owed_catchup: Default::default(),
        verifying: Default::default(),
        resyncing: Default::default(),
        health: ch.health,
        recovery,
    };
    store.bury_decided(recently_finished.iter().map(String::as_str));
    // In a group the backlog is read afresh at each takeover (the leader's work
    // changes it meanwhile), never at start.
    let unfinished = if group.is_some() {
        Vec::new()
    } else {
        unfinished
    };
    let (role, lease) = match group {
        Some(g) => (Some(g.role), Some(g.lease)),
        None => (None, None),
    };
    Ok(Running::new(Parts {
        lp,
        inputs: Inputs {
            events,
            reads,
            notices,
            live,
            asks,
            intake: ends.intake,
            reload: opts.reload.take(),
            role,
        },
        awaited: (0..ch.slots_at_start).chain(ch.mirrors).collect(),
        started,
        unfinished,
        closes,
        probes,
        notifier: super::notify::Notifier::new(opts.notify_systemd),
        reloader: super::reload::Reloader {
            current: config.clone(),
            static_slots: ch.static_slots,
            mirror_slots: ch.mirror_slots,
        },
        api,
        stats,
        journal,
        retention: config.daemon.retention,
        recover_max_reads: config.stream.recover_max_reads,
        teardown: Teardown {
            streams,
            stop_streams,
            stop_intake: ends.stop_intake,
            feed,
            forward,
            guard,
            metrics: ends.metrics,
            stop_timeout: opts.drain_timeout,
            lease,
            relay: relay.map(|r| (r.stop, r.task)),
        },
    }))
}

/// The one line that says the daemon started and with what.
fn log_started(config: &Config, usable: &Usable, ch: &Channels) {
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        config = %config.source.display(),
        channels = ch.channels,
        topics = usable.topics.len(),
        rules = config.rules.len(),
        intake = config.intake.is_some(),
        per_conversation_topics = ch.subs.enabled(),
        dry_run = config.dry_run,
        "genesys-closer started"
    );
}

/// Which sources survived the `availabletopics` check.
pub(super) struct Usable {
    /// Topics of the configured families that can be used.
    pub topics: Vec<String>,
    /// Per-conversation detail topics can be used; else why not.
    pub detail: Result<(), String>,
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

/// What every stream is built from.
pub(super) struct StreamParts {
    pub api: Arc<ApiClient>,
    pub wanted: Arc<Wanted>,
    pub events: mpsc::Sender<StreamEvent>,
    pub stats: Arc<Stats>,
    pub cancel: CancellationToken,
    pub streams: TaskTracker,
    pub record: Option<crate::record::Recorder>,
    /// Where the manager says which conversations' topics went live.
    pub live: mpsc::Sender<Vec<Box<str>>>,
}

/// The channels started, for the loop's readiness and the reloader.
pub(super) struct Channels {
    pub subs: Subscriptions,
    pub health: Health,
    /// Stream indexes of the mirrors.
    pub mirrors: Vec<usize>,
    /// The slots of the configured topics (reload changes their sets in place).
    pub static_slots: Vec<Arc<Slot>>,
    /// Their mirrors' slots.
    pub mirror_slots: Vec<Arc<Slot>>,
    /// Streams started for the configured topics (1 when there are none: the manager's
    /// first channel).
    pub slots_at_start: usize,
    /// Channels at start, mirrors included.
    pub channels: usize,
}

/// One slot (and stream) per chunk of 1,000 configured topics, a mirror of each when
/// `[stream] mirror`, and the subscription manager (or its refusal, when the
/// per-conversation topics cannot be used).
///
/// Longer than most: the slots, the one closure that spawns a stream for a slot (used
/// here and by the manager), the mirrors and the manager share locals; apart, each
/// piece would take the others' as arguments.
pub(super) fn spawn_streams(config: &Config, usable: &Usable, parts: StreamParts) -> Channels {
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
    let StreamParts {
        api,
        wanted,
        events,
        stats,
        cancel,
        streams,
        record,
        live,
    } = parts;
    let spawn_stream = {
        let api = Arc::clone(&api);
        let stream_config = config.stream.clone();
        let cancel = cancel.clone();
        let reconnects = Arc::new(Reconnects::default());
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
            api,
            max_channels: channels_left(config, slots_at_start, mirrors.len()),
            subscribe_window: config.stream.subscribe_window,
            unsubscribe_window: config.stream.unsubscribe_window,
            spawn: Box::new(spawn_stream),
            live,
            cancel,
        }
        .start(),
        Err(why) => Subscriptions::disabled(why),
    };
    Channels {
        subs,
        health,
        mirrors,
        static_slots,
        mirror_slots,
        slots_at_start,
        channels,
    }
}

/// The journal first: without it a crash could lose a close, so no state directory, no
/// start (it also refuses a second daemon on the same directory). The feed's token is
/// read with it, so a bad `[feed]` stops the start before any network I/O.
pub(super) fn open_journal(
    config: &Config,
    group: Option<&Group>,
) -> Result<(Opened, Option<SecretString>), DaemonError> {
    let sinks = crate::journal::Sinks {
        http: config.feed.as_ref().is_some_and(|f| f.url.is_some()),
        file: config.feed.as_ref().is_some_and(|f| f.file.is_some()),
    };
    let feed_token = match &config.feed {
        Some(f) => crate::feed::load_token(f).map_err(DaemonError::Setup)?,
        None => None,
    };
    let since = crate::journal::now_ms() - super::FINISHED_REMEMBERED.as_millis() as i64;
    let opened = match group {
        None => crate::journal::open_with(&config.daemon.state_dir, since, sinks)?,
        Some(g) => {
            tracing::info!(database = %g.at, schema = %g.settings.schema,
                instance = %g.settings.instance, "journal: the group's, on PostgreSQL");
            crate::journal::open_postgres(
                g.database.clone(),
                g.settings.clone(),
                g.role.clone(),
                since,
                sinks,
            )?
        }
    };
    opened.journal.prune(config.daemon.retention);
    tracing::info!(
        state_dir = %config.daemon.state_dir.display(),
        unfinished = opened.unfinished.len(),
        recently_finished = opened.recently_finished.len(),
        "journal open"
    );
    Ok((opened, feed_token))
}

/// What listens: metrics and health (`[metrics]`) and the intake (`[intake]`).
pub(super) struct Endpoints {
    /// Served until dropped (the end of `run`).
    pub metrics: Option<crate::metrics::Server>,
    /// The intake's calls, for the event loop (closed when there is no intake).
    pub intake: mpsc::Receiver<crate::intake::IntakeCall>,
    /// Stops the intake (at the stop signal: no new call is taken while draining).
    pub stop_intake: CancellationToken,
    /// The event loop's intake queue, for `[ha]`'s relay (calls standbys stored).
    pub calls: mpsc::Sender<crate::intake::IntakeCall>,
}

/// Starts metrics, then the intake, which listens only once everything it feeds
/// exists. Each says where it listens through its `bound` sender (tests bind port 0).
pub(super) async fn endpoints(
    config: &Config,
    probes: crate::metrics::Probes,
    intake_token: Option<SecretString>,
    metrics_bound: Option<tokio::sync::oneshot::Sender<std::net::SocketAddr>>,
    intake_bound: Option<tokio::sync::oneshot::Sender<std::net::SocketAddr>>,
) -> Result<Endpoints, DaemonError> {
    let metrics = match &config.metrics {
        Some(m) => {
            let server = crate::metrics::start(m, probes)
                .await
                .map_err(|e| DaemonError::Setup(e.to_string()))?;
            if let Some(tell) = metrics_bound {
                let _ = tell.send(server.addr);
            }
            Some(server)
        }
        None => None,
    };
    let (intake_tx, intake) = mpsc::channel(crate::intake::QUEUE);
    let stop_intake = CancellationToken::new();
    if let Some(icfg) = &config.intake {
        let token = match intake_token {
            Some(t) => t,
            None => crate::intake::load_token(&icfg.token)
                .map_err(|e| DaemonError::Setup(e.to_string()))?,
        };
        let bound = crate::intake::start(icfg, token, intake_tx.clone(), stop_intake.clone())
            .await
            .map_err(|e| DaemonError::Setup(e.to_string()))?;
        if let Some(tell) = intake_bound {
            let _ = tell.send(bound.addr);
        }
    }
    Ok(Endpoints {
        metrics,
        intake,
        stop_intake,
        calls: intake_tx,
    })
}

/// Hands every close report to the observer (tests, the demo); the closer already
/// logged it. A failed close is told to the event loop, which gives back the topics
/// nothing waits on now.
pub(super) fn forward_reports(
    mut reports: mpsc::UnboundedReceiver<crate::closer::CloseReport>,
    observer: Option<mpsc::UnboundedSender<crate::closer::CloseReport>>,
    notices: mpsc::UnboundedSender<super::event_loop::Notice>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(r) = reports.recv().await {
            if r.outcome == crate::closer::Outcome::Failed {
                let _ = notices.send(super::event_loop::Notice::CloseFailed(
                    r.conversation_id.clone(),
                ));
            }
            if let Some(o) = &observer {
                let _ = o.send(r);
            }
        }
    })
}

/// The worker that lists the watched queues and flows after every blind window (this
/// start included), so what started meanwhile is found (see `recovery`). A listing is
/// on only when its topics are in use.
pub(super) fn recovery(
    config: &Config,
    usable: &Usable,
    api: &Arc<ApiClient>,
    wanted: &Arc<Wanted>,
    per_conversation_topics: bool,
    ask: mpsc::Sender<super::recovery::Ask>,
) -> super::recovery::Recovery {
    let listed = |prefix: &str, on: bool, ids: &[String]| {
        (on && !ids.is_empty() && usable.topics.iter().any(|t| t.starts_with(prefix)))
            .then(|| Arc::<[String]>::from(ids))
    };
    super::recovery::Recovery::start(
        Arc::clone(api),
        super::recovery::Sources {
            queues: listed(
                "v2.routing.queues.",
                config.stream.recover_queues,
                &config.stream.queues,
            ),
            flows: listed(
                "v2.analytics.flow.",
                config.stream.discover_after_gap && per_conversation_topics,
                &config.stream.flows,
            ),
        },
        Arc::clone(wanted),
        ask,
    )
}
