//! The running daemon: the one loop that hands what arrives (stream events, REST reads,
//! intake calls, notices, timers, reloads) to the [`EventLoop`], readiness, the backlog
//! a past run left, and the bounded stop.
//!
//! Each arm of the loop is one call; what it does lives in a method here or in
//! `event_loop`. The stop is two steps: [`Running::begin_drain`] at the signal (no new
//! decisions, the intake closed, closes in flight still get their events), then
//! [`Running::finish`] once they are done or the bound is reached.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::event_loop::{EventLoop, Notice};
use super::notify::Notifier;
use super::recovery::Ask;
use super::reload::Reloader;
use super::stop::FeedTask;
use super::{BACKLOG_WAITS_AT_MOST, EVICT_EVERY, PRUNE_EVERY, STATUS_EVERY, Summary};
use crate::genesys::api::ApiClient;
use crate::genesys::frames::ConversationEvent;
use crate::genesys::stream::StreamEvent;
use crate::intake::IntakeCall;
use crate::journal::{Journal, JournalGuard, Unfinished};
use crate::telemetry::Stats;

/// Everything the loop reads from.
pub(super) struct Inputs {
    /// The notification streams.
    pub events: mpsc::Receiver<StreamEvent>,
    /// REST reads (catch-up, verify, resync, the closer's), applied like events.
    pub reads: mpsc::Receiver<ConversationEvent>,
    /// Reads that gave nothing and closes that failed.
    pub notices: mpsc::UnboundedReceiver<Notice>,
    /// Conversations whose per-conversation topics went live.
    pub live: mpsc::Receiver<Vec<Box<str>>>,
    /// What a blind window's listing found.
    pub asks: mpsc::Receiver<Ask>,
    /// Intake calls (closed when there is no intake).
    pub intake: mpsc::Receiver<IntakeCall>,
    /// Reload requests (SIGHUP); `None`: no reloads.
    pub reload: Option<mpsc::Receiver<()>>,
    /// `[ha]`: this instance's role, from the lease loop; `None`: one instance, always
    /// acting.
    pub role: Option<tokio::sync::watch::Receiver<crate::ha::leader::Role>>,
}

/// What the loop does on a clock.
struct Timers {
    prune: Interval,
    watchdog: Option<Interval>,
    status: Interval,
    beat: Interval,
    evict: Interval,
}

impl Timers {
    fn new(watchdog: Option<Duration>) -> Timers {
        let delayed = |mut i: Interval| {
            i.set_missed_tick_behavior(MissedTickBehavior::Delay);
            i
        };
        Timers {
            prune: delayed(tokio::time::interval_at(
                Instant::now() + PRUNE_EVERY,
                PRUNE_EVERY,
            )),
            watchdog: watchdog.map(tokio::time::interval),
            status: delayed(tokio::time::interval(STATUS_EVERY)),
            beat: tokio::time::interval(crate::metrics::TICK_EVERY),
            evict: delayed(tokio::time::interval(EVICT_EVERY)),
        }
    }
}

/// The unfinished closes a past run left. They wait until the configured topics are
/// live: their reads and disconnects must not hold the subscriptions up (they would
/// leave the daemon deaf, and not ready, for as long as the backlog takes).
struct Backlog {
    /// Not resumed yet.
    waiting: Option<Vec<Unfinished>>,
    /// Resumed anyway at this time if the channels are not all live by then.
    deadline: Instant,
    /// Resumed at, and how many: progress is logged until none is in flight.
    draining: Option<(Instant, usize)>,
}

/// What the stop needs that the loop does not use.
pub(super) struct Teardown {
    /// Tasks of the streams.
    pub streams: TaskTracker,
    /// Stops them.
    pub stop_streams: CancellationToken,
    /// Stops the intake.
    pub stop_intake: CancellationToken,
    /// The outcome feed.
    pub feed: FeedTask,
    /// Hands close reports to the observer.
    pub forward: JoinHandle<()>,
    /// The journal's writer joins when this drops (after the last handle).
    pub guard: JournalGuard,
    /// Served until the end of the run.
    pub metrics: Option<crate::metrics::Server>,
    /// The whole stop's bound.
    pub stop_timeout: Duration,
    /// `[ha]`: the lease loop, resigned at the stop signal.
    pub lease: Option<LeaseTask>,
    /// `[ha]`: the intake relay (what stops it, its task), stopped at the end.
    pub relay: Option<(CancellationToken, JoinHandle<()>)>,
}

/// `[ha]`: the lease loop's task and what stops it (it resigns the lease as it ends).
pub(super) struct LeaseTask {
    pub stop: CancellationToken,
    pub task: JoinHandle<()>,
}

/// The daemon once started: the event loop, what feeds it and how it stops.
pub(super) struct Running {
    pub(super) lp: EventLoop,
    inputs: Inputs,
    timers: Timers,
    /// Readiness: every configured stream and mirror live (streams the subscription
    /// manager adds are not awaited).
    live: HashMap<usize, bool>,
    ready_sent: bool,
    started: Instant,
    backlog: Backlog,
    /// Close sequences in flight.
    closes: TaskTracker,
    probes: crate::metrics::Probes,
    notifier: Notifier,
    reloader: Reloader,
    api: Arc<ApiClient>,
    stats: Arc<Stats>,
    journal: Journal,
    /// Read at start (a reload changes neither).
    retention: Duration,
    recover_max_reads: usize,
    teardown: Teardown,
    /// When the drain gives up (set by the stop signal).
    drain_deadline: Option<Instant>,
    /// When the process must be gone (set by the stop signal).
    stop_by: Option<Instant>,
    /// `[ha]`: the end of the trust window last published (a renew after it lapsed
    /// reads the journal back).
    trusted_until: Option<Instant>,
}

/// What [`Running::new`] is built from.
pub(super) struct Parts {
    pub lp: EventLoop,
    pub inputs: Inputs,
    /// Stream indexes awaited for readiness.
    pub awaited: Vec<usize>,
    pub started: Instant,
    pub unfinished: Vec<Unfinished>,
    pub closes: TaskTracker,
    pub probes: crate::metrics::Probes,
    pub notifier: Notifier,
    pub reloader: Reloader,
    pub api: Arc<ApiClient>,
    pub stats: Arc<Stats>,
    pub journal: Journal,
    pub retention: Duration,
    pub recover_max_reads: usize,
    pub teardown: Teardown,
}

impl Running {
    /// Ready to loop. The backlog's conversations are marked decided now, so no event
    /// or intake call starts a second close while it waits.
    pub(super) fn new(p: Parts) -> Running {
        let mut lp = p.lp;
        lp.hold(&p.unfinished);
        Running {
            lp,
            inputs: p.inputs,
            timers: Timers::new(p.notifier.watchdog_every()),
            live: p.awaited.into_iter().map(|i| (i, false)).collect(),
            ready_sent: false,
            started: p.started,
            backlog: Backlog {
                waiting: Some(p.unfinished),
                deadline: Instant::now() + BACKLOG_WAITS_AT_MOST,
                draining: None,
            },
            closes: p.closes,
            probes: p.probes,
            notifier: p.notifier,
            reloader: p.reloader,
            api: p.api,
            stats: p.stats,
            journal: p.journal,
            retention: p.retention,
            recover_max_reads: p.recover_max_reads,
            teardown: p.teardown,
            drain_deadline: None,
            stop_by: None,
            trusted_until: None,
        }
    }

    /// Runs until `shutdown` is cancelled and the drain ends, then stops.
    pub(super) async fn run(mut self, shutdown: &CancellationToken) -> Summary {
        self.turn(shutdown).await;
        self.finish().await
    }

    /// The loop: one arm per input, each a single call.
    async fn turn(&mut self, shutdown: &CancellationToken) {
        loop {
            self.probes.tick();
            tokio::select! {
                // Stop deciding; running closes finish (they still need events).
                () = shutdown.cancelled(), if !self.lp.draining => self.begin_drain(),
                () = self.closes.wait(), if self.lp.draining => break,
                () = sleep_until_opt(self.drain_deadline), if self.lp.draining => {
                    tracing::warn!(in_flight = self.closes.len(),
                        "stop bound reached: closes not finished stay unfinished in the journal and \
                         the next start carries them on");
                    break;
                }
                Some(ev) = self.inputs.events.recv() => self.on_stream(ev),
                Some(ids) = self.inputs.live.recv() => self.lp.on_watching(&ids, Instant::now()),
                Some(ask) = self.inputs.asks.recv() => self.lp.on_recovery(ask, self.recover_max_reads),
                // A read that gave nothing, or a close that failed.
                Some(notice) = self.inputs.notices.recv() => self.lp.on_notice(notice),
                () = tokio::time::sleep_until(self.backlog.deadline), if self.backlog.waiting.is_some() => {
                    self.backlog_anyway();
                }
                Some(call) = self.inputs.intake.recv() => self.lp.on_intake(call),
                // A REST read (catch-up, verify, or the closer's): applied like an event.
                Some(ev) = self.inputs.reads.recv() => {
                    self.lp.on_event(&ev, Instant::now());
                }
                _ = self.timers.evict.tick() => self.lp.evict(),
                _ = self.timers.beat.tick() => crate::metrics::set_tracked(self.lp.store.len()),
                _ = self.timers.prune.tick() => self.journal.prune(self.retention),
                // Sent from the loop itself: a wedged loop stops it and systemd restarts us.
                () = tick_opt(&mut self.timers.watchdog) => self.notifier.watchdog(),
                _ = self.timers.status.tick() => self.on_status_tick(),
                Some(()) = recv_opt(&mut self.inputs.reload), if !self.lp.draining => self.reload(),
                Some(role) = changed_opt(&mut self.inputs.role) => self.on_role(role).await,
            }
        }
    }

    /// The stop signal: no new decisions or intake calls; closes in flight may finish
    /// within the drain's share of the stop bound (all but [`teardown_reserve`]), the
    /// rest is for the streams, the journal and the feed.
    fn begin_drain(&mut self) {
        self.lp.draining = true;
        self.teardown.stop_intake.cancel();
        if let Some(l) = &self.teardown.lease {
            // [ha]: the lease goes first, so a standby takes over at once; steps of the
            // closes in flight are refused from now on and left to it.
            l.stop.cancel();
        }
        let now = Instant::now();
        let stop = self.teardown.stop_timeout;
        self.stop_by = Some(now + stop);
        self.drain_deadline = Some(now + stop - teardown_reserve(stop));
        self.closes.close();
        self.notifier.stopping(&format!(
            "draining {} close(s) in flight",
            self.closes.len()
        ));
        tracing::info!(
            in_flight = self.closes.len(),
            "shutting down: draining in-flight closes"
        );
    }

    /// What a stream says: an event, a discovery, a subscription change, or its state.
    fn on_stream(&mut self, ev: StreamEvent) {
        match ev {
            StreamEvent::Conversation(ev, received) => {
                self.lp.on_event(&ev, received);
            }
            StreamEvent::Discovered(m, received) => {
                self.lp.on_discovered(&m, received);
            }
            StreamEvent::Watching(ids, at) => self.lp.on_watching(&ids, at),
            StreamEvent::Live { stream, gap, .. } => {
                if let Some(gap) = gap {
                    self.lp.on_gap(stream, gap, "the socket was down", false);
                }
                self.lp.health.up(stream, Instant::now());
                self.on_live(stream);
            }
            StreamEvent::Gap {
                stream,
                gap,
                reason,
                silent,
            } => self.lp.on_gap(stream, gap, reason, silent),
            StreamEvent::Down { stream, reason } => {
                self.lp.health.down(stream);
                if let Some(l) = self.live.get_mut(&stream) {
                    *l = false;
                }
                self.probes.set_ready(self.all_live());
                tracing::debug!(stream = %crate::genesys::StreamName(stream), %reason, "stream down");
            }
        }
    }

    fn all_live(&self) -> bool {
        self.live.values().all(|l| *l)
    }

    /// A stream is live. The first time every configured one is: ready, then what
    /// started while the daemon was not listening is listed and the backlog may use
    /// the budget.
    fn on_live(&mut self, stream: usize) {
        self.live.insert(stream, true);
        self.probes.set_ready(self.all_live());
        if self.ready_sent || !self.all_live() {
            return;
        }
        self.ready_sent = true;
        tracing::info!(
            channels = self.live.len(),
            since_start_ms = self.started.elapsed().as_millis() as u64,
            "every configured channel live: ready"
        );
        self.notifier.ready(&self.status_line());
        self.lp.recovery.trigger("start-up", None);
        if let Some(b) = self.backlog.waiting.take() {
            self.resume_backlog(b);
        }
    }

    /// The streams did not come up in time: the backlog goes ahead anyway (its closes
    /// retry what fails, and confirm by reads if no event comes).
    fn backlog_anyway(&mut self) {
        if let Some(b) = self.backlog.waiting.take() {
            tracing::warn!(
                unfinished = b.len(),
                waited_ms = BACKLOG_WAITS_AT_MOST.as_millis() as u64,
                "the configured channels are not all live yet; resuming the unfinished \
                 closes anyway"
            );
            self.resume_backlog(b);
        }
    }

    /// Resumes the unfinished closes of a past run, and logs its progress from now on.
    fn resume_backlog(&mut self, unfinished: Vec<Unfinished>) {
        let n = unfinished.len();
        if n == 0 {
            return;
        }
        tracing::info!(
            unfinished = n,
            "resuming the closes a past run left unfinished"
        );
        self.lp.resume(unfinished);
        self.backlog.draining = Some((Instant::now(), n));
    }

    /// `STATUS=` for systemd, and the resumed backlog's progress.
    fn on_status_tick(&mut self) {
        if !self.lp.draining {
            self.notifier.status(&self.status_line());
        }
        let Some((since, resumed)) = self.backlog.draining else {
            return;
        };
        let in_flight = self.closes.len();
        if in_flight == 0 {
            tracing::info!(
                resumed,
                took_ms = since.elapsed().as_millis() as u64,
                "the resumed backlog is done"
            );
            self.backlog.draining = None;
        } else {
            let queued = self.api.budget().queued();
            tracing::info!(
                resumed,
                in_flight,
                queued_close = queued[1],
                queued_read = queued[2],
                elapsed_ms = since.elapsed().as_millis() as u64,
                "draining the resumed backlog behind the live channels"
            );
        }
    }

    /// `[ha]`: the lease was taken (act: the rules are asked about what the map kept
    /// warm, and what started while standing by is listed as after a blind window) or
    /// lost (stand by: closes in flight are fenced off by the journal).
    async fn on_role(&mut self, role: crate::ha::leader::Role) {
        use crate::ha::leader::Role;
        match role {
            Role::Leader {
                epoch,
                trusted_until,
            } => {
                // A renew that comes after the trust window had lapsed (the database was
                // out of reach): steps refused meanwhile left their closes unfinished.
                let lapsed = self.trusted_until.is_some_and(|t| t <= Instant::now());
                self.trusted_until = Some(trusted_until);
                if self.lp.draining {
                    return;
                }
                if !self.lp.acting {
                    self.take_over(epoch).await;
                } else if lapsed {
                    tracing::warn!(
                        epoch,
                        "the lease is trusted again after a lapse: closes refused meanwhile \
                         are read back from the journal"
                    );
                    self.take_over(epoch).await;
                }
            }
            Role::Standby if self.lp.acting => {
                self.trusted_until = None;
                self.lp.acting = false;
                self.probes.set_standby(true);
                tracing::warn!(
                    in_flight = self.closes.len(),
                    "standing by: no new decisions; closes in flight stop at their next step"
                );
            }
            Role::Standby => self.trusted_until = None,
        }
    }

    /// The lease is this instance's: the journal is read afresh (what earlier epochs
    /// left unfinished is carried on, each starting with one read of the conversation;
    /// what they finished is not decided again), then the rules are asked about what
    /// the map kept warm, and what started meanwhile is listed as after a blind window.
    async fn take_over(&mut self, epoch: i64) {
        let since = crate::journal::now_ms() - super::FINISHED_REMEMBERED.as_millis() as i64;
        let (mut unfinished, finished) = match self.journal.reread(since).await {
            Ok(r) => r,
            Err(e) => {
                // Not acting without knowing what earlier epochs did: the lease loop
                // keeps renewing, and the next role change (or renew) tries again.
                tracing::error!(epoch, error = %e,
                    "takeover: cannot read the journal; not acting until it can be read");
                return;
            }
        };
        self.lp
            .store
            .bury_decided(finished.iter().map(String::as_str));
        // A close still running here (a lease lost and taken back, a trust window that
        // lapsed and came back), at whatever step, is not started twice.
        let running = &self.lp.closer.in_progress;
        unfinished.retain(|u| !running.contains(u.decision.conversation_id.as_str()));
        self.lp.hold(&unfinished);
        let resumed = unfinished.len();
        let decided = self.lp.take_over();
        self.probes.set_standby(false);
        self.lp.resume(unfinished);
        let since = crate::journal::now_ms() - WATCHED_REMEMBERED.as_millis() as i64;
        let watched = match self.journal.watched(since).await {
            Ok(ids) => self.lp.rewatch(&ids),
            Err(e) => {
                tracing::warn!(epoch, error = %e,
                    "takeover: cannot read which conversations earlier leaders watched; \
                     they are found by the recovery listing only");
                0
            }
        };
        tracing::info!(
            epoch,
            resumed,
            decided,
            watched,
            "took over the lease: acting now; `resumed` closes earlier leaders left \
             unfinished are carried on, `decided` conversations seen while standing by matched \
             a rule, `watched` conversations earlier leaders watched for their intent are \
             watched here"
        );
        self.lp.recovery.trigger("takeover", None);
    }

    /// SIGHUP: the file again; the old configuration stays on any problem.
    fn reload(&mut self) {
        self.notifier.reloading();
        match self.reloader.reload(&mut self.lp) {
            Ok(status) | Err(status) => self.notifier.ready(&status),
        }
    }

    /// `STATUS=` for systemd: connection state and counts.
    fn status_line(&self) -> String {
        let up = self.live.values().filter(|l| **l).count();
        let role = match (&self.inputs.role, self.lp.acting) {
            (Some(_), true) => "active; ",
            (Some(_), false) => "standby; ",
            (None, _) => "",
        };
        format!(
            "{role}{up}/{} channels live; {} conversations tracked; {} decisions, {} closes in flight",
            self.live.len(),
            self.lp.store.len(),
            self.stats.decisions.get(),
            self.lp.waiters.len()
        )
    }

    /// The end of the run. Every step is bounded: the stop signal's bound holds
    /// whatever Genesys, the disk or the feed endpoint do (a stream waiting out a 90 s
    /// Retry-After, say).
    async fn finish(self) -> Summary {
        let abandoned = self.closes.len();
        let t = self.teardown;
        let stop_by = self
            .stop_by
            .unwrap_or_else(|| Instant::now() + t.stop_timeout);
        t.stop_intake.cancel();
        t.stop_streams.cancel();
        if let Some(l) = t.lease {
            l.stop.cancel();
            if tokio::time::timeout_at(stop_by, l.task).await.is_err() {
                tracing::warn!("lease: not resigned within the stop bound; it expires on its own");
            }
        }
        if let Some((stop, task)) = t.relay {
            // Whoever still waits for a relayed call's answer is told it is stored.
            stop.cancel();
            let _ = tokio::time::timeout_at(stop_by, task).await;
        }
        // Nobody reads events any more: a stream blocked on a full queue must not wait.
        drop(self.inputs.events);
        super::stop::streams(&t.streams, stop_by - teardown_reserve(t.stop_timeout) / 2).await;
        drop(self.lp);
        super::stop::journal_and_feed(&self.journal, t.feed, stop_by).await;
        drop(self.journal);
        if abandoned == 0 {
            let _ = t.forward.await;
        } else {
            // Abandoned sequences still hold report senders; don't wait for them.
            t.forward.abort();
        }
        let summary = super::stop::summary(&self.stats, abandoned);
        if abandoned == 0 {
            // Every handle is gone: wait for the writer to finish.
            t.guard.finish();
        }
        drop(t.metrics);
        summary
    }
}

/// `[ha]`: how far back a takeover looks for conversations earlier leaders watched for
/// their intent (a bot phase lasts minutes; one still without an intent after this is
/// left to the recovery listing).
const WATCHED_REMEMBERED: Duration = Duration::from_secs(3600);

/// The part of the stop bound kept for the streams, the journal and the feed after the
/// drain: a quarter, at most 3 s.
pub(super) fn teardown_reserve(stop: Duration) -> Duration {
    (stop / 4).min(Duration::from_secs(3))
}

async fn tick_opt(i: &mut Option<Interval>) {
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

/// The next role, when it changes; never without a lease loop (or once it ended).
async fn changed_opt(
    rx: &mut Option<tokio::sync::watch::Receiver<crate::ha::leader::Role>>,
) -> Option<crate::ha::leader::Role> {
    match rx {
        Some(r) => match r.changed().await {
            Ok(()) => Some(*r.borrow_and_update()),
            Err(_) => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
