//! Live state of every messaging conversation the daemon has heard of.
//!
//! One writer: only the event loop calls [`Store::apply`], [`Store::evict`] and the other
//! `&self` mutators; the closer and telemetry only read. Every source (queue and user
//! topics, per-conversation detail events, flow metrics, the intake endpoint, REST reads)
//! updates the same entry, so a conversation first seen in the bot phase carries its
//! history along when it later reaches a queue: one entry, one decision, whichever
//! source spoke first. Only what rules and confirmation need is kept, not frames.
//!
//! ## What "closed" means
//! A conversation is closed as soon as one of these holds:
//! - a *full view* (a queue or user topic frame, or a REST read, each listing every
//!   participant) has shown it, and every participant ever shown is `disconnected` or
//!   `terminated` (or has an `endTime`);
//! - its `.customer.end` detail event arrived: a messaging conversation is over once its
//!   guest's participant has ended. This is how a conversation still with the bot (or in
//!   a queue the daemon does not watch) shows its end: detail events name one participant
//!   at a time and the daemon does not subscribe the queue or agent ones;
//! - a `.flow.end` said the flow disconnected it (`exitReason` `DISCONNECT`,
//!   `FLOW_DISCONNECT`, ...). A `.flow.end` with `TRANSFER` does not close it: the
//!   conversation moves on to a queue.
//!
//! Each condition only ever turns true (a participant's end is sticky, a full view stays
//! one), and closed is sticky too, so duplicates and reordering can neither reopen a
//! conversation nor make a close run twice.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use dashmap::DashMap;
use tokio::time::Instant;

use crate::genesys::frames::{ConversationEvent, Source};

/// What the map keeps of one conversation.
#[derive(Debug, Clone)]
pub struct Conversation {
    /// Every participant ever seen: id, purpose and whether it has ended.
    participants: Vec<Participant>,
    /// Attributes rules read (`Bot.Intent`...). The customer participant's value wins
    /// over other participants'; detail events and the intake overwrite (latest wins).
    attributes: Vec<(Box<str>, Box<str>)>,
    /// Intent supplied by the intake endpoint, used when the attribute is unknown.
    intake_intent: Option<Box<str>>,
    /// Latest queue the conversation was routed to.
    queue_id: Option<Box<str>>,
    /// Messaging type of the customer (`webmessaging`, `open`...).
    message_type: Option<Box<str>>,
    /// The customer participant, for a customer-only disconnect.
    customer_id: Option<Box<str>>,
    /// A queue or user frame, or a REST read, has listed every participant.
    full_view: bool,
    /// A queue or user topic has carried it, so its end will come there too.
    on_topic: bool,
    /// `.customer.end` arrived.
    customer_ended: bool,
    /// A `.flow.end` said the flow disconnected the conversation.
    flow_disconnected: bool,
    /// When the event that closed it was applied.
    closed_at: Option<Instant>,
    /// A rule has decided on this conversation; it is never decided again.
    decided: bool,
    /// Its per-conversation detail topics are (being) subscribed.
    watched: bool,
    /// When we first heard of it.
    first_seen: Instant,
    /// Last event applied, for evicting conversations that went silent.
    last_event: Instant,
}

#[derive(Debug, Clone)]
struct Participant {
    id: Box<str>,
    ended: bool,
}

impl Conversation {
    fn new(now: Instant) -> Self {
        Conversation {
            participants: Vec::new(),
            attributes: Vec::new(),
            intake_intent: None,
            queue_id: None,
            message_type: None,
            customer_id: None,
            full_view: false,
            on_topic: false,
            customer_ended: false,
            flow_disconnected: false,
            closed_at: None,
            decided: false,
            watched: false,
            first_seen: now,
            last_event: now,
        }
    }

    /// Whether the conversation is closed (see the module doc for the exact meaning).
    pub fn is_closed(&self) -> bool {
        self.closed_at.is_some()
    }

    /// Value of a participant attribute that some rule reads.
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| &**k == name)
            .map(|(_, v)| &**v)
    }

    /// The intent a rule reading `attribute` sees: the attribute as Genesys holds it,
    /// else the intent the intake endpoint supplied.
    pub fn intent(&self, attribute: &str) -> Option<&str> {
        self.attribute(attribute).or(self.intake_intent.as_deref())
    }

    /// Queue the conversation was last routed to.
    pub fn queue_id(&self) -> Option<&str> {
        self.queue_id.as_deref()
    }

    /// Messaging type of the customer participant.
    pub fn message_type(&self) -> Option<&str> {
        self.message_type.as_deref()
    }

    /// The customer participant's id.
    pub fn customer_id(&self) -> Option<&str> {
        self.customer_id.as_deref()
    }

    /// Whether a rule already decided on it.
    pub fn is_decided(&self) -> bool {
        self.decided
    }

    /// Whether a subscribed queue or user topic has carried it; when not, only its
    /// per-conversation detail topics can show its end.
    pub fn seen_on_topic(&self) -> bool {
        self.on_topic
    }

    /// Whether its per-conversation topics are subscribed (or being subscribed).
    pub fn is_watched(&self) -> bool {
        self.watched
    }

    /// When we first heard of it.
    pub fn first_seen(&self) -> Instant {
        self.first_seen
    }

    fn merge(&mut self, ev: &ConversationEvent, now: Instant) {
        self.last_event = now;
        self.full_view |= ev.full_view;
        self.on_topic |= matches!(ev.source, Source::Queue | Source::User);
        self.flow_disconnected |= ev.flow_disconnected;
        for p in &ev.participants {
            let is_customer = &*p.purpose == "customer";
            match self.participants.iter_mut().find(|q| q.id == p.id) {
                // An end is final: an older frame showing it connected changes nothing.
                Some(q) => q.ended |= p.ended,
                None => self.participants.push(Participant {
                    id: p.id.clone(),
                    ended: p.ended,
                }),
            }
            if is_customer {
                self.customer_id.get_or_insert_with(|| p.id.clone());
                self.customer_ended |= p.ended && ev.source == Source::Detail;
                if p.message_type.is_some() {
                    self.message_type.clone_from(&p.message_type);
                }
            } else if self.message_type.is_none() {
                self.message_type.clone_from(&p.message_type);
            }
            if p.queue_id.is_some() {
                self.queue_id.clone_from(&p.queue_id);
            }
            for (k, v) in &p.attributes {
                match self.attributes.iter_mut().find(|(name, _)| name == k) {
                    Some(slot) if is_customer => slot.1 = v.clone(),
                    Some(_) => {}
                    None => self.attributes.push((k.clone(), v.clone())),
                }
            }
        }
        for (k, v) in &ev.attributes {
            match self.attributes.iter_mut().find(|(name, _)| name == k) {
                Some(slot) => slot.1 = v.clone(),
                None => self.attributes.push((k.clone(), v.clone())),
            }
        }
        if ev.intent.is_some() {
            self.intake_intent.clone_from(&ev.intent);
        }
        if self.closed_at.is_none() && self.ended() {
            self.closed_at = Some(now);
        }
    }

    /// The closing rule of the module doc.
    fn ended(&self) -> bool {
        let all_ended = !self.participants.is_empty() && self.participants.iter().all(|p| p.ended);
        (self.full_view && all_ended) || self.customer_ended || self.flow_disconnected
    }
}

/// Most tombstones kept; the oldest go first. At about 40 bytes each, 100,000 cost
/// about 4 MB and cover well over the closed grace period at any realistic rate.
pub const TOMBSTONES: usize = 100_000;

/// Conversations evicted after they closed: a late frame for one of them must not bring
/// it back and start a second decision. Compact keys in a bounded FIFO.
#[derive(Debug, Default)]
struct Tombstones {
    /// Key -> whether a rule had decided on it.
    decided: HashMap<u128, bool>,
    /// Keys in eviction order, to forget the oldest first.
    order: VecDeque<u128>,
}

/// A conversation id as 128 bits: a UUID's own bits, or a hash of any other text.
fn key(id: &str) -> u128 {
    let mut v: u128 = 0;
    let mut digits = 0;
    for c in id.chars().filter(|c| *c != '-') {
        match c.to_digit(16) {
            Some(d) if digits < 32 => {
                v = (v << 4) | u128::from(d);
                digits += 1;
            }
            _ => {
                digits = 0;
                break;
            }
        }
    }
    if digits == 32 {
        return v;
    }
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    id.hash(&mut h);
    (1u128 << 127) | u128::from(h.finish())
}

/// What the map remembers of an evicted conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tombstone {
    /// Closed, and a rule had decided on it.
    Decided,
    /// Closed without a decision.
    Closed,
}

/// What applying one event changed.
#[derive(Debug)]
pub struct Applied<D> {
    /// The event was for a conversation evicted after it closed: ignored.
    pub late: bool,
    /// This event closed the conversation (it was open before).
    pub closed_now: bool,
    /// Its per-conversation topics were watched when the event came.
    pub watched: bool,
    /// The decision the `decide` callback returned, if it was asked and said yes.
    pub decision: Option<D>,
}

/// The conversation map.
#[derive(Debug, Default)]
pub struct Store {
    map: DashMap<Box<str>, Conversation>,
    /// Closed conversations already evicted (event loop only; the lock is uncontended).
    tombstones: Mutex<Tombstones>,
}

impl Store {
    /// An empty map.
    pub fn new() -> Self {
        Store::default()
    }

    /// Applies `ev`, then, if no rule has decided on the conversation yet, asks `decide`;
    /// a `Some` marks the conversation decided so it is never asked again. Event loop only.
    pub fn apply<D>(
        &self,
        ev: &ConversationEvent,
        now: Instant,
        decide: impl FnOnce(&Conversation) -> Option<D>,
    ) -> Applied<D> {
        // One lookup for a known conversation (every frame after its first); the
        // tombstones and the key's allocation only for one not in the map.
        let mut entry = match self.map.get_mut(&*ev.conversation_id) {
            Some(e) => e,
            None => {
                if self.tombstone(&ev.conversation_id).is_some() {
                    return Applied {
                        late: true,
                        closed_now: false,
                        watched: false,
                        decision: None,
                    };
                }
                self.map
                    .entry(ev.conversation_id.clone())
                    .or_insert_with(|| Conversation::new(now))
            }
        };
        let watched = entry.watched;
        let was_closed = entry.is_closed();
        entry.merge(ev, now);
        let closed_now = !was_closed && entry.is_closed();
        let decision = if entry.decided {
            None
        } else {
            let d = decide(&entry);
            entry.decided = d.is_some();
            d
        };
        Applied {
            late: false,
            closed_now,
            watched,
            decision,
        }
    }

    /// Marks a conversation decided (a close resumed from the journal), adding it if
    /// new, so no event or intake call starts a second decision. Event loop only.
    pub fn mark_decided(&self, conversation_id: &str, now: Instant) {
        self.map
            .entry(conversation_id.into())
            .or_insert_with(|| Conversation::new(now))
            .decided = true;
    }

    /// Remembers conversations whose close a past run finished (from the journal) as
    /// decided tombstones: a late frame or a repeated intake call after a restart
    /// starts no second decision.
    pub fn bury_decided<'a>(&self, ids: impl IntoIterator<Item = &'a str>) {
        let mut t = self.tombstones.lock().unwrap_or_else(|e| e.into_inner());
        for id in ids {
            let k = key(id);
            if t.decided.insert(k, true).is_none() {
                t.order.push_back(k);
            }
        }
        while t.order.len() > TOMBSTONES {
            if let Some(old) = t.order.pop_front() {
                t.decided.remove(&old);
            }
        }
    }

    /// What is remembered of an evicted closed conversation, if anything.
    pub fn tombstone(&self, conversation_id: &str) -> Option<Tombstone> {
        let t = self.tombstones.lock().unwrap_or_else(|e| e.into_inner());
        t.decided.get(&key(conversation_id)).map(|d| {
            if *d {
                Tombstone::Decided
            } else {
                Tombstone::Closed
            }
        })
    }

    /// Marks the conversation as watched (or not); returns whether that changed
    /// anything. Unknown conversations are left alone. Event loop only.
    pub fn set_watched(&self, conversation_id: &str, watched: bool) -> bool {
        match self.map.get_mut(conversation_id) {
            Some(mut c) if c.watched != watched => {
                c.watched = watched;
                true
            }
            _ => false,
        }
    }

    /// Whether the conversation is known and closed.
    pub fn is_closed(&self, conversation_id: &str) -> bool {
        self.map.get(conversation_id).is_some_and(|c| c.is_closed())
    }

    /// A copy of one conversation (for tests and diagnostics).
    pub fn get(&self, conversation_id: &str) -> Option<Conversation> {
        self.map.get(conversation_id).map(|c| c.clone())
    }

    /// Reads one conversation under its guard (no await inside `f`).
    pub fn with<R>(&self, conversation_id: &str, f: impl FnOnce(&Conversation) -> R) -> Option<R> {
        self.map.get(conversation_id).map(|c| f(&c))
    }

    /// Open conversations, those no rule has decided on yet first, each group most
    /// recently active first, at most `limit` (the candidates of a resync after a gap);
    /// with `watched_only`, only those with per-conversation topics.
    pub fn open_by_priority(&self, limit: usize, watched_only: bool) -> Vec<Box<str>> {
        let mut v: Vec<(bool, Instant, Box<str>)> = self
            .map
            .iter()
            .filter(|e| !e.is_closed() && (!watched_only || e.is_watched()))
            .map(|e| (e.decided, e.last_event, e.key().clone()))
            .collect();
        v.sort_by_key(|e| (e.0, std::cmp::Reverse(e.1)));
        v.into_iter().take(limit).map(|(_, _, id)| id).collect()
    }

    /// Number of tracked conversations.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether nothing is tracked.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Forgets conversations closed longer than `closed_grace` ago, and open ones silent for
    /// longer than `idle_max` (their end was missed). Returns the ids of evicted
    /// conversations that were still watched (their topics must be removed) and how many
    /// went in all. Event loop only.
    pub fn evict(
        &self,
        now: Instant,
        closed_grace: Duration,
        idle_max: Duration,
    ) -> (Vec<Box<str>>, usize) {
        let before = self.map.len();
        let mut watched = Vec::new();
        let mut buried = Vec::new();
        self.map.retain(|id, c| {
            let keep = match c.closed_at {
                Some(at) => now.saturating_duration_since(at) < closed_grace,
                None => now.saturating_duration_since(c.last_event) < idle_max,
            };
            if !keep && c.watched {
                watched.push(id.clone());
            }
            // Only closed ones: a silent open one may speak again (and is then new to us).
            if !keep && c.closed_at.is_some() {
                buried.push((key(id), c.decided));
            }
            keep
        });
        if !buried.is_empty() {
            let mut t = self.tombstones.lock().unwrap_or_else(|e| e.into_inner());
            for (k, decided) in buried {
                if t.decided.insert(k, decided).is_none() {
                    t.order.push_back(k);
                }
            }
            while t.order.len() > TOMBSTONES {
                if let Some(old) = t.order.pop_front() {
                    t.decided.remove(&old);
                }
            }
        }
        (watched, before - self.map.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::genesys::frames::{ParticipantUpdate, Source};

    fn p(id: &str, purpose: &str, ended: bool) -> ParticipantUpdate {
        ParticipantUpdate {
            id: id.into(),
            purpose: purpose.into(),
            ended,
            queue_id: None,
            message_type: Some("webmessaging".into()),
            attributes: Vec::new(),
        }
    }

    fn ev(ps: Vec<ParticipantUpdate>) -> ConversationEvent {
        let mut e = ConversationEvent::empty("c1".into(), Source::Queue);
        e.participants = ps;
        e
    }

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
    fn decides_at_most_once() {
        let s = Store::new();
        let t = Instant::now();
        let e = ev(vec![p("a", "customer", false)]);
        assert_eq!(s.apply(&e, t, |_| Some(1)).decision, Some(1));
        assert_eq!(s.apply(&e, t, |_| Some(2)).decision, None);
        assert!(s.get("c1").unwrap().is_decided());
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
    fn a_late_frame_after_eviction_starts_nothing() {
        let s = Store::new();
        let t0 = Instant::now();
        let open = ev(vec![p("a", "customer", false)]);
        assert_eq!(s.apply(&open, t0, |_| Some(1)).decision, Some(1));
        s.apply(&ev(vec![p("a", "customer", true)]), t0, |_| Some(2));
        let later = t0 + Duration::from_secs(120);
        s.evict(later, Duration::from_secs(60), Duration::from_secs(3600));
        assert!(s.is_empty());
        assert_eq!(s.tombstone("c1"), Some(Tombstone::Decided));
        // A late, stale frame: ignored, not a new conversation, not a second decision.
        let a = s.apply(&open, later, |_| Some(3));
        assert!(a.late && a.decision.is_none());
        assert!(s.is_empty());
    }

    #[test]
    fn uuid_keys_are_the_uuid_bits_and_others_hash() {
        assert_eq!(
            key("5d2b8c1e-9a47-4f3e-b6d0-7e1c2a9f4b38"),
            0x5d2b8c1e9a474f3eb6d07e1c2a9f4b38
        );
        assert_ne!(key("c1"), key("c2"));
    }

    #[test]
    fn eviction_keeps_recent_and_open() {
        let s = Store::new();
        let t0 = Instant::now();
        s.apply(&ev(vec![p("a", "customer", true)]), t0, |_| None::<()>);
        let later = t0 + Duration::from_secs(120);
        assert_eq!(
            s.evict(later, Duration::from_secs(300), Duration::from_secs(3600))
                .1,
            0
        );
        assert_eq!(
            s.evict(later, Duration::from_secs(60), Duration::from_secs(3600))
                .1,
            1
        );
        assert!(s.is_empty());
    }
}
