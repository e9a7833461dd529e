//! The Store's tests, and the fixtures the merge rules' tests share.

use super::*;
use crate::genesys::frames::{ParticipantUpdate, Source};

pub(super) fn p(id: &str, purpose: &str, ended: bool) -> ParticipantUpdate {
    ParticipantUpdate {
        id: id.into(),
        purpose: purpose.into(),
        ended,
        queue_id: None,
        message_type: Some("webmessaging".into()),
        attributes: Vec::new(),
    }
}

pub(super) fn ev(ps: Vec<ParticipantUpdate>) -> ConversationEvent {
    let mut e = ConversationEvent::empty("c1".into(), Source::Queue);
    e.participants = ps;
    e
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
fn an_entry_stays_small() {
    // 136 bytes a slot: see the module doc and bench/RESULTS.md.
    assert!(std::mem::size_of::<Conversation>() <= 112);
    assert!(std::mem::size_of::<(Id, Conversation)>() <= 136);
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
