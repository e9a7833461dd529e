//! Recovery after a blind window: what started while the daemon could not see.
//!
//! Genesys has no replay. A conversation that starts and gets its intent while no socket
//! of the daemon receives its queue's topic (the daemon not running, every socket down or
//! stalled, its topics silently dropped) is never pushed again until its next event, which
//! may never come. So after every such window (every start, and every gap no mirror
//! covered) one worker lists what is in the watched queues and flows **now**:
//!
//! - queues: `POST /api/v2/analytics/queues/observations/query` with `oWaiting` and
//!   `oInteracting` as `detailMetrics` (facts sheet D.6), one request per
//!   [`QUEUES_PER_QUERY`] queues;
//! - flows: `POST /api/v2/analytics/flows/activity/query` (`oFlow` details, C.3).
//!
//! The event loop, the only writer of the state map, says which listed conversations it
//! does not know (at most `recover_max_reads` per window, the rest logged as left); the
//! worker reads them ([`Source::Recovery`]) and hands each read back, where rules decide
//! on it as on any event. In the budget the listings go with the subscriptions (they are
//! how the daemon sees what it missed: one request per window, which must not wait
//! behind a backlog of closes), and the reads with the closes (a read may find a match,
//! and queues behind at most `max_concurrent_closes` close steps, not behind every
//! resync read). Bot-phase conversations found in the flows go through discovery (watched, then
//! read once their topics are live). One line per window says its cause, its length, how
//! many conversations were listed, read and decided, and what was left.
//!
//! Triggers that arrive while a window is being recovered are merged into one more run:
//! none is lost, and a burst of gaps costs one listing, not one each.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::genesys::api::{ApiClient, ApiError, Listed};
use crate::genesys::budget::Priority;
use crate::genesys::frames::{ConversationEvent, FlowMetric, Source};

/// Queue ids per observation query (the filter's predicates); more queues take more
/// requests.
pub(crate) const QUEUES_PER_QUERY: usize = 100;
/// Entities per flow asked for; a busier flow's list comes back truncated (logged).
const FLOW_PAGE: usize = 1_000;
/// Recovery reads in flight at once (they wait at read priority in the budget anyway).
const READ_CONCURRENCY: usize = 4;
/// How long a listing is retried when it fails for a reason that passes.
const LIST_RETRY_FOR: Duration = Duration::from_secs(120);

/// Why a window is being recovered.
#[derive(Debug, Clone)]
pub(crate) struct Trigger {
    /// What made the daemon blind (`start-up`, a gap's reason).
    pub cause: &'static str,
    /// How long it was blind, when known (a start does not know how long the daemon
    /// was not running).
    pub window: Option<Duration>,
}

/// What the worker asks of the event loop.
pub(crate) enum Ask {
    /// These were listed: watch the flow ones that are new, and answer which queue
    /// ones to read (unknown to the map, at most the bound) and how many were left.
    Listed {
        /// Listed in the watched queues.
        queues: Vec<Listed>,
        /// Listed in the watched flows.
        flows: Vec<FlowMetric>,
        /// The answer.
        reply: oneshot::Sender<Plan>,
    },
    /// A read of a listed conversation: apply it like an event and say whether a rule
    /// decided on it.
    Read {
        /// The read, as an event.
        event: ConversationEvent,
        /// Whether a rule decided on it now.
        reply: oneshot::Sender<bool>,
    },
    /// A listed conversation could not be read: a later window may try it again.
    Failed(Box<str>),
}

/// The event loop's answer to a listing.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// Queue conversations to read.
    pub read: Vec<Box<str>>,
    /// Listed, unknown, but over the bound: not read in this window.
    pub left: usize,
    /// Flow conversations that were new and are now watched (read once live).
    pub flow_new: usize,
}

/// Hands triggers to the recovery worker.
#[derive(Clone)]
pub(crate) struct Recovery {
    triggers: mpsc::UnboundedSender<Trigger>,
    sources: Arc<std::sync::Mutex<Sources>>,
}

/// What the worker lists (a reload may change the lists; a refusal turns one off).
#[derive(Debug, Clone, Default)]
pub(crate) struct Sources {
    /// Watched queues (`None`: not listed).
    pub queues: Option<Arc<[String]>>,
    /// Watched flows (`None`: not listed).
    pub flows: Option<Arc<[String]>>,
}

impl Recovery {
    /// Starts the worker; it ends when every `Recovery` handle is gone or the loop is.
    pub(crate) fn start(
        api: Arc<ApiClient>,
        sources: Sources,
        wanted: Arc<crate::genesys::frames::Wanted>,
        ask: mpsc::Sender<Ask>,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let sources = Arc::new(std::sync::Mutex::new(sources));
        tokio::spawn(
            Worker {
                api,
                sources: Arc::clone(&sources),
                queues: None,
                flows: None,
                wanted,
                ask,
            }
            .run(rx),
        );
        Recovery {
            triggers: tx,
            sources,
        }
    }

    /// A reload changed the watched lists: the next window lists the new ones (a list
    /// Genesys refused stays off).
    pub(crate) fn set_lists(&self, queues: &[String], flows: &[String]) {
        let mut s = lock(&self.sources);
        if s.queues.is_some() {
            s.queues = (!queues.is_empty()).then(|| queues.into());
        }
        if s.flows.is_some() {
            s.flows = (!flows.is_empty()).then(|| flows.into());
        }
    }

    /// Recovers a blind window (merged with any already waiting).
    pub(crate) fn trigger(&self, cause: &'static str, window: Option<Duration>) {
        let _ = self.triggers.send(Trigger { cause, window });
    }
}

fn lock(m: &std::sync::Mutex<Sources>) -> std::sync::MutexGuard<'_, Sources> {
    // Every change is one assignment: the lists stay consistent across a panic.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct Worker {
    api: Arc<ApiClient>,
    /// Shared with the handles (reload); copied at the start of each window.
    sources: Arc<std::sync::Mutex<Sources>>,
    queues: Option<Arc<[String]>>,
    flows: Option<Arc<[String]>>,
    wanted: Arc<crate::genesys::frames::Wanted>,
    ask: mpsc::Sender<Ask>,
}

/// What one window's recovery did, for its log line.
#[derive(Debug, Default)]
struct Tally {
    listed_queues: usize,
    listed_flows: usize,
    requests: usize,
    truncated: bool,
    read: usize,
    read_failed: usize,
    decided: usize,
    left: usize,
    flow_new: usize,
}

impl Tally {
    /// The window's one line: at warn when it was recovered only in part.
    fn log(&self, cause: &str, window: Option<Duration>, took: Duration) {
        let window_ms = window.map(|w| w.as_millis() as u64);
        let took_ms = took.as_millis() as u64;
        if self.left > 0 || self.read_failed > 0 || self.truncated {
            tracing::warn!(
                cause,
                window_ms,
                listed_queues = self.listed_queues,
                listed_flows = self.listed_flows,
                read = self.read,
                read_failed = self.read_failed,
                decided = self.decided,
                watched_from_flows = self.flow_new,
                left = self.left,
                truncated = self.truncated,
                requests = self.requests,
                took_ms,
                "blind window recovered in part: conversations left unread are found at their \
                 next event (raise [stream] recover_max_reads to read more per window)"
            );
        } else {
            tracing::info!(
                cause,
                window_ms,
                listed_queues = self.listed_queues,
                listed_flows = self.listed_flows,
                read = self.read,
                decided = self.decided,
                watched_from_flows = self.flow_new,
                left = 0,
                requests = self.requests,
                took_ms,
                "blind window recovered: listed what is in the watched queues and flows now"
            );
        }
    }
}

impl Worker {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Trigger>) {
        while let Some(first) = rx.recv().await {
            // Everything queued meanwhile is the same window as far as a listing goes.
            let mut causes = vec![first.cause];
            let mut window = first.window;
            while let Ok(t) = rx.try_recv() {
                if !causes.contains(&t.cause) {
                    causes.push(t.cause);
                }
                window = match (window, t.window) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    (a, b) => a.or(b),
                };
            }
            let Sources { queues, flows } = lock(&self.sources).clone();
            (self.queues, self.flows) = (queues, flows);
            if self.queues.is_none() && self.flows.is_none() {
                continue;
            }
            if !self.window(&causes.join(", "), window).await {
                return;
            }
        }
    }

    /// Recovers one window; `false` when the event loop is gone.
    async fn window(&mut self, cause: &str, window: Option<Duration>) -> bool {
        let started = Instant::now();
        let mut t = Tally::default();
        let Some(plan) = self.plan(&mut t).await else {
            return false;
        };
        t.left = plan.left;
        t.flow_new = plan.flow_new;
        t.read = plan.read.len();
        t.requests += plan.read.len();
        (t.read_failed, t.decided) = self.read_all(plan.read).await;
        t.log(cause, window, started.elapsed());
        crate::metrics::recovery_window(t.read as u64, t.decided as u64, t.left as u64);
        true
    }

    /// Lists the watched queues and flows and asks the event loop which of the listed
    /// conversations to read; `None` when the event loop is gone.
    async fn plan(&mut self, t: &mut Tally) -> Option<Plan> {
        let queues = self.list_queues(t).await;
        let flows = self.list_flows(t).await;
        let (reply, answer) = oneshot::channel();
        self.ask
            .send(Ask::Listed {
                queues,
                flows,
                reply,
            })
            .await
            .ok()?;
        answer.await.ok()
    }

    /// Reads the conversations the event loop asked for, [`READ_CONCURRENCY`] at once,
    /// and hands each read back to it: how many reads failed, and how many a rule
    /// decided on.
    async fn read_all(&self, ids: Vec<Box<str>>) -> (usize, usize) {
        use futures_util::StreamExt as _;
        let wanted = self.wanted.get();
        let api = &self.api;
        let ask = &self.ask;
        let wanted = &wanted;
        futures_util::stream::iter(ids)
            .map(|id| async move {
                let Some(mut ev) =
                    super::read::read_at(Priority::Close, api, &id, wanted, "recovery").await
                else {
                    let _ = ask.send(Ask::Failed(id)).await;
                    return (1, 0);
                };
                ev.source = Source::Recovery;
                let (reply, decided) = oneshot::channel();
                if ask.send(Ask::Read { event: ev, reply }).await.is_err() {
                    return (0, 0);
                }
                (0, usize::from(decided.await.unwrap_or(false)))
            })
            .buffer_unordered(READ_CONCURRENCY)
            .fold((0, 0), |(f, d), (f1, d1)| async move { (f + f1, d + d1) })
            .await
    }

    async fn list_queues(&mut self, t: &mut Tally) -> Vec<Listed> {
        let Some(queues) = self.queues.clone() else {
            return Vec::new();
        };
        let mut all = Vec::new();
        for chunk in queues.chunks(QUEUES_PER_QUERY) {
            let api = &self.api;
            let r = with_retry(&mut t.requests, || api.queue_observations(chunk)).await;
            match r {
                Ok((listed, truncated)) => {
                    t.truncated |= truncated;
                    all.extend(listed);
                }
                Err(e) => {
                    if refused(&e) {
                        tracing::error!(error = %e, correlation_id = e.correlation_id(),
                            "cannot list the conversations in the watched queues (POST \
                             /api/v2/analytics/queues/observations/query needs the permission \
                             analytics:queueObservation:view); a queue conversation that starts \
                             and gets its intent while the daemon is blind is missed until its \
                             next event; not asking again (set [stream] recover_queues = false \
                             to silence this)");
                        lock(&self.sources).queues = None;
                    } else {
                        tracing::warn!(error = %e, correlation_id = e.correlation_id(),
                            "listing the conversations in the watched queues failed");
                    }
                    break;
                }
            }
        }
        t.listed_queues = all.len();
        all
    }

    async fn list_flows(&mut self, t: &mut Tally) -> Vec<FlowMetric> {
        let Some(flows) = self.flows.clone() else {
            return Vec::new();
        };
        let api = &self.api;
        match with_retry(&mut t.requests, || api.flows_activity(&flows, FLOW_PAGE)).await {
            Ok((list, truncated)) => {
                t.truncated |= truncated;
                t.listed_flows = list.len();
                list
            }
            Err(e) => {
                if refused(&e) {
                    tracing::error!(error = %e, correlation_id = e.correlation_id(),
                        "cannot list the conversations in the watched flows (POST \
                         /api/v2/analytics/flows/activity/query needs the permission \
                         analytics:flowObservation:view); bot-phase conversations whose flow \
                         started while the daemon was blind are missed until their next event; \
                         not asking again (set [stream] discover_after_gap = false to silence \
                         this)");
                    lock(&self.sources).flows = None;
                } else {
                    tracing::warn!(error = %e, correlation_id = e.correlation_id(),
                        "listing the conversations in the watched flows failed");
                }
                Vec::new()
            }
        }
    }
}

/// Genesys refused the query for good (a permission, an unknown endpoint): asking again
/// would only fail again.
fn refused(e: &ApiError) -> bool {
    matches!(e.status(), Some(400..=499)) && e.status() != Some(429)
}

/// Runs `f` until it succeeds, fails for good, or its pauses add up to
/// [`LIST_RETRY_FOR`], counting each attempt in `requests`.
async fn with_retry<T, F, Fut>(requests: &mut usize, mut f: F) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ApiError>>,
{
    use backon::Retryable as _;
    let attempts = std::sync::atomic::AtomicUsize::new(0);
    let backoff = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(Duration::from_secs(20))
        .with_jitter()
        .with_total_delay(Some(LIST_RETRY_FOR))
        .without_max_times();
    let result = (|| {
        attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        f()
    })
    .retry(backoff)
    .when(ApiError::is_retryable)
    .notify(|e, pause| {
        tracing::debug!(error = %e, retry_in_ms = pause.as_millis() as u64,
            "recovery listing failed; retrying");
    })
    .await;
    *requests += attempts.into_inner();
    result
}
