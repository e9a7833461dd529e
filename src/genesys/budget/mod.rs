//! The one REST rate budget every Platform API call shares, with priorities.
//!
//! Genesys allows about 300 requests per minute per OAuth client, and disconnects,
//! subscriptions and reads all count against it. A [`Budget`] spends a rate below that
//! (`[genesys] requests_per_minute`) and, when requests queue behind it, serves them by
//! [`Priority`]: a close is never kept waiting behind a backlog of resync reads. A 429's
//! `Retry-After` ([`Budget::pause_for`]) stops every priority until it has passed.

use std::collections::VecDeque;
use std::fmt;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::Method;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// A wait longer than this counts as queueing (reported and counted).
const SLOW_WAIT: Duration = Duration::from_secs(1);
/// At most one "requests are queueing" log line per this interval.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Which queue a request waits in; a higher one is always served first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Priority {
    /// Notification channels and their subscriptions. They go first: a channel that
    /// waits for its topics behind a backlog of closes is a blind daemon, and every
    /// conversation that gets its intent meanwhile would be missed (a restart with a
    /// thousand unfinished closes must be listening within seconds, not minutes).
    Subscribe = 0,
    /// Ending a conversation: disconnects, teardown, the farewell message, wrap-up, and
    /// the closer's own confirming read.
    Close = 1,
    /// Everything else: resync, catch-up, verification, recovery listings and reads.
    Read = 2,
}

impl Priority {
    /// All priorities, highest first (the index order of [`Budget::queued`]).
    pub const ALL: [Priority; 3] = [Priority::Subscribe, Priority::Close, Priority::Read];

    fn index(self) -> usize {
        self as usize
    }

    /// The `priority` label of the budget's metrics (one of
    /// [`crate::metrics::BUDGET_PRIORITIES`]).
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Subscribe => "subscribe",
            Priority::Close => "close",
            Priority::Read => "read",
        }
    }
}

/// The priority a Platform API call waits at, from its method and path (a query is
/// ignored): PATCHes of conversations and participants, the disconnect teardown, the
/// farewell message and wrap-up are [`Priority::Close`]; anything under
/// `/api/v2/notifications/` is [`Priority::Subscribe`]; everything else (conversation
/// GETs, analytics queries) is [`Priority::Read`].
pub fn priority_of(method: &Method, path: &str) -> Priority {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    let path = path.trim_end_matches('/');
    if path.starts_with("/api/v2/notifications/") {
        return Priority::Subscribe;
    }
    let Some(rest) = path.strip_prefix("/api/v2/conversations/") else {
        return Priority::Read;
    };
    let segments: Vec<&str> = rest.split('/').collect();
    let closing = match *method {
        Method::PATCH => true,
        Method::POST => matches!(
            segments.as_slice(),
            [.., "disconnect"] | [.., "wrapup"] | [.., "communications", _, "messages"]
        ),
        _ => false,
    };
    if closing {
        Priority::Close
    } else {
        Priority::Read
    }
}

/// Proof that one request may go out now.
#[derive(Debug)]
pub struct Permit {
    waited: Duration,
}

impl Permit {
    /// How long the request waited for its permit.
    pub fn waited(&self) -> Duration {
        self.waited
    }
}

/// The shared REST rate budget. Cheap to share behind an `Arc`; needs no runtime to
/// build (the dispatcher task is spawned by the first request that has to wait).
pub struct Budget {
    inner: Arc<Inner>,
}

struct Inner {
    /// `None`: no rate limit (tests); pauses still apply.
    limiter: Option<DefaultDirectRateLimiter>,
    /// The steady spacing between two permits (a minute over the rate); `None` without
    /// a limit. After a 429 pause the queue drains at this pace, not as one burst.
    spacing: Option<Duration>,
    state: Mutex<State>,
    waited_total: AtomicU64,
}

#[derive(Default)]
struct State {
    /// Waiters per priority, FIFO, indexed by `Priority as usize`.
    queues: [VecDeque<oneshot::Sender<()>>; 3],
    /// Whether a dispatcher task is running (at most one is).
    dispatching: bool,
    /// A governor cell taken for a waiter that was cancelled before it was handed over;
    /// the next request spends it instead of taking a new one.
    spare: bool,
    /// No permit is handed out before this (a 429's `Retry-After`).
    paused_until: Option<Instant>,
    /// A pause ended and the requests it held are still queued: they go out one per
    /// `spacing`, not all at once (the governor's burst filled up during the pause, and
    /// releasing it the moment `Retry-After` ends would meet the limit again at once).
    /// Cleared when the queues are empty.
    pacing: bool,
    /// When the dispatcher last handed out a permit.
    last_handout: Option<Instant>,
    /// When the last "requests are queueing" line was logged.
    last_log: Option<Instant>,
}

impl State {
    /// Drops the senders whose waiter is gone, so depths count live requests only.
    fn prune(&mut self) {
        for q in &mut self.queues {
            q.retain(|tx| !tx.is_closed());
        }
    }

    fn depths(&mut self) -> [usize; 3] {
        self.prune();
        let depths = [
            self.queues[0].len(),
            self.queues[1].len(),
            self.queues[2].len(),
        ];
        for p in Priority::ALL {
            crate::metrics::budget_queued(p.as_str(), depths[p.index()]);
        }
        depths
    }

    fn is_empty(&mut self) -> bool {
        self.depths() == [0; 3]
    }

    fn paused_at(&self, now: Instant) -> Option<Instant> {
        self.paused_until.filter(|until| *until > now)
    }

    /// Hands a permit to the head of the highest non-empty queue, skipping waiters that
    /// were cancelled. `false` when nobody took it.
    fn hand_over(&mut self) -> bool {
        for q in &mut self.queues {
            while let Some(tx) = q.pop_front() {
                if tx.send(()).is_ok() {
                    return true;
                }
            }
        }
        false
    }
}

impl fmt::Debug for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut st = self.inner.lock();
        f.debug_struct("Budget")
            .field("limited", &self.inner.limiter.is_some())
            .field("queued", &st.depths())
            .field("paused_until", &st.paused_until)
            .finish()
    }
}

impl Budget {
    /// A budget of `per_minute` requests per minute (at least 1).
    ///
    /// Burst: a tenth of a minute's allowance (at least 1) may go out at once. A close
    /// sequence is several calls in a row (disconnect, farewell, wrap-up, confirming
    /// read), and a few conversations often close together; they should not be spaced
    /// 250 ms apart when nothing else is queued. Governor's cell algorithm allows at
    /// most `burst + per_minute` in any 60 s, so the default 240 peaks at 264, still
    /// under Genesys's 300, while a burst the size of the whole minute could not be.
    pub fn new(per_minute: u32) -> Self {
        let per_minute = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(per_minute.get() / 10).unwrap_or(NonZeroU32::MIN);
        Budget::with_quota(Quota::per_minute(per_minute).allow_burst(burst))
    }

    /// A budget with no rate limit (for tests); 429 pauses still apply.
    pub fn unlimited() -> Self {
        Budget::build(None)
    }

    /// A budget with an explicit governor quota.
    pub fn with_quota(quota: Quota) -> Self {
        let spacing = quota.replenish_interval();
        let mut b = Budget::build(Some(RateLimiter::direct(quota)));
        if let Some(inner) = Arc::get_mut(&mut b.inner) {
            inner.spacing = Some(spacing);
        }
        b
    }

    fn build(limiter: Option<DefaultDirectRateLimiter>) -> Self {
        Budget {
            inner: Arc::new(Inner {
                limiter,
                spacing: None,
                state: Mutex::new(State::default()),
                waited_total: AtomicU64::new(0),
            }),
        }
    }

    /// Waits until one request at priority `p` may go out: the rate allows it, no
    /// higher-priority request is waiting, earlier requests at `p` went first, and no
    /// 429 pause is running. Must be called within a Tokio runtime. Cancel-safe: a
    /// dropped wait is skipped and takes no permit with it.
    pub async fn acquire(&self, p: Priority) -> Permit {
        let start = Instant::now();
        loop {
            let rx = {
                let mut st = self.inner.lock();
                // The fast path: nobody waiting, no pause, and a cell free right now.
                if st.paused_at(Instant::now()).is_none()
                    && !st.pacing
                    && st.is_empty()
                    && (std::mem::take(&mut st.spare) || self.inner.try_cell())
                {
                    let waited = start.elapsed();
                    crate::metrics::budget_wait(p.as_str(), waited);
                    return Permit { waited };
                }
                let (tx, rx) = oneshot::channel();
                st.queues[p.index()].push_back(tx);
                if !st.dispatching {
                    tokio::spawn(dispatch(self.inner.clone()));
                    st.dispatching = true;
                }
                rx
            };
            // The dispatcher never drops a sender unsent; were one dropped, queue again
            // rather than go out without a permit.
            if rx.await.is_ok() {
                break;
            }
        }
        let waited = start.elapsed();
        if waited > SLOW_WAIT {
            self.inner.waited_total.fetch_add(1, Ordering::Relaxed);
            self.report(waited);
        }
        crate::metrics::budget_wait(p.as_str(), waited);
        Permit { waited }
    }

    /// Logs that requests are queueing, at most once per [`LOG_EVERY`].
    fn report(&self, waited: Duration) {
        let depths = {
            let mut st = self.inner.lock();
            let now = Instant::now();
            if st
                .last_log
                .is_some_and(|t| now.saturating_duration_since(t) < LOG_EVERY)
            {
                return;
            }
            st.last_log = Some(now);
            st.depths()
        };
        tracing::info!(
            queued_subscribe = depths[0],
            queued_close = depths[1],
            queued_read = depths[2],
            waited_ms = u64::try_from(waited.as_millis()).unwrap_or(u64::MAX),
            waited_total = self.waited_total(),
            "REST budget: requests are queueing behind the rate budget"
        );
    }

    /// Stops handing out permits, for every priority, until `d` from now (a 429's
    /// `Retry-After`). A pause already running longer is kept, never shortened.
    pub fn pause_for(&self, d: Duration) {
        let now = Instant::now();
        // A duration past `Instant`'s range is a pause for (practically) ever.
        let until = now
            .checked_add(d)
            .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400));
        let mut st = self.inner.lock();
        if st.paused_until.is_none_or(|u| u < until) {
            st.paused_until = Some(until);
        }
    }

    /// Requests waiting now, per priority: `[subscribe, close, read]`.
    pub fn queued(&self) -> [usize; 3] {
        self.inner.lock().depths()
    }

    /// How many requests have waited more than a second for their permit.
    pub fn waited_total(&self) -> u64 {
        self.inner.waited_total.load(Ordering::Relaxed)
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent across a panic (every change is one assignment).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn try_cell(&self) -> bool {
        self.limiter.as_ref().is_none_or(|l| l.check().is_ok())
    }
}

/// Clears `dispatching` if the dispatcher task is dropped without finishing (its runtime
/// shut down), so the next waiter starts a new one.
struct Running {
    inner: Arc<Inner>,
    armed: bool,
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.armed {
            self.inner.lock().dispatching = false;
        }
    }
}

enum Step {
    Pause(Instant),
    Pace(Instant),
    Cell,
    Next,
    Done,
}

/// The dispatcher: while anyone waits, takes one governor cell at a time (outside any
/// pause) and hands it to the head of the highest non-empty queue. Ends when the queues
/// are empty; `acquire` starts it again.
async fn dispatch(inner: Arc<Inner>) {
    let mut running = Running {
        inner: inner.clone(),
        armed: true,
    };
    let mut cell = false;
    loop {
        let step = {
            let mut st = inner.lock();
            if !cell {
                cell = std::mem::take(&mut st.spare);
            }
            let now = Instant::now();
            if let Some(until) = st.paused_at(now) {
                Step::Pause(until)
            } else if st.is_empty() {
                // Decided under the same lock `acquire` queues under: a waiter queued
                // after this sees `dispatching == false` and starts a new dispatcher.
                st.dispatching = false;
                st.pacing = false;
                st.spare |= cell;
                running.armed = false;
                Step::Done
            } else if !cell {
                Step::Cell
            } else if let Some(next) = st
                .pacing
                .then(|| st.last_handout.zip(inner.spacing))
                .flatten()
                .map(|(last, spacing)| last + spacing)
                .filter(|next| *next > now)
            {
                Step::Pace(next)
            } else {
                if st.hand_over() {
                    cell = false;
                    st.last_handout = Some(now);
                }
                Step::Next
            }
        };
        match step {
            Step::Pause(until) => {
                tokio::time::sleep_until(until).await;
                // What queued during the pause drains at the steady pace.
                let mut st = inner.lock();
                st.pacing = inner.spacing.is_some();
                st.last_handout = Some(Instant::now());
            }
            Step::Pace(next) => tokio::time::sleep_until(next).await,
            Step::Cell => {
                if let Some(limiter) = &inner.limiter {
                    limiter.until_ready().await;
                }
                cell = true;
            }
            Step::Next => {}
            Step::Done => return,
        }
    }
}

#[cfg(test)]
mod tests;
