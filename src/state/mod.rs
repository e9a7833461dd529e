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
//! [`Conversation`]'s `ended` below is this rule; `merge.rs` applies the events that set
//! its conditions.

//!
//! ## What an entry costs
//! About 136 bytes in the map, with nothing on the heap of its own in the usual shapes
//! (`benches/memory.rs`, bench/RESULTS.md): a canonical UUID id is kept as its 128 bits,
//! participants as 64-bit digests of their ids (four inline), the customer's id inline,
//! times as offsets, and the strings conversations share (queue, messaging type, the
//! attributes rules read, an intake intent) as one reference to an interned profile.
//! Open conversations beyond [`TRACKED_MAX`] are dropped, the longest silent first, and
//! the map gives its memory back after a mass eviction.
//! The compact forms are in `storage.rs`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use dashmap::DashMap;
use tokio::time::Instant;

use crate::genesys::frames::{ConversationEvent, InlineStr};

mod merge;
mod storage;

pub use storage::TOMBSTONES;

use storage::{
    INLINE_PARTICIPANTS, Id, IdHash, Participants, Profile, Profiles, Tombstones, from_nanos,
    from_secs, key, to_nanos, to_secs,
};

/// `Conversation::flags` bits.
const FULL_VIEW: u8 = 1;
const ON_TOPIC: u8 = 2;
const CUSTOMER_ENDED: u8 = 4;
const FLOW_DISCONNECTED: u8 = 8;
const DECIDED: u8 = 16;
const WATCHED: u8 = 32;

/// What the map keeps of one conversation.
#[derive(Debug, Clone)]
pub struct Conversation {
    /// Every participant ever seen, and whether it has ended.
    participants: Participants,
    /// The customer participant, for a customer-only disconnect.
    customer_id: Option<InlineStr>,
    /// Latest queue, messaging type of the customer (`webmessaging`, `open`...), the
    /// attributes rules read (`Bot.Intent`...: the customer participant's value wins over
    /// other participants'; detail events and the intake overwrite, latest wins) and the
    /// intent the intake endpoint supplied, used when the attribute is unknown.
    profile: Option<Arc<Profile>>,
    /// When we first heard of it ([`to_nanos`]).
    first_seen: u64,
    /// Last event applied, for evicting conversations that went silent ([`to_secs`]).
    last_event: u32,
    /// When the event that closed it was applied ([`to_secs`]); 0: open.
    closed_at: u32,
    /// [`FULL_VIEW`]: a queue or user frame, or a REST read, has listed every
    /// participant. [`ON_TOPIC`]: a queue or user topic has carried it, so its end will
    /// come there too. [`CUSTOMER_ENDED`]: `.customer.end` arrived.
    /// [`FLOW_DISCONNECTED`]: a `.flow.end` said the flow disconnected it. [`DECIDED`]:
    /// a rule has decided on it; it is never decided again. [`WATCHED`]: its
    /// per-conversation detail topics are (being) subscribed.
    flags: u8,
}

impl Conversation {
    fn new(now: Instant) -> Self {
        Conversation {
            participants: Participants::Inline(0, [0; INLINE_PARTICIPANTS]),
            customer_id: None,
            profile: None,
            first_seen: to_nanos(now),
            last_event: to_secs(now),
            closed_at: 0,
            flags: 0,
        }
    }

    fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// Whether the conversation is closed (see the module doc for the exact meaning).
    pub fn is_closed(&self) -> bool {
        self.closed_at != 0
    }

    /// Value of a participant attribute that some rule reads.
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.profile
            .as_ref()?
            .attributes
            .iter()
            .find(|(k, _)| &**k == name)
            .map(|(_, v)| &**v)
    }

    /// The intent a rule reading `attribute` sees: the attribute as Genesys holds it,
    /// else the intent the intake endpoint supplied.
    pub fn intent(&self, attribute: &str) -> Option<&str> {
        self.attribute(attribute)
            .or(self.profile.as_ref()?.intake_intent.as_deref())
    }

    /// Queue the conversation was last routed to.
    pub fn queue_id(&self) -> Option<&str> {
        self.profile.as_ref()?.queue_id.as_deref()
    }

    /// Messaging type of the customer participant.
    pub fn message_type(&self) -> Option<&str> {
        self.profile.as_ref()?.message_type.as_deref()
    }

    /// The customer participant's id.
    pub fn customer_id(&self) -> Option<&str> {
        self.customer_id.as_ref().map(InlineStr::as_str)
    }

    /// Whether a rule already decided on it.
    pub fn is_decided(&self) -> bool {
        self.has(DECIDED)
    }

    /// Whether a subscribed queue or user topic has carried it; when not, only its
    /// per-conversation detail topics can show its end.
    pub fn seen_on_topic(&self) -> bool {
        self.has(ON_TOPIC)
    }

    /// Whether its per-conversation topics are subscribed (or being subscribed).
    pub fn is_watched(&self) -> bool {
        self.has(WATCHED)
    }

    /// When we first heard of it.
    pub fn first_seen(&self) -> Instant {
        from_nanos(self.first_seen)
    }

    fn set(&mut self, flag: u8, on: bool) {
        if on {
            self.flags |= flag;
        } else {
            self.flags &= !flag;
        }
    }

    /// The closing rule of the module doc.
    fn ended(&self) -> bool {
        let p = self.participants.as_slice();
        let all_ended = !p.is_empty() && p.iter().all(|k| k & 1 == 1);
        (self.has(FULL_VIEW) && all_ended)
            || self.has(CUSTOMER_ENDED)
            || self.has(FLOW_DISCONNECTED)
    }
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

/// Most conversations tracked. Beyond it, [`Store::evict`] drops the longest silent
/// (down to nine tenths of it), whatever their age, so however many conversations go
/// silent without an end the map stays under about 75 MB (bench/RESULTS.md). While
/// entries come and go, a hash table fills at most 7/16 of its buckets between two
/// rehashes (a removed entry holds its bucket until then): 220,000, and what arrives
/// between two evictions, stays within tables of 2^19 buckets (229,376 at 7/16) with
/// room for uneven shards. Those a rule decided on leave decided tombstones.
pub const TRACKED_MAX: usize = 220_000;

/// The conversation map.
#[derive(Debug)]
pub struct Store {
    map: DashMap<Id, Conversation, IdHash>,
    /// Closed conversations already evicted (event loop only; the lock is uncontended).
    tombstones: Mutex<Tombstones>,
    /// Interned profiles (event loop only; the lock is uncontended).
    profiles: Mutex<Profiles>,
    /// [`TRACKED_MAX`], or less for tests.
    limit: usize,
    /// Most conversations tracked since the map was last shrunk: its tables are that
    /// size (a hash table keeps its buckets when entries go).
    peak: std::sync::atomic::AtomicUsize,
}

impl Default for Store {
    fn default() -> Self {
        Store::with_limit(TRACKED_MAX)
    }
}

impl Store {
    /// An empty map.
    pub fn new() -> Self {
        Store::default()
    }

    /// An empty map that tracks at most `limit` conversations (see [`TRACKED_MAX`]).
    pub fn with_limit(limit: usize) -> Self {
        Store {
            map: DashMap::with_hasher(IdHash::default()),
            tombstones: Mutex::default(),
            profiles: Mutex::default(),
            limit: limit.max(1),
            peak: std::sync::atomic::AtomicUsize::new(0),
        }
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
        // tombstones only for one not in the map.
        let id = Id::new(&ev.conversation_id);
        let mut entry = match self.map.get_mut(&id) {
            Some(e) => e,
            None => {
                if self.tombstone_of(&id).is_some() {
                    return Applied {
                        late: true,
                        closed_now: false,
                        watched: false,
                        decision: None,
                    };
                }
                self.map.entry(id).or_insert_with(|| Conversation::new(now))
            }
        };
        let watched = entry.is_watched();
        let was_closed = entry.is_closed();
        entry.merge(ev, now, &self.profiles);
        let closed_now = !was_closed && entry.is_closed();
        let decision = if entry.is_decided() {
            None
        } else {
            let d = decide(&entry);
            entry.set(DECIDED, d.is_some());
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
            .entry(Id::new(conversation_id))
            .or_insert_with(|| Conversation::new(now))
            .flags |= DECIDED;
    }

    /// Asks `decide` about every open conversation no rule has decided on yet, marking
    /// those it decides (a standby that takes over: events it kept the map warm with
    /// were applied without asking the rules). Event loop only.
    pub fn decide_undecided<D>(
        &self,
        mut decide: impl FnMut(&Conversation) -> Option<D>,
    ) -> Vec<(Box<str>, D)> {
        let mut decided = Vec::new();
        for mut e in self.map.iter_mut() {
            if e.is_decided() || e.is_closed() {
                continue;
            }
            if let Some(d) = decide(&e) {
                e.set(DECIDED, true);
                decided.push((e.key().text(), d));
            }
        }
        decided
    }

    /// Remembers conversations whose close a past run finished (from the journal) as
    /// decided tombstones: a late frame or a repeated intake call after a restart
    /// starts no second decision.
    pub fn bury_decided<'a>(&self, ids: impl IntoIterator<Item = &'a str>) {
        let mut t = self.tombstones.lock().unwrap_or_else(|e| e.into_inner());
        for id in ids {
            t.bury(key(id), true);
        }
    }

    /// What is remembered of an evicted closed conversation, if anything.
    pub fn tombstone(&self, conversation_id: &str) -> Option<Tombstone> {
        self.tombstone_key(key(conversation_id))
    }

    fn tombstone_of(&self, id: &Id) -> Option<Tombstone> {
        self.tombstone_key(id.tombstone_key())
    }

    fn tombstone_key(&self, k: u128) -> Option<Tombstone> {
        let t = self.tombstones.lock().unwrap_or_else(|e| e.into_inner());
        t.decided.get(&k).map(|d| {
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
        match self.map.get_mut(&Id::new(conversation_id)) {
            Some(mut c) if c.is_watched() != watched => {
                c.set(WATCHED, watched);
                true
            }
            _ => false,
        }
    }

    /// Whether the conversation is known and closed.
    pub fn is_closed(&self, conversation_id: &str) -> bool {
        self.map
            .get(&Id::new(conversation_id))
            .is_some_and(|c| c.is_closed())
    }

    /// A copy of one conversation (for tests and diagnostics).
    pub fn get(&self, conversation_id: &str) -> Option<Conversation> {
        self.map.get(&Id::new(conversation_id)).map(|c| c.clone())
    }

    /// Reads one conversation under its guard (no await inside `f`).
    pub fn with<R>(&self, conversation_id: &str, f: impl FnOnce(&Conversation) -> R) -> Option<R> {
        self.map.get(&Id::new(conversation_id)).map(|c| f(&c))
    }

    /// Open conversations, those no rule has decided on yet first, each group most
    /// recently active first (to the second), at most `limit` (the candidates of a
    /// resync after a gap); with `watched_only`, only those with per-conversation topics.
    pub fn open_by_priority(&self, limit: usize, watched_only: bool) -> Vec<Box<str>> {
        let mut v: Vec<(bool, u32, Id)> = self
            .map
            .iter()
            .filter(|e| !e.is_closed() && (!watched_only || e.is_watched()))
            .map(|e| (e.is_decided(), e.last_event, e.key().clone()))
            .collect();
        v.sort_by_key(|e| (e.0, std::cmp::Reverse(e.1)));
        v.into_iter()
            .take(limit)
            .map(|(_, _, id)| id.text())
            .collect()
    }

    /// Number of tracked conversations.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether nothing is tracked.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Forgets conversations closed longer than `closed_grace` ago, open ones silent for
    /// longer than `idle_max` (their end was missed), and, while more than the limit
    /// ([`TRACKED_MAX`]) are tracked, the longest silent ones. Returns the ids of evicted
    /// conversations that were still watched (their topics must be removed) and how many
    /// went in all. Event loop only.
    ///
    /// Closed conversations, and open ones a rule decided on, leave a tombstone, so no
    /// late event starts a second decision. An open one no rule decided on that speaks
    /// again is new to the map: a queue or user frame lists every participant and the
    /// attributes, so it is whole again at once; a bot-phase one lost its detail topics
    /// with its entry and is found again by flow discovery or the intake (a catch-up
    /// read when its topics are live again).
    ///
    /// After a mass eviction the map is shrunk, so its memory goes back to the system.
    pub fn evict(
        &self,
        now: Instant,
        closed_grace: Duration,
        idle_max: Duration,
    ) -> (Vec<Box<str>>, usize) {
        let before = self.map.len();
        let mut watched = Vec::new();
        let mut buried = Vec::new();
        let mut gone = |id: &Id, c: &Conversation| {
            if c.is_watched() {
                watched.push(id.text());
            }
            // A silent open one no rule decided on may speak again (and is then new).
            if c.is_closed() || c.is_decided() {
                buried.push((id.tombstone_key(), c.is_decided()));
            }
        };
        self.map.retain(|id, c| {
            let keep = if c.is_closed() {
                now.saturating_duration_since(from_secs(c.closed_at)) < closed_grace
            } else {
                now.saturating_duration_since(from_secs(c.last_event)) < idle_max
            };
            if !keep {
                gone(id, c);
            }
            keep
        });
        if self.map.len() > self.limit {
            // The longest silent go first, down to nine tenths of the limit, so this
            // sort is not redone at every eviction.
            let mut ages: Vec<(u32, Id)> = self
                .map
                .iter()
                .map(|e| (e.last_event, e.key().clone()))
                .collect();
            let excess = ages.len() - (self.limit - self.limit / 10);
            ages.select_nth_unstable_by_key(excess - 1, |a| a.0);
            for (_, id) in ages.drain(..excess) {
                if let Some((id, c)) = self.map.remove(&id) {
                    gone(&id, &c);
                }
            }
        }
        // Hash tables do not shrink by themselves: after a mass eviction the emptied
        // tables would keep their memory for good. (`capacity()` cannot tell: a removal
        // leaves a deleted mark that still holds its bucket.) Entries only go here, so
        // the map was at its largest since the last shrink at some eviction's start.
        use std::sync::atomic::Ordering::Relaxed;
        let peak = self.peak.load(Relaxed).max(before);
        if peak > 4096 && self.map.len() * 2 < peak {
            self.map.shrink_to_fit();
            self.peak.store(self.map.len(), Relaxed);
        } else {
            self.peak.store(peak, Relaxed);
        }
        self.profiles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .prune();
        if !buried.is_empty() {
            let mut t = self.tombstones.lock().unwrap_or_else(|e| e.into_inner());
            for (k, decided) in buried {
                t.bury(k, decided);
            }
        }
        (watched, before - self.map.len())
    }
}

#[cfg(test)]
mod tests;
