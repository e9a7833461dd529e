//! The event loop's work: the only writer of the state map.
//!
//! Every source turns what it learns into the same [`ConversationEvent`]: queue and user
//! frames, per-conversation detail frames, REST reads (catch-up, verify, the closer's
//! read) and intake calls. Flow-metrics records and intake calls without an intent only
//! make a conversation known and watched. Nothing here awaits: reads and closes run in
//! their own tasks and come back as events.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::closer::{Closer, Decision, Resume, Waiters, decision_record};
use crate::genesys::api::ApiClient;
use crate::genesys::budget::Priority;
use crate::genesys::frames::{ConversationEvent, FlowMetric, Source};
use crate::genesys::subscriptions::Subscriptions;
use crate::journal::Unfinished;

use super::health::Health;
use super::read::{Unread, read_checked};
use crate::intake::{IntakeAnswer, IntakeCall};
use crate::rules::Rules;
use crate::state::Store;
use crate::telemetry::Stats;

/// Closed conversations stay this long so late duplicates find them closed and decided.
pub(crate) const CLOSED_GRACE: Duration = Duration::from_secs(600);
/// Open conversations with no event for this long are dropped (their end was missed).
pub(crate) const IDLE_MAX: Duration = Duration::from_secs(48 * 3600);
/// Most conversations one gap's resync reads; beyond it the gap is logged as capped.
pub(crate) const RESYNC_CAP: usize = 100;
/// Resync reads in flight at once, so a resync does not crowd out closes.
const RESYNC_CONCURRENCY: usize = 2;

/// The event loop's state and collaborators.
pub(crate) struct EventLoop {
    /// The conversation map; written only here.
    pub store: Arc<Store>,
    /// Compiled rules.
    pub rules: Rules,
    /// Close sequences waiting for a closing event.
    pub waiters: Arc<Waiters>,
    /// Starts close sequences.
    pub closer: Closer,
    /// Counters.
    pub stats: Arc<Stats>,
    /// Per-conversation subscriptions (bot phase).
    pub subs: Subscriptions,
    /// For catch-up and verify reads.
    pub api: Arc<ApiClient>,
    /// Attribute names rules read.
    pub wanted: Arc<crate::genesys::frames::Wanted>,
    /// Where reads come back, to be applied like events.
    pub reads: mpsc::Sender<ConversationEvent>,
    /// A watched conversation live later than this after first heard of gets a read.
    pub catchup_after: Duration,
    /// `[intake] verify`: an intake intent is only acted on once Genesys shows it.
    pub verify: bool,
    /// Shutting down: no new decisions.
    pub draining: bool,
    /// Asks the rules (always, unless `[ha]` and this instance stands by).
    pub acting: bool,
    /// Watched conversations whose topics are not live yet, with what decides whether
    /// they are read once the topics are (those not here: when we first heard of them).
    pub owed_catchup: HashMap<Box<str>, Catchup>,
    /// Conversations with a verify read in flight.
    pub verifying: HashSet<Box<str>>,
    /// Conversations with a resync read queued or in flight.
    pub resyncing: HashSet<Box<str>>,
    /// Which streams are up, for deciding what a gap missed.
    pub health: Health,
    /// Lists what is in the watched queues and flows after a blind window.
    pub recovery: super::recovery::Recovery,
    /// Where reads that gave nothing and failed closes come back ([`Notice`]).
    pub notices: mpsc::UnboundedSender<Notice>,
}

/// What comes back to the event loop when a read or a close ends without an event, so
/// that nothing stays marked as in flight and topics nothing will use are given back
/// at once rather than at the 48 h eviction.
#[derive(Debug)]
pub(crate) enum Notice {
    /// A catch-up, verify or resync read gave nothing. `not_found`: Genesys answered
    /// 404 twice, it does not know the conversation.
    ReadFailed {
        /// The conversation.
        id: Box<str>,
        /// Genesys does not know it.
        not_found: bool,
    },
    /// A close sequence ended failed (a disconnect refused for good, a 404 say, or a
    /// conversation still open after the teardown): no sequence waits for its events.
    CloseFailed(Box<str>),
}

/// What decides whether a watched conversation is read once its topics are live: an
/// intent set before then was pushed to nobody.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Catchup {
    /// Heard of too late to know how late (a flow record after the flow ended, an
    /// id-only intake call that did not say when the conversation started): read.
    Owed(&'static str),
    /// An id-only intake call said when the conversation started: read unless its
    /// topics went live within `catchup_after` of that start (the same bound as for
    /// conversations heard of at their start).
    StartedAt(Instant),
}

impl EventLoop {
    /// Applies one event and acts on what changed. The map guard is released inside
    /// `Store::apply`, before waiters are notified or a close starts.
    /// Returns whether a rule decided on it now.
    pub fn on_event(&mut self, ev: &ConversationEvent, received: Instant) -> bool {
        // A standby keeps its map warm; only the acting instance asks the rules.
        let applied = if self.acting {
            crate::decide::step(&self.store, &self.rules, ev, received)
        } else {
            crate::decide::apply_only(&self.store, ev, received)
        };
        let decision = applied.decision.map(|m| Decision {
            conversation_id: ev.conversation_id.clone(),
            verdict: m.verdict,
            queue_id: m.queue_id,
            customer_id: m.customer_id,
            already_closed: m.already_closed,
            decided_at: received,
            source: ev.source,
            watch: !m.seen_on_topic,
            resume: None,
            event_correlation_id: ev.correlation_id.clone(),
        });
        if matches!(ev.source, Source::Read | Source::Recovery) {
            self.verifying.remove(&ev.conversation_id);
            self.resyncing.remove(&ev.conversation_id);
        }
        if applied.late {
            self.stats.late_events.inc();
            tracing::debug!(
                conversation_id = &*ev.conversation_id,
                source = ev.source.as_str(),
                "event for a conversation closed and evicted earlier: ignored"
            );
            return false;
        }
        // A queue or user topic carries it now (the bot transferred it): its detail
        // topics are no longer needed, the topic shows its intent and its end.
        if applied.watched
            && matches!(ev.source, Source::Queue | Source::User | Source::Recovery)
            && self.store.set_watched(&ev.conversation_id, false)
        {
            self.subs.unwatch(&ev.conversation_id);
            self.owed_catchup.remove(&ev.conversation_id);
        }
        if applied.closed_now {
            self.stats.closed_seen.inc();
            self.waiters.notify(&ev.conversation_id, received);
            // Confirmed: its per-conversation topics go in the next removal batch.
            if self.store.set_watched(&ev.conversation_id, false) {
                self.subs.unwatch(&ev.conversation_id);
            }
            self.owed_catchup.remove(&ev.conversation_id);
        }
        match decision {
            Some(d) => {
                self.act_on(d);
                true
            }
            None => false,
        }
    }

    /// A rule decided: the close starts (or, while stopping, is journalled as deferred).
    fn act_on(&mut self, d: Decision) {
        self.stats.decided(&d.verdict.rule.name, d.source.as_str());
        tracing::info!(
            conversation_id = &*d.conversation_id,
            rule = &*d.verdict.rule.name,
            intent = &*d.verdict.intent,
            queue_id = d.queue_id.as_deref(),
            source = d.source.as_str(),
            // The event's id: the same field as on the outcome line (`correlation_id`
            // is kept for a failed call's).
            event_correlation_id = d.event_correlation_id.as_deref(),
            "rule matched"
        );
        if self.draining && !d.already_closed {
            // Shutting down: no new close starts now, but the match is not lost.
            tracing::warn!(
                conversation_id = &*d.conversation_id,
                rule = &*d.verdict.rule.name,
                "match while shutting down: journalled as deferred; the next start closes it"
            );
            self.closer.journal.decision(decision_record(&d, true));
            return;
        }
        if d.watch && !d.already_closed && self.subs.enabled() {
            // The closer subscribes its confirming topic before the disconnect;
            // remember it so the topics are removed once it closes.
            self.store.set_watched(&d.conversation_id, true);
        }
        self.closer.start(d);
    }

    /// This instance now holds the lease (`[ha]`): it acts from now on, and the rules
    /// are asked about every conversation the map kept warm while it stood by (each
    /// once; what the journal says an earlier leader decided is marked decided first).
    /// Returns how many decided now.
    pub fn take_over(&mut self) -> usize {
        self.acting = true;
        let now = Instant::now();
        let decided = crate::decide::undecided(&self.store, &self.rules);
        let n = decided.len();
        for (id, m) in decided {
            self.act_on(Decision {
                conversation_id: id,
                verdict: m.verdict,
                queue_id: m.queue_id,
                customer_id: m.customer_id,
                already_closed: m.already_closed,
                decided_at: now,
                source: Source::Recovery,
                watch: !m.seen_on_topic,
                resume: None,
                event_correlation_id: None,
            });
        }
        n
    }

    /// Marks the closes a past run left unfinished as decided (before their sequences
    /// resume, which waits for the channels): no event or intake call may start a second
    /// close of one of them meanwhile.
    pub fn hold(&mut self, unfinished: &[Unfinished]) {
        let now = Instant::now();
        for u in unfinished {
            self.store.mark_decided(&u.decision.conversation_id, now);
        }
    }

    /// Carries on the closes a past run left unfinished (from the journal): each is
    /// marked decided, its per-conversation topics are added again (bot phase), and its
    /// sequence resumes from the step it reached, starting with one read.
    pub fn resume(&mut self, unfinished: Vec<Unfinished>) {
        let now = Instant::now();
        let wall = crate::journal::now_ms();
        for u in unfinished {
            let d = u.decision;
            let Some(rule) = self.rules.rule(&d.rule) else {
                tracing::error!(conversation_id = %d.conversation_id, rule = %d.rule,
                    "unfinished close of a rule no longer in the config: not resumed; \
                     close it by hand if it is still open");
                self.closer
                    .journal
                    .note(&d.conversation_id, &crate::step::Step::Abandoned);
                continue;
            };
            let id: Box<str> = d.conversation_id.as_str().into();
            self.store.mark_decided(&id, now);
            if d.watch && self.subs.enabled() && self.store.set_watched(&id, true) {
                self.subs.watch(&id);
            }
            let age = Duration::from_millis((wall - d.decided_ms).max(0) as u64);
            tracing::info!(conversation_id = &*id, rule = %d.rule, deferred = d.deferred,
                age_ms = age.as_millis() as u64, steps = u.steps.len(),
                "unfinished close found in the journal; resuming");
            let source = journalled_source(&d.conversation_id, &d.source);
            self.stats.decided(&rule.name, source.as_str());
            self.closer.start(Decision {
                conversation_id: id,
                verdict: crate::rules::Verdict {
                    rule,
                    intent: d.intent.as_str().into(),
                },
                queue_id: d.queue_id.map(Into::into),
                customer_id: d.customer_id.map(Into::into),
                already_closed: false,
                decided_at: now.checked_sub(age).unwrap_or(now),
                source,
                watch: d.watch,
                resume: Some(Resume::from_journal(&d.conversation_id, u.steps)),
                event_correlation_id: None,
            });
        }
    }

    /// A flow-metrics record named a conversation: watch it if it is new to us.
    /// Returns whether it was new to us.
    pub fn on_discovered(&mut self, m: &FlowMetric, received: Instant) -> bool {
        let Some(ev) = crate::decide::discovered(&self.store, m) else {
            return false;
        };
        self.stats.discovered.inc();
        // `nFlow` is counted when the flow starts; any other metric comes later, so the
        // intent may already be set: read once when the topics are live.
        let late = m.metric.as_deref() != Some("nFlow");
        tracing::debug!(
            conversation_id = &*m.conversation_id,
            flow_id = m.flow_id.as_deref(),
            metric = m.metric.as_deref(),
            late,
            "conversation discovered in a watched flow"
        );
        self.on_event(&ev, received);
        if self.watch(&m.conversation_id) && late {
            self.owed_catchup.insert(
                m.conversation_id.clone(),
                Catchup::Owed("catch-up: the flow record came after the flow ended"),
            );
        }
        true
    }

    /// Starts watching a conversation's detail topics (batched) unless it already is;
    /// returns whether this call started it.
    fn watch(&mut self, id: &str) -> bool {
        let started = self.subs.enabled()
            && self.store.with(id, |c| c.is_closed()) == Some(false)
            && self.store.set_watched(id, true);
        if started {
            self.subs.watch(id);
        }
        started
    }

    /// These conversations' topics just went live: read the ones whose intent may have
    /// been set before we could see it (counted in `catchup_reads`).
    pub fn on_watching(&mut self, ids: &[Box<str>], at: Instant) {
        for id in ids {
            let catchup = self.owed_catchup.remove(id);
            let after = self.catchup_after;
            let why = self.store.with(id, |c| {
                if c.is_decided() || c.is_closed() {
                    return None;
                }
                match catchup {
                    Some(Catchup::Owed(why)) => Some(why),
                    Some(Catchup::StartedAt(t)) => (at.saturating_duration_since(t) > after)
                        .then_some("catch-up: topics went live longer than catchup_after after the conversation started"),
                    None => (at.saturating_duration_since(c.first_seen()) > after)
                        .then_some("catch-up: topics went live longer than catchup_after after it was first heard of"),
                }
            });
            if let Some(Some(why)) = why {
                self.read(id, why);
            }
        }
    }

    /// Reads the conversation once, in the background; the answer comes back as an
    /// event, or as a [`Notice`] when there is none.
    fn read(&self, id: &str, why: &'static str) {
        self.stats.catchup_reads.inc();
        tracing::debug!(conversation_id = id, why, "reading the conversation");
        let api = Arc::clone(&self.api);
        let wanted = self.wanted.get();
        let reads = self.reads.clone();
        let notices = self.notices.clone();
        let id: Box<str> = id.into();
        tokio::spawn(async move {
            match read_checked(Priority::Read, &api, &id, &wanted, why).await {
                Ok(ev) => {
                    let _ = reads.send(ev).await;
                }
                Err(unread) => {
                    let not_found = unread == Unread::NotFound;
                    let _ = notices.send(Notice::ReadFailed { id, not_found });
                }
            }
        });
    }

    /// A read or a close ended without an event: the conversation is no longer in
    /// flight, and one Genesys does not know, or whose close failed, gives its
    /// per-conversation topics back in the next removal batch (nothing will come on
    /// them that anything waits for).
    pub fn on_notice(&mut self, notice: Notice) {
        match notice {
            Notice::ReadFailed { id, not_found } => {
                // Free to be read again by the next call or gap.
                self.verifying.remove(&id);
                self.resyncing.remove(&id);
                if not_found {
                    self.release(&id, "Genesys does not know the conversation (404)");
                }
            }
            Notice::CloseFailed(id) => self.release(&id, "its close failed"),
        }
    }

    /// Gives back the per-conversation topics of a conversation nothing needs them for.
    fn release(&mut self, id: &str, why: &'static str) {
        self.owed_catchup.remove(id);
        if self.store.set_watched(id, false) {
            self.subs.unwatch(id);
            tracing::info!(
                conversation_id = id,
                why,
                "per-conversation topics given back (next removal batch)"
            );
        }
    }

    /// An intake call: decide, watch, or verify, and answer at once.
    pub fn on_intake(&mut self, call: IntakeCall) {
        self.stats.intake_calls.inc();
        let answer = self.intake_answer(&call);
        tracing::info!(
            conversation_id = &*call.conversation_id,
            intent = ?call.intent.as_deref(),
            attributes = call.attributes.len(),
            result = answer.as_str(),
            "intake call"
        );
        if !matches!(answer, IntakeAnswer::ShuttingDown | IntakeAnswer::Standby) {
            self.closer.journal.intake(
                &call.conversation_id,
                call.intent.as_deref(),
                answer.as_str(),
            );
        }
        let _ = call.reply.send(answer);
    }

    /// The answer to an intake call, acting on it: already seen, shutting down, being
    /// verified, closed by a rule, no rule, or watched for its intent.
    fn intake_answer(&mut self, call: &IntakeCall) -> IntakeAnswer {
        let id = &call.conversation_id;
        if let Some(answer) = self.seen_answer(id) {
            return answer;
        }
        if self.draining {
            return IntakeAnswer::ShuttingDown;
        }
        if !self.acting {
            return IntakeAnswer::Standby;
        }
        let wanted_now = self.wanted.get();
        let attributes: Vec<(Box<str>, Box<str>)> = call
            .attributes
            .iter()
            .filter(|(k, _)| wanted_now.iter().any(|w| **w == **k))
            .cloned()
            .collect();
        let has_intent = call.intent.is_some() || !attributes.is_empty();
        if self.verify && has_intent {
            // The caller's word is not enough: Genesys's own attribute decides.
            self.on_event(
                &ConversationEvent::empty(id.clone(), Source::Intake),
                call.received,
            );
            self.watch(id);
            if self.verifying.insert(id.clone()) {
                self.read(
                    id,
                    "verify: the intake's intent must be in Genesys's attribute",
                );
            }
            return IntakeAnswer::Verifying;
        }
        let mut ev = ConversationEvent::empty(id.clone(), Source::Intake);
        ev.intent.clone_from(&call.intent);
        ev.attributes = attributes;
        if self.on_event(&ev, call.received) {
            return IntakeAnswer::Close;
        }
        if has_intent {
            return IntakeAnswer::NoRule;
        }
        self.watch_id_only(call)
    }

    /// The answer to a call about a conversation already decided on or closed (in the
    /// map, or remembered by its tombstone); `None` for any other.
    fn seen_answer(&self, id: &str) -> Option<IntakeAnswer> {
        let seen = self
            .store
            .with(id, |c| (c.is_decided(), c.is_closed()))
            .or_else(|| {
                self.store
                    .tombstone(id)
                    .map(|t| (t == crate::state::Tombstone::Decided, true))
            });
        match seen {
            Some((true, _)) => Some(IntakeAnswer::Duplicate),
            Some((false, true)) => Some(IntakeAnswer::AlreadyClosed),
            _ => None,
        }
    }

    /// An id-only call no rule decided on: its conversation is watched for its intent
    /// (with a catch-up read owed once its topics are live), when per-conversation
    /// topics can be used.
    fn watch_id_only(&mut self, call: &IntakeCall) -> IntakeAnswer {
        let id = &call.conversation_id;
        if !self.subs.enabled() {
            tracing::warn!(
                conversation_id = &**id,
                reason = self.subs.disabled_reason(),
                "intake call without an intent, but per-conversation topics cannot be used: \
                 the conversation cannot be watched"
            );
            return IntakeAnswer::NoRule;
        }
        if self.watch(id) {
            // An id-only call may come seconds after the start (a Process Automation
            // trigger on `.customer.start`), when the bot may have set its intent
            // already: with nobody subscribed, that `.attributes` event went to nobody.
            // Without the start time the daemon cannot know how late it heard, so it
            // reads once the topics are live; with it, only if they went live later
            // than `catchup_after` after the start.
            let catchup = call
                .started_ago
                .and_then(|ago| call.received.checked_sub(ago))
                .map_or(
                    Catchup::Owed(
                        "catch-up: an id-only call that did not say when the conversation started",
                    ),
                    Catchup::StartedAt,
                );
            self.owed_catchup.insert(id.clone(), catchup);
        }
        IntakeAnswer::Watching
    }

    /// A stream missed events for `gap`: read back what it may have missed, in order of
    /// urgency, at most [`RESYNC_CAP`] conversations per gap.
    ///
    /// What a stream missed depends on what it carries. Configured topics (queues,
    /// users, flow metrics) missed nothing if the stream's mirror was up for the whole
    /// gap; otherwise every tracked conversation may have changed, and conversations that
    /// started in the gap are listed from the watched queues and flows (the recovery of a
    /// blind window, [`super::recovery`]). A gap of topics the server dropped without a
    /// word (`silent`) is never taken as covered: a server that drops one channel's
    /// topics silently may have dropped its twin's too, and nothing says otherwise until
    /// the twin's own check. Per-conversation
    /// topics are held once, so a primary stream's gap always reads the watched
    /// conversations. Order: closes in flight (their confirmation may have been pushed
    /// in the gap), then open conversations no rule has decided on (their intent may
    /// have been), then the other open ones (their end may have been), each group most
    /// recently active first.
    pub fn on_gap(&mut self, stream: usize, gap: Duration, reason: &'static str, silent: bool) {
        let now = Instant::now();
        let since = now.checked_sub(gap).unwrap_or(now);
        let configured = self.health.carries_configured(stream);
        let covered_by = if configured && !silent {
            self.health.covered_by(stream, since)
        } else {
            None
        };
        let configured_missed = configured && covered_by.is_none();
        let watched_missed = !Health::is_mirror(stream) && self.subs.enabled();
        let (wanted, capped) = self.resync_list(configured_missed, watched_missed);
        let recover = configured_missed;
        log_gap(
            stream,
            reason,
            gap,
            covered_by,
            wanted.len(),
            recover,
            capped,
        );
        if recover {
            self.recovery.trigger(reason, Some(gap));
        }
        self.resync(wanted);
    }

    /// What a gap's resync reads: the closes in flight, then the open conversations by
    /// urgency (only the watched ones when the configured topics missed nothing), none
    /// twice nor already being read, at most [`RESYNC_CAP`]; and whether the cap left
    /// some out.
    fn resync_list(&self, configured_missed: bool, watched_missed: bool) -> (Vec<Box<str>>, bool) {
        let watched_only = !configured_missed;
        let mut wanted: Vec<Box<str>> = Vec::new();
        if configured_missed || watched_missed {
            wanted = self.waiters.ids();
            if watched_only {
                wanted.retain(|id| self.store.with(id, |c| c.is_watched()) == Some(true));
            }
            wanted.extend(self.store.open_by_priority(RESYNC_CAP + 1, watched_only));
        }
        let mut seen = HashSet::new();
        wanted.retain(|id| seen.insert(id.clone()) && !self.resyncing.contains(id));
        let capped = wanted.len() > RESYNC_CAP;
        wanted.truncate(RESYNC_CAP);
        (wanted, capped)
    }

    /// Reads `wanted` in a task of its own, [`RESYNC_CONCURRENCY`] at once: each read
    /// comes back as an event, each failure as a [`Notice`].
    fn resync(&mut self, wanted: Vec<Box<str>>) {
        if wanted.is_empty() {
            return;
        }
        for id in &wanted {
            self.resyncing.insert(id.clone());
        }
        self.stats.resync_reads.add(wanted.len() as u64);
        let api = Arc::clone(&self.api);
        let wanted_attrs = self.wanted.get();
        let reads = self.reads.clone();
        let notices = self.notices.clone();
        tokio::spawn(async move {
            use futures_util::StreamExt as _;
            futures_util::stream::iter(wanted)
                .for_each_concurrent(RESYNC_CONCURRENCY, |id| {
                    let api = Arc::clone(&api);
                    let wanted_attrs = Arc::clone(&wanted_attrs);
                    let reads = reads.clone();
                    let notices = notices.clone();
                    async move {
                        match read_checked(Priority::Read, &api, &id, &wanted_attrs, "resync").await
                        {
                            Ok(ev) => {
                                let _ = reads.send(ev).await;
                            }
                            Err(unread) => {
                                let not_found = unread == Unread::NotFound;
                                let _ = notices.send(Notice::ReadFailed { id, not_found });
                            }
                        }
                    }
                })
                .await;
        });
    }

    /// The recovery worker listed a blind window's conversations: the new flow ones are
    /// discovered (watched, read once live); the queue ones this map does not know (nor
    /// remembers as closed) are to be read, at most `max_reads`.
    pub fn on_recovery(&mut self, ask: super::recovery::Ask, max_reads: usize) {
        use super::recovery::{Ask, Plan};
        match ask {
            Ask::Listed {
                queues,
                flows,
                reply,
            } => {
                let mut plan = Plan::default();
                let now = Instant::now();
                for m in &flows {
                    if self.on_discovered(m, now) {
                        plan.flow_new += 1;
                    }
                }
                for l in queues {
                    let id = l.conversation_id;
                    let known = self.store.with(&id, |_| ()).is_some()
                        || self.store.tombstone(&id).is_some()
                        || self.resyncing.contains(&id);
                    if known {
                        continue;
                    }
                    if plan.read.len() >= max_reads {
                        plan.left += 1;
                        continue;
                    }
                    self.resyncing.insert(id.clone());
                    plan.read.push(id);
                }
                let _ = reply.send(plan);
            }
            Ask::Read { event, reply } => {
                let decided = self.on_event(&event, Instant::now());
                let _ = reply.send(decided);
            }
            Ask::Failed(id) => {
                self.resyncing.remove(&id);
            }
        }
    }

    /// Forgets old conversations; watched ones lose their topics.
    pub fn evict(&mut self) {
        let (watched, gone) = self.store.evict(Instant::now(), CLOSED_GRACE, IDLE_MAX);
        for id in &watched {
            self.subs.unwatch(id);
            self.owed_catchup.remove(id);
        }
        if gone > 0 {
            tracing::debug!(
                evicted = gone,
                tracked = self.store.len(),
                "evicted conversations"
            );
        }
    }
}

/// One line per gap: what happened, how long, and what is done about it (`reads`
/// conversations read back, `recover` a listing of the watched queues and flows).
fn log_gap(
    stream: usize,
    reason: &'static str,
    gap: Duration,
    covered_by: Option<usize>,
    reads: usize,
    recover: bool,
    capped: bool,
) {
    if capped {
        tracing::warn!(
            stream = %crate::genesys::StreamName(stream),
            reason,
            gap_ms = gap.as_millis() as u64,
            covered_by_stream = covered_by.map(|c| tracing::field::display(crate::genesys::StreamName(c))),
            reads,
            recover_listing = recover,
            cap = RESYNC_CAP,
            "stream gap: events pushed meanwhile are lost; resyncing by REST reads, capped \
             (the least recently active open conversations are not read)"
        );
    } else if recover || reads > 0 {
        tracing::warn!(
            stream = %crate::genesys::StreamName(stream),
            reason,
            gap_ms = gap.as_millis() as u64,
            covered_by_stream = covered_by.map(|c| tracing::field::display(crate::genesys::StreamName(c))),
            reads,
            recover_listing = recover,
            "stream gap: events pushed meanwhile are lost; resyncing by REST reads"
        );
    } else {
        tracing::info!(
            stream = %crate::genesys::StreamName(stream),
            reason,
            gap_ms = gap.as_millis() as u64,
            covered_by_stream = covered_by.map(|c| tracing::field::display(crate::genesys::StreamName(c))),
            "stream gap covered by the mirror: nothing missed, nothing to read"
        );
    }
}

/// Whether an unknown journalled source was said at warn already (once per process).
static UNKNOWN_SOURCE_SAID: std::sync::Once = std::sync::Once::new();

/// The source of a decision a past run journalled. A name this version does not know
/// (a newer version's source, a damaged row) is said once per process at warn, with
/// the text (later ones at debug), and the close resumes labelled `read`. That is safe:
/// a resumed decision's source only labels its report, metrics and log line (the close
/// does not depend on it, and a resumed decision never reaches the state map), and a
/// resumed close starts with a REST read, so `read` is what this run knows of it.
/// [`Source`] names where events come from and has no "unknown" the map could be
/// handed.
fn journalled_source(conversation_id: &str, name: &str) -> Source {
    let e = match name.parse::<Source>() {
        Ok(source) => return source,
        Err(e) => e,
    };
    let mut said = false;
    UNKNOWN_SOURCE_SAID.call_once(|| {
        said = true;
        tracing::warn!(conversation_id, source = name, error = %e,
            "journal: a decision's source this version does not know; its resumed close is \
             labelled `read` (said once; later ones at debug)");
    });
    if !said {
        tracing::debug!(conversation_id, source = name, error = %e,
            "journal: a decision's source this version does not know; labelled `read`");
    }
    Source::Read
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_journalled_source_reads_and_an_unknown_one_is_labelled_read() {
        for s in Source::ALL {
            assert_eq!(journalled_source("c1", s.as_str()), s);
        }
        assert_eq!(journalled_source("c1", "quue"), Source::Read);
        assert_eq!(journalled_source("c1", "webhook"), Source::Read);
    }
}
