//! The compact storage behind the map: an id as its 128 bits, a participant as a 64-bit
//! digest, the strings conversations share as one interned profile, instants as offsets,
//! and the bounded tombstones. What each costs is in the module doc of [`super`].

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

use crate::ids::{canonical_bits, uuid_text};

/// A conversation id as the map keys it: a canonical UUID as its bits (no allocation),
/// any other text as is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Id {
    Uuid(u64, u64),
    Text(Box<str>),
}

impl Id {
    pub(super) fn new(s: &str) -> Id {
        match canonical_bits(s) {
            Some(v) => Id::Uuid((v >> 64) as u64, v as u64),
            None => Id::Text(s.into()),
        }
    }

    /// The id as it came (a canonical UUID is lowercase, so its text is the same).
    pub(super) fn text(&self) -> Box<str> {
        match self {
            Id::Uuid(hi, lo) => uuid_text((u128::from(*hi) << 64) | u128::from(*lo)).into(),
            Id::Text(t) => t.clone(),
        }
    }

    /// The tombstone key ([`key`]) of this id.
    pub(super) fn tombstone_key(&self) -> u128 {
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
pub(super) struct IdHasher(u64);

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

pub(super) type IdHash = std::hash::BuildHasherDefault<IdHasher>;

/// A participant id as a 64-bit digest with the low bit clear (the entry keeps the
/// participant's end there). Ids are only compared within one conversation, a handful
/// at a time: two different ids share a digest with odds of about 2^-63 per pair
/// (merged, they would count as one participant for "every participant ended").
pub(super) fn participant_key(id: &[u8]) -> u64 {
    let mut h = IdHasher::default();
    h.write(id);
    h.write_usize(id.len());
    h.finish() & !1
}

/// Participants inline before they spill to the heap (customer, flow, queue, agent).
pub(super) const INLINE_PARTICIPANTS: usize = 4;

/// Every participant ever seen, as [`participant_key`] with the end in the low bit.
#[derive(Debug, Clone)]
pub(super) enum Participants {
    Inline(u8, [u64; INLINE_PARTICIPANTS]),
    Heap(Vec<u64>),
}

impl Participants {
    pub(super) fn as_slice(&self) -> &[u64] {
        match self {
            Participants::Inline(n, a) => &a[..usize::from(*n)],
            Participants::Heap(v) => v,
        }
    }

    /// Adds a participant, or marks it ended; an end is final.
    pub(super) fn merge(&mut self, key: u64, ended: bool) {
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
pub(super) struct Profile {
    pub(super) queue_id: Option<Box<str>>,
    pub(super) message_type: Option<Box<str>>,
    pub(super) attributes: Box<[(Box<str>, Box<str>)]>,
    pub(super) intake_intent: Option<Box<str>>,
}

/// A profile being worked out from an event, borrowing what it does not change.
pub(super) struct Draft<'a> {
    pub(super) queue_id: Option<&'a str>,
    pub(super) message_type: Option<&'a str>,
    /// `None`: the current profile's attributes, unchanged.
    attributes: Option<Vec<(&'a str, &'a str)>>,
    pub(super) intake_intent: Option<&'a str>,
    current: Option<&'a Profile>,
}

impl<'a> Draft<'a> {
    pub(super) fn of(current: Option<&'a Profile>) -> Draft<'a> {
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
    pub(super) fn set_attribute(&mut self, name: &'a str, value: &'a str, overwrite: bool) {
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
    pub(super) fn unchanged(&self) -> bool {
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
pub(super) struct Profiles {
    pub(super) by_digest: HashMap<u64, Vec<Arc<Profile>>, IdHash>,
}

impl Profiles {
    pub(super) fn intern(&mut self, d: &Draft<'_>) -> Option<Arc<Profile>> {
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

    pub(super) fn prune(&mut self) {
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

pub(super) fn to_nanos(at: Instant) -> u64 {
    let d = at.into_std().saturating_duration_since(origin());
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

pub(super) fn from_nanos(n: u64) -> Instant {
    Instant::from_std(origin() + Duration::from_nanos(n))
}

/// Whole seconds after the origin, rounded up, at least 1 (0 means "not closed").
pub(super) fn to_secs(at: Instant) -> u32 {
    let d = at.into_std().saturating_duration_since(origin());
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    u32::try_from(s).unwrap_or(u32::MAX).max(1)
}

pub(super) fn from_secs(s: u32) -> Instant {
    Instant::from_std(origin() + Duration::from_secs(s.into()))
}

/// Most tombstones kept; the oldest go first. At about 65 bytes each (a 128-bit key in a
/// hash table and in a queue, both sized to a power of two), 100,000 cost about 6.3 MB
/// and cover well over the closed grace period at any realistic rate.
pub const TOMBSTONES: usize = 100_000;

/// Conversations evicted after they closed: a late frame for one of them must not bring
/// it back and start a second decision. Compact keys in a bounded FIFO.
#[derive(Debug, Default)]
pub(super) struct Tombstones {
    /// Key -> whether a rule had decided on it.
    pub(super) decided: HashMap<u128, bool>,
    /// Keys in eviction order, to forget the oldest first.
    order: VecDeque<u128>,
}

impl Tombstones {
    /// Remembers `k`, forgetting the oldest beyond [`TOMBSTONES`] at once, so neither
    /// table ever grows past it (a burst of evictions would double both for good).
    pub(super) fn bury(&mut self, k: u128, decided: bool) {
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
pub(super) fn key(id: &str) -> u128 {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
