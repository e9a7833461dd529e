//! Applying one event to a conversation: the merge rules. Every source updates the same
//! entry; an end is final, the customer's attributes win over other participants', and
//! what closes a conversation is the rule of the module doc of [`super`].

use std::sync::Mutex;

use tokio::time::Instant;

use super::storage::{Draft, Profiles, participant_key, to_secs};
use super::{CUSTOMER_ENDED, Conversation, FLOW_DISCONNECTED, FULL_VIEW, ON_TOPIC};
use crate::genesys::frames::{ConversationEvent, Source};

impl Conversation {
    /// Applies `ev`: every participant it shows, the profile it changes, and whether the
    /// conversation is now closed (closed is sticky).
    pub(super) fn merge(
        &mut self,
        ev: &ConversationEvent,
        now: Instant,
        profiles: &Mutex<Profiles>,
    ) {
        self.last_event = to_secs(now);
        if ev.full_view {
            self.flags |= FULL_VIEW;
        }
        if matches!(ev.source, Source::Queue | Source::User | Source::Recovery) {
            self.flags |= ON_TOPIC;
        }
        if ev.flow_disconnected {
            self.flags |= FLOW_DISCONNECTED;
        }
        // Taken, not cloned: no reference count to touch when nothing changes.
        let current = self.profile.take();
        let mut draft = Draft::of(current.as_deref());
        for p in &ev.participants {
            let is_customer = p.purpose.as_bytes() == b"customer";
            // An end is final: an older frame showing it connected changes nothing.
            self.participants
                .merge(participant_key(p.id.as_bytes()), p.ended);
            if is_customer {
                if self.customer_id.is_none() {
                    self.customer_id = Some(p.id.clone());
                }
                if p.ended && ev.source == Source::Detail {
                    self.flags |= CUSTOMER_ENDED;
                }
                if p.message_type.is_some() {
                    draft.message_type = p.message_type.as_deref();
                }
            } else if draft.message_type.is_none() {
                draft.message_type = p.message_type.as_deref();
            }
            if p.queue_id.is_some() {
                draft.queue_id = p.queue_id.as_deref();
            }
            for (k, v) in &p.attributes {
                draft.set_attribute(k, v, is_customer);
            }
        }
        for (k, v) in &ev.attributes {
            draft.set_attribute(k, v, true);
        }
        if ev.intent.is_some() {
            draft.intake_intent = ev.intent.as_deref();
        }
        let changed = (!draft.unchanged()).then(|| {
            profiles
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .intern(&draft)
        });
        self.profile = match changed {
            Some(p) => p,
            None => current,
        };
        if self.closed_at == 0 && self.ended() {
            self.closed_at = to_secs(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::time::Instant;

    use crate::genesys::frames::{ConversationEvent, ParticipantUpdate, Source};
    use crate::state::Store;
    use crate::state::tests::{ev, p};

    #[test]
    fn closes_when_every_participant_ended_and_never_reopens() {
        let s = Store::new();
        let t = Instant::now();
        let open = ev(vec![p("a", "customer", false), p("b", "acd", false)]);
        assert!(!s.apply(&open, t, |_| None::<()>).closed_now);
        let closed = ev(vec![p("a", "customer", true), p("b", "acd", true)]);
        assert!(s.apply(&closed, t, |_| None::<()>).closed_now);
        // A duplicate close and an older, still-connected frame change nothing.
        assert!(!s.apply(&closed, t, |_| None::<()>).closed_now);
        assert!(!s.apply(&open, t, |_| None::<()>).closed_now);
        assert!(s.is_closed("c1"));
    }

    #[test]
    fn a_participant_end_is_sticky_across_out_of_order_frames() {
        let s = Store::new();
        let t = Instant::now();
        s.apply(
            &ev(vec![p("a", "customer", true), p("b", "acd", false)]),
            t,
            |_| None::<()>,
        );
        // An older frame arriving late, where `a` was still connected.
        s.apply(
            &ev(vec![p("a", "customer", false), p("b", "acd", false)]),
            t,
            |_| None::<()>,
        );
        assert!(!s.is_closed("c1"), "b is still connected");
        let applied = s.apply(&ev(vec![p("b", "acd", true)]), t, |_| None::<()>);
        assert!(applied.closed_now, "a stayed ended, b ended now");
    }

    #[test]
    fn customer_attribute_wins_and_queue_is_tracked() {
        let s = Store::new();
        let t = Instant::now();
        let mut acd = p("b", "acd", false);
        acd.queue_id = Some("q1".into());
        acd.attributes = vec![("Bot.Intent".into(), "FromAcd".into())];
        let mut cust = p("a", "customer", false);
        cust.attributes = vec![("Bot.Intent".into(), "Goodbye".into())];
        s.apply(&ev(vec![acd, cust]), t, |_| None::<()>);
        let c = s.get("c1").unwrap();
        assert_eq!(c.attribute("Bot.Intent"), Some("Goodbye"));
        assert_eq!(c.queue_id(), Some("q1"));
        assert_eq!(c.customer_id(), Some("a"));
    }

    fn detail(ps: Vec<ParticipantUpdate>, flow_disconnected: bool) -> ConversationEvent {
        let mut e = ConversationEvent::empty("c1".into(), Source::Detail);
        e.participants = ps;
        e.flow_disconnected = flow_disconnected;
        e
    }

    #[test]
    fn a_bot_phase_conversation_closes_on_customer_end_not_on_a_transfer() {
        let s = Store::new();
        let t = Instant::now();
        // `.flow.end` TRANSFER: the flow participant ended, the conversation goes on.
        let flow_end = detail(vec![p("f", "flow", true)], false);
        assert!(!s.apply(&flow_end, t, |_| None::<()>).closed_now);
        // A read lists a queue participant still connected; the customer ends later.
        let mut read = ConversationEvent::empty("c1".into(), Source::Read);
        read.participants = vec![
            p("a", "customer", false),
            p("f", "workflow", true),
            p("q", "acd", false),
        ];
        assert!(!s.apply(&read, t, |_| None::<()>).closed_now);
        let end = detail(vec![p("a", "customer", true)], false);
        assert!(
            s.apply(&end, t, |_| None::<()>).closed_now,
            "no topic shows the acd end"
        );
    }

    #[test]
    fn a_flow_that_disconnects_closes_a_bot_phase_conversation() {
        let s = Store::new();
        let t = Instant::now();
        assert!(
            s.apply(&detail(vec![p("f", "flow", true)], true), t, |_| None::<()>)
                .closed_now
        );
    }

    #[test]
    fn a_full_view_needs_every_participant_ended() {
        let s = Store::new();
        let t = Instant::now();
        s.apply(
            &ev(vec![p("a", "customer", false), p("u", "agent", false)]),
            t,
            |_| None::<()>,
        );
        // A queue frame with the customer ended but the agent on: still open.
        let half = ev(vec![p("a", "customer", true), p("u", "agent", false)]);
        assert!(
            !s.apply(&half, t, |_| None::<()>).closed_now,
            "the agent is still on"
        );
        assert!(
            s.apply(&ev(vec![p("u", "agent", true)]), t, |_| None::<()>)
                .closed_now
        );
    }

    #[test]
    fn many_participants_spill_and_all_must_end() {
        let s = Store::new();
        let t = Instant::now();
        let ids: Vec<String> = (0..9).map(|i| format!("p{i}")).collect();
        let all = |ended: bool| ev(ids.iter().map(|id| p(id, "agent", ended)).collect());
        s.apply(&all(false), t, |_| None::<()>);
        // Every one but the last ended.
        let mut most = all(true);
        most.participants.pop();
        assert!(!s.apply(&most, t, |_| None::<()>).closed_now);
        let last = ev(vec![p("p8", "agent", true)]);
        assert!(s.apply(&last, t, |_| None::<()>).closed_now);
    }

    #[test]
    fn state_is_kept_exactly_in_its_compact_form() {
        let s = Store::new();
        let t = Instant::now();
        let id = "3a6f2b9e-7c41-4d8a-b5e2-91f0c7d3a864";
        let mut e = ConversationEvent::empty(id.into(), Source::Queue);
        let mut cust = p("c9d2e6b1-4f83-47a0-8e15-2b7d9f3c0a51", "customer", false);
        cust.attributes = vec![
            ("Bot.Intent".into(), "Goodbye".into()),
            ("Bot.Score".into(), "0.9".into()),
        ];
        let mut acd = p("7b5e3d19-2c86-4fa1-9d47-e0a6b2c8f135", "acd", false);
        acd.queue_id = Some("8f14e45f-ceea-467a-9575-3b9d1c2e4a77".into());
        e.participants = vec![cust, acd];
        s.apply(&e, t, |_| None::<()>);
        let c = s.get(id).expect("tracked");
        assert_eq!(
            c.customer_id(),
            Some("c9d2e6b1-4f83-47a0-8e15-2b7d9f3c0a51")
        );
        assert_eq!(c.queue_id(), Some("8f14e45f-ceea-467a-9575-3b9d1c2e4a77"));
        assert_eq!(c.message_type(), Some("webmessaging"));
        assert_eq!(c.intent("Bot.Intent"), Some("Goodbye"));
        assert_eq!(c.attribute("Bot.Score"), Some("0.9"));
        assert_eq!(c.first_seen(), t, "first seen to the nanosecond");
        assert_eq!(s.open_by_priority(10, false), vec![Box::<str>::from(id)]);
        // The intake's intent, then a detail event overwriting the attribute.
        let mut intake = ConversationEvent::empty(id.into(), Source::Intake);
        intake.intent = Some("Other".into());
        s.apply(&intake, t, |_| None::<()>);
        assert_eq!(s.get(id).unwrap().intent("Missing"), Some("Other"));
        let mut attrs = ConversationEvent::empty(id.into(), Source::Detail);
        attrs.attributes = vec![("Bot.Intent".into(), "Later".into())];
        s.apply(&attrs, t, |_| None::<()>);
        let c = s.get(id).unwrap();
        assert_eq!(c.intent("Bot.Intent"), Some("Later"));
        assert_eq!(c.attribute("Bot.Score"), Some("0.9"));
    }

    #[test]
    fn conversations_alike_share_one_profile_until_none_holds_it() {
        let s = Store::new();
        let t = Instant::now();
        for i in 0..10 {
            let mut e = ConversationEvent::empty(format!("c{i}").into(), Source::Queue);
            let mut cust = p("a", "customer", i >= 5);
            cust.attributes = vec![("Bot.Intent".into(), "Goodbye".into())];
            e.participants = vec![cust];
            s.apply(&e, t, |_| None::<()>);
        }
        let c0 = s.get("c0").unwrap();
        let c9 = s.get("c9").unwrap();
        assert!(Arc::ptr_eq(
            c0.profile.as_ref().unwrap(),
            c9.profile.as_ref().unwrap()
        ));
        drop((c0, c9));
        assert_eq!(s.profiles.lock().unwrap().by_digest.len(), 1);
        // Every one closed and evicted: the profile goes too.
        for i in 0..5 {
            let mut e = ConversationEvent::empty(format!("c{i}").into(), Source::Queue);
            e.participants = vec![p("a", "customer", true)];
            s.apply(&e, t, |_| None::<()>);
        }
        s.evict(
            t + Duration::from_secs(120),
            Duration::from_secs(60),
            Duration::from_secs(3600),
        );
        assert!(s.is_empty());
        assert!(s.profiles.lock().unwrap().by_digest.is_empty());
    }
}
