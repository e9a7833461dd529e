//! Start-up: the channels for the configured topics (and their mirrors), each on a
//! stream task of its own, and the subscription manager that adds channels for the
//! conversations the daemon watches.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Usable;
use super::health::Health;
use crate::config::{Config, MAX_CHANNELS, TOPICS_PER_CHANNEL};
use crate::genesys::api::ApiClient;
use crate::genesys::frames::Wanted;
use crate::genesys::stream::{ChannelStream, Reconnects, StreamEvent};
use crate::genesys::subscriptions::{Manager, Slot, Subscriptions};
use crate::telemetry::Stats;

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
            max_channels: MAX_CHANNELS - mirrors.len(),
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
) -> Result<(crate::journal::Opened, Option<secrecy::SecretString>), super::DaemonError> {
    let sinks = crate::journal::Sinks {
        http: config.feed.as_ref().is_some_and(|f| f.url.is_some()),
        file: config.feed.as_ref().is_some_and(|f| f.file.is_some()),
    };
    let feed_token = match &config.feed {
        Some(f) => crate::feed::load_token(f).map_err(super::DaemonError::Setup)?,
        None => None,
    };
    let opened = crate::journal::open_with(
        &config.daemon.state_dir,
        crate::journal::now_ms() - super::FINISHED_REMEMBERED.as_millis() as i64,
        sinks,
    )?;
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
}

/// Starts metrics, then the intake, which listens only once everything it feeds
/// exists. Each says where it listens through its `bound` sender (tests bind port 0).
pub(super) async fn endpoints(
    config: &Config,
    probes: crate::metrics::Probes,
    intake_token: Option<secrecy::SecretString>,
    metrics_bound: Option<tokio::sync::oneshot::Sender<std::net::SocketAddr>>,
    intake_bound: Option<tokio::sync::oneshot::Sender<std::net::SocketAddr>>,
) -> Result<Endpoints, super::DaemonError> {
    use super::DaemonError;
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
        let bound = crate::intake::start(icfg, token, intake_tx, stop_intake.clone())
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
