//! The event loop's intake calls: decide, watch, or verify, and answer at once.

use super::{Catchup, EventLoop, IntakeAnswer, IntakeCall};
use crate::genesys::frames::{ConversationEvent, Source};

impl EventLoop {
    /// An intake call: decide, watch, or verify, and answer at once.
    pub fn on_intake(&mut self, call: IntakeCall) {
        let Some(call) = self.relayed(call) else {
            return;
        };
        // Counted once, where it is decided (in a group, when it comes back stored).
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
            if call.stored {
                // `[ha]`: the relay writes the answer back only once the journal holds
                // the call (and the decision before it): answered after they are
                // stored, its first try finds them.
                let journal = self.closer.journal.clone();
                tokio::spawn(async move {
                    let _ = journal.flush().await;
                    let _ = call.reply.send(answer);
                });
                return;
            }
        }
        let _ = call.reply.send(answer);
    }

    /// `[ha]`: every call this instance's intake reads goes to the relay first, which
    /// stores it in the group's database and answers with the acting instance's answer
    /// (this one's, when it acts: the relay hands it back `stored`). A call is accepted
    /// only once stored: an acting instance cut off from the database could otherwise
    /// answer `close` for a decision no other instance will ever see. A standby's own
    /// map does not know what was decided either: only the acting instance can say
    /// `duplicate`. `Some` gives the call back to be answered here.
    fn relayed(&mut self, call: IntakeCall) -> Option<IntakeCall> {
        if call.stored || self.draining {
            return Some(call);
        }
        // One instance: nothing to relay through.
        let Some(relay) = self.relay.as_ref() else {
            return Some(call);
        };
        match relay.try_send(call) {
            Ok(()) => None,
            Err(
                tokio::sync::mpsc::error::TrySendError::Full(call)
                | tokio::sync::mpsc::error::TrySendError::Closed(call),
            ) => {
                tracing::warn!(
                    conversation_id = &*call.conversation_id,
                    "intake call on a standby: the relay is busy or stopped; answered 503"
                );
                Some(call)
            }
        }
    }

    /// The answer to an intake call, acting on it: already seen, shutting down, being
    /// verified, closed by a rule, no rule, or watched for its intent.
    fn intake_answer(&mut self, call: &IntakeCall) -> IntakeAnswer {
        let id = &call.conversation_id;
        if let Some(answer) = self.seen_answer(id) {
            return answer;
        }
        match &call.earlier_steps {
            Some(steps) if !steps.is_empty() && self.acting => {
                tracing::warn!(
                    conversation_id = &**id,
                    steps = steps.len(),
                    "intake call taken again from an earlier leader, which stored steps of a \
                     close the journal has no decision for: a match resumes that close (read \
                     first, no second farewell)"
                );
                self.orphans
                    .insert(id.clone(), crate::closer::Resume::orphan(id, steps.clone()));
            }
            _ => {}
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
        let decided = self.on_event(&ev, call.received);
        // Used by this decision or by none.
        self.orphans.remove(id);
        if decided {
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

    /// `[ha]` takeover: conversations an earlier leader watched for their intent (an
    /// id-only intake call answered `watching`; their per-conversation topics were that
    /// leader's) are watched here now, each read once its topics are live, since what
    /// was pushed meanwhile went to nobody. Returns how many are watched again.
    pub fn rewatch(&mut self, ids: &[String]) -> usize {
        if !self.subs.enabled() {
            if !ids.is_empty() {
                tracing::warn!(
                    conversations = ids.len(),
                    reason = self.subs.disabled_reason(),
                    "takeover: conversations an earlier leader watched cannot be watched here"
                );
            }
            return 0;
        }
        let now = tokio::time::Instant::now();
        let mut n = 0;
        for id in ids {
            let id: Box<str> = id.as_str().into();
            if self.store.with(&id, |c| c.is_decided() || c.is_closed()) == Some(true) {
                continue;
            }
            // Known to the map from here on, as an intake call makes it known.
            self.on_event(&ConversationEvent::empty(id.clone(), Source::Recovery), now);
            if self.watch(&id) {
                self.owed_catchup.insert(
                    id,
                    Catchup::Owed("takeover: watched by an earlier leader, events went to it"),
                );
                n += 1;
            }
        }
        n
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
}
