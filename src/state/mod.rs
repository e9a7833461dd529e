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

//!
//! ## What an entry costs
//! About 136 bytes in the map, with nothing on the heap of its own in the usual shapes
//! (`benches/memory.rs`, bench/RESULTS.md): a canonical UUID id is kept as its 128 bits,
//! participants as 64-bit digests of their ids (four inline), the customer's id inline,
//! times as offsets, and the strings conversations share (queue, messaging type, the
//! attributes rules read, an intake intent) as one reference to an interned profile.
//! Open conversations beyond [`TRACKED_MAX`] are dropped, the longest silent first, and
//! the map gives its memory back after a mass eviction.

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use dashmap::DashMap;
use tokio::time::Instant;

use crate::genesys::frames::{ConversationEvent, InlineStr, Source};
use crate::ids::{canonical_bits, uuid_text};

/// A conversation id as the map keys it: a canonical UUID as its bits (no allocation),
/// any other text as is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Id {
    Uuid(u64, u64),
    Text(Box<str>),
}

impl Id {
    fn new(s: &str) -> Id {
        match canonical_bits(s) {
            Some(v) => Id::Uuid((v >> 64) as u64, v as u64),
            None => Id::Text(s.into()),
        }
    }

    /// The id as it came (a canonical UUID is lowercase, so its text is the same).
    fn text(&self) -> Box<str> {
        match self {
            Id::Uuid(hi, lo) => uuid_text((u128::from(*hi) << 64) | u128::from(*lo)).into(),
            Id::Text(t) => t.clone(),
        }
    }

    /// The tombstone key ([`key`]) of this id.
    fn tombstone_key(&self) -> u128 {
        match self {
            Id::Uuid(hi, lo) => (u128::from(*hi) << 64) | u128::from(*lo),
            Id::Text(t) => key(t),
        }
    }
}

/// Hashes map keys cheaply: a UUID's bits are random already, and any other id goes
/// through a multiply-rotate mix and a final avalanche. Ids come from Genesys and the
/// authenticated intake, not from anyone who could pick colliding ones.
#[derive(Default)]
struct IdHasher(u64);

impl IdHasher {
    fn mix(&mut self, x: u64) {
        self.0 = (self.0.rotate_left(5) ^ x).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(b));
        }
    }
    fn write_u64(&mut self, x: u64) {
        self.mix(x);
    }
    fn write_usize(&mut self, x: usize) {
        self.mix(x as u64);
    }
    fn write_isize(&mut self, x: isize) {
        self.mix(x as u64);
    }
    fn finish(&self) -> u64 {
        // The 64-bit finalizer of MurmurHash3: every bit of the state reaches every
        // bit of the hash (the map takes buckets from the low bits, shards and tags from
        // the high ones).
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

type IdHash = std::hash::BuildHasherDefault<IdHasher>;

/// A participant id as a 64-bit digest with the low bit clear (the entry keeps the
/// participant's end there). Ids are only compared within one conversation, a handful
/// at a time: two different ids share a digest with odds of about 2^-63 per pair
/// (merged, they would count as one participant for "every participant ended").
fn participant_key(id: &[u8]) -> u64 {
    let mut h = IdHasher::default();
    h.write(id);
    h.write_usize(id.len());
    h.finish() & !1
}

/// Participants inline before they spill to the heap (customer, flow, queue, agent).
const INLINE_PARTICIPANTS: usize = 4;

/// Every participant ever seen, as [`participant_key`] with the end in the low bit.
#[derive(Debug, Clone)]
enum Participants {
    Inline(u8, [u64; INLINE_PARTICIPANTS]),
    Heap(Vec<u64>),
}

impl Participants {
    fn as_slice(&self) -> &[u64] {
        match self {
            Participants::Inline(n, a) => &a[..usize::from(*n)],
            Participants::Heap(v) => v,
        }
    }

    /// Adds a participant, or marks it ended; an end is final.
    fn merge(&mut self, key: u64, ended: bool) {
        let bit = u64::from(ended);
        let slice = match self {
            Participants::Inline(n, a) => &mut a[..usize::from(*n)],
            Participants::Heap(v) => v.as_mut_slice(),
        };
        if let Some(k) = slice.iter_mut().find(|k| **k & !1 == key) {
            *k |= bit;
            return;
        }
        match self {
            Participants::Inline(n, a) if usize::from(*n) < INLINE_PARTICIPANTS => {
                a[usize::from(*n)] = key | bit;
                *n += 1;
            }
            Participants::Inline(_, a) => {
                let mut v = Vec::with_capacity(INLINE_PARTICIPANTS * 2);
                v.extend_from_slice(a);
                v.push(key | bit);
                *self = Participants::Heap(v);
            }
            Participants::Heap(v) => v.push(key | bit),
        }
    }
}

/// What conversations share: the queue, the messaging type, the attributes rules read
/// (sorted by name) and an intake intent. Interned, so the thousands of conversations
/// of one queue with one intent hold one copy.
#[derive(Debug, PartialEq, Eq)]
struct Profile {
    queue_id: Option<Box<str>>,
    message_type: Option<Box<str>>,
    attributes: Box<[(Box<str>, Box<str>)]>,
    intake_intent: Option<Box<str>>,
}

/// A profile being worked out from an event, borrowing what it does not change.
struct Draft<'a> {
    queue_id: Option<&'a str>,
    message_type: Option<&'a str>,
    /// `None`: the current profile's attributes, unchanged.
    attributes: Option<Vec<(&'a str, &'a str)>>,
    intake_intent: Option<&'a str>,
    current: Option<&'a Profile>,
}

impl<'a> Draft<'a> {
    fn of(current: Option<&'a Profile>) -> Draft<'a> {
        Draft {
            queue_id: current.and_then(|p| p.queue_id.as_deref()),
            message_type: current.and_then(|p| p.message_type.as_deref()),
            attributes: None,
            intake_intent: current.and_then(|p| p.intake_intent.as_deref()),
            current,
        }
    }

    fn attribute(&self, name: &str) -> Option<&'a str> {
        match &self.attributes {
            Some(v) => v.iter().find(|(k, _)| *k == name).map(|(_, v)| *v),
            None => self.current.and_then(|p| {
                p.attributes
                    .iter()
                    .find(|(k, _)| &**k == name)
                    .map(|(_, v)| &**v)
            }),
        }
    }

    /// Sets an attribute; one already known is replaced only when `overwrite`.
    fn set_attribute(&mut self, name: &'a str, value: &'a str, overwrite: bool) {
        match self.attribute(name) {
            Some(old) if !overwrite || old == value => return,
            _ => {}
        }
        let current = self.current;
        let v = self.attributes.get_or_insert_with(|| {
            current.map_or_else(Vec::new, |p| {
                p.attributes.iter().map(|(k, v)| (&**k, &**v)).collect()
            })
        });
        match v.iter_mut().find(|(k, _)| *k == name) {
            Some(slot) => slot.1 = value,
            None => {
                v.push((name, value));
                v.sort_unstable_by(|a, b| a.0.cmp(b.0));
            }
        }
    }

    fn attributes(&self) -> impl Iterator<Item = (&str, &str)> {
        let (draft, current) = match &self.attributes {
            Some(v) => (v.as_slice(), None),
            None => (&[][..], self.current),
        };
        draft.iter().copied().chain(
            current
                .into_iter()
                .flat_map(|p| p.attributes.iter().map(|(k, v)| (&**k, &**v))),
        )
    }

    fn is_empty(&self) -> bool {
        self.queue_id.is_none()
            && self.message_type.is_none()
            && self.intake_intent.is_none()
            && self.attributes().next().is_none()
    }

    fn matches(&self, p: &Profile) -> bool {
        self.queue_id == p.queue_id.as_deref()
            && self.message_type == p.message_type.as_deref()
            && self.intake_intent == p.intake_intent.as_deref()
            && self
                .attributes()
                .eq(p.attributes.iter().map(|(k, v)| (&**k, &**v)))
    }

    /// Whether this is the current profile, unchanged.
    fn unchanged(&self) -> bool {
        match self.current {
            Some(p) => self.matches(p),
            None => self.is_empty(),
        }
    }

    fn digest(&self) -> u64 {
        let mut h = IdHasher::default();
        self.queue_id.hash(&mut h);
        self.message_type.hash(&mut h);
        self.intake_intent.hash(&mut h);
        for a in self.attributes() {
            a.hash(&mut h);
        }
        h.finish()
    }

    fn to_profile(&self) -> Profile {
        Profile {
            queue_id: self.queue_id.map(Into::into),
            message_type: self.message_type.map(Into::into),
            attributes: self
                .attributes()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            intake_intent: self.intake_intent.map(Into::into),
        }
    }
}

/// The interned profiles, by digest. Entries no conversation holds any more go at each
/// eviction.
#[derive(Debug, Default)]
struct Profiles {
    by_digest: HashMap<u64, Vec<Arc<Profile>>, IdHash>,
}

impl Profiles {
    fn intern(&mut self, d: &Draft<'_>) -> Option<Arc<Profile>> {
        if d.is_empty() {
            return None;
        }
        let same = self.by_digest.entry(d.digest()).or_default();
        if let Some(p) = same.iter().find(|p| d.matches(p)) {
            return Some(Arc::clone(p));
        }
        let p = Arc::new(d.to_profile());
        same.push(Arc::clone(&p));
        Some(p)
    }

    fn prune(&mut self) {
        self.by_digest.retain(|_, same| {
            same.retain(|p| Arc::strong_count(p) > 1);
            !same.is_empty()
        });
        if self.by_digest.capacity() > 64 && self.by_digest.len() * 4 < self.by_digest.capacity() {
            self.by_digest.shrink_to_fit();
        }
    }
}

/// Instants are kept as offsets from one origin a day before the first use, so every
/// instant the daemon handles is after it: first seen to the nanosecond (catch-up reads
/// compare it with `catchup_after`, in milliseconds); the last event and the close in
/// whole seconds rounded up (they only time evictions, in minutes and hours: an entry may
/// stay up to a second longer, never shorter). 32-bit seconds last 136 years.
fn origin() -> std::time::Instant {
    static ORIGIN: OnceLock<std::time::Instant> = OnceLock::new();
    *ORIGIN.get_or_init(|| {
        let now = std::time::Instant::now();
        now.checked_sub(Duration::from_secs(86_400)).unwrap_or(now)
    })
}

fn to_nanos(at: Instant) -> u64 {
    let d = at.into_std().saturating_duration_since(origin());
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn from_nanos(n: u64) -> Instant {
    Instant::from_std(origin() + Duration::from_nanos(n))
}

/// Whole seconds after the origin, rounded up, at least 1 (0 means "not closed").
fn to_secs(at: Instant) -> u32 {
    let d = at.into_std().saturating_duration_since(origin());
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    u32::try_from(s).unwrap_or(u32::MAX).max(1)
}

fn from_secs(s: u32) -> Instant {
    Instant::from_std(origin() + Duration::from_secs(s.into()))
}

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

    fn merge(&mut self, ev: &ConversationEvent, now: Instant, profiles: &Mutex<Profiles>) {
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

    /// The closing rule of the module doc.
    fn ended(&self) -> bool {
        let p = self.participants.as_slice();
        let all_ended = !p.is_empty() && p.iter().all(|k| k & 1 == 1);
        (self.has(FULL_VIEW) && all_ended)
            || self.has(CUSTOMER_ENDED)
            || self.has(FLOW_DISCONNECTED)
    }
}

/// Most tombstones kept; the oldest go first. At about 65 bytes each (a 128-bit key in a
/// hash table and in a queue, both sized to a power of two), 100,000 cost about 6.3 MB
/// and cover well over the closed grace period at any realistic rate.
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

impl Tombstones {
    /// Remembers `k`, forgetting the oldest beyond [`TOMBSTONES`] at once, so neither
    /// table ever grows past it (a burst of evictions would double both for good).
    fn bury(&mut self, k: u128, decided: bool) {
        if self.decided.insert(k, decided).is_none() {
            if self.order.len() >= TOMBSTONES
                && let Some(old) = self.order.pop_front()
            {
                self.decided.remove(&old);
            }
            self.order.push_back(k);
        }
    }
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
    fn ids_come_back_as_they_came() {
        for id in [
            "5d2b8c1e-9a47-4f3e-b6d0-7e1c2a9f4b38",
            "5D2B8C1E-9A47-4F3E-B6D0-7E1C2A9F4B38",
            "5d2b8c1e9a474f3eb6d07e1c2a9f4b38",
            "c1",
            "",
            "5d2b8c1e-9a47-4f3e-b6d0-7e1c2a9f4b3é",
        ] {
            assert_eq!(&*Id::new(id).text(), id);
        }
        assert!(matches!(
            Id::new("5d2b8c1e-9a47-4f3e-b6d0-7e1c2a9f4b38"),
            Id::Uuid(..)
        ));
        assert_ne!(
            Id::new("5d2b8c1e-9a47-4f3e-b6d0-7e1c2a9f4b38"),
            Id::new("5D2B8C1E-9A47-4F3E-B6D0-7E1C2A9F4B38"),
            "ids are compared as text, as Genesys sent them"
        );
        assert_eq!(
            Id::new("5D2B8C1E-9A47-4F3E-B6D0-7E1C2A9F4B38").tombstone_key(),
            key("5D2B8C1E-9A47-4F3E-B6D0-7E1C2A9F4B38")
        );
    }

    #[test]
    fn an_entry_stays_small() {
        // 136 bytes a slot: see the module doc and bench/RESULTS.md.
        assert!(std::mem::size_of::<Conversation>() <= 112);
        assert!(std::mem::size_of::<(Id, Conversation)>() <= 136);
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
    fn beyond_the_limit_the_longest_silent_go_and_decided_ones_leave_a_tombstone() {
        let s = Store::with_limit(10);
        let t0 = Instant::now();
        for i in 0..20u64 {
            let mut e = ConversationEvent::empty(format!("c{i}").into(), Source::Queue);
            e.participants = vec![p("a", "customer", false)];
            // c0 is decided; c0..c9 are the older half.
            s.apply(&e, t0 + Duration::from_secs(i * 10), |_| {
                (i == 0).then_some(())
            });
        }
        s.set_watched("c3", true);
        let (watched, gone) = s.evict(
            t0 + Duration::from_secs(200),
            Duration::from_secs(600),
            Duration::from_secs(3600),
        );
        assert_eq!(gone, 11, "down to nine tenths of the limit");
        assert_eq!(watched, vec![Box::<str>::from("c3")]);
        assert!(s.get("c10").is_none() && s.get("c11").is_some());
        assert_eq!(s.tombstone("c0"), Some(Tombstone::Decided));
        assert_eq!(s.tombstone("c1"), None, "undecided open ones may come back");
        let mut e = ConversationEvent::empty("c0".into(), Source::Queue);
        e.participants = vec![p("a", "customer", false)];
        assert!(s.apply(&e, t0, |_| Some(())).late);
    }

    #[test]
    fn a_mass_eviction_gives_the_table_back() {
        let s = Store::new();
        let t0 = Instant::now();
        for i in 0..20_000 {
            let mut e = ConversationEvent::empty(format!("c{i}").into(), Source::Queue);
            e.participants = vec![p("a", "customer", i % 10 != 0)];
            s.apply(&e, t0, |_| None::<()>);
        }
        let full = s.map.capacity();
        s.evict(
            t0 + Duration::from_secs(120),
            Duration::from_secs(60),
            Duration::from_secs(3600),
        );
        assert_eq!(s.len(), 2_000);
        assert!(
            s.map.capacity() < full / 4,
            "{} of {full}",
            s.map.capacity()
        );
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
