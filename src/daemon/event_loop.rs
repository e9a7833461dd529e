//! The event loop's work: the only writer of the state map.
//!
//! Every source turns what it learns into the same [`ConversationEvent`]: queue and user
//! frames, per-conversation detail frames, REST reads (catch-up, verify, the closer's
//! read) and intake calls. Flow-metrics records and intake calls without an intent only
//! make a conversation known and watched. Nothing here awaits: reads and closes run in
//! their own tasks and come back as events.
//!
//! Here: events, decisions, takeovers, resumes, discovery, watching, notices, recovery
//! and eviction; `intake` answers intake calls, `gaps` reads back what a stream gap
//! may have missed.

mod gaps;
mod intake;

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
    /// `[ha]`: where a standby relays intake calls to the acting instance (through the
    /// group's database, `crate::ha::relay`).
    pub relay: Option<mpsc::Sender<IntakeCall>>,
    /// `[ha]`: what an earlier leader stored of a close whose decision never reached
    /// the journal, for the decision the call being decided now makes.
    pub orphans: HashMap<Box<str>, crate::closer::Resume>,
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
            resume: self.orphans.remove(&ev.conversation_id),
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
