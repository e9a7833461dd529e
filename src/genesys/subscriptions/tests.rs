//! The subscriptions' tests: topic families, and a slot's snapshot and sync.

use tokio::time::Instant;

use super::slot::{ConvSub, lock};
use super::*;

#[test]
fn families_hide_ids() {
    assert_eq!(
        topic_family(
            "v2.detail.events.conversation.5d2b8c1e-9a47-4f3e-b6d0-7e1c2a9f4b38.customer.end"
        ),
        "v2.detail.events.conversation.{id}.customer.end"
    );
    assert_eq!(
        topic_family(
            "v2.routing.queues.8f14e45f-ceea-467a-9575-3b9d1c2e4a77.conversations.messages"
        ),
        "v2.routing.queues.{id}.conversations.messages"
    );
}

#[test]
fn snapshot_carries_watched_conversations_and_sync_settles_them() {
    let slot = Slot::new(vec!["v2.routing.queues.q.conversations.messages".into()]);
    let (tx, mut rx) = oneshot::channel();
    lock(&slot.state).convs.insert(
        "c1".into(),
        ConvSub::Pending {
            since: Instant::now(),
            urgent: true,
            waiters: vec![tx],
            was_live: false,
        },
    );
    let (topics, ids, removals) = slot.snapshot();
    assert_eq!(topics.len(), 4);
    assert_eq!(ids, vec![Box::<str>::from("c1")]);
    let synced = slot.synced("ch", &ids, removals, &[]);
    assert_eq!(synced.newly_live, ids);
    assert_eq!(rx.try_recv().ok(), Some(Ok(())));
    // A replaced channel makes it pending again, but no catch-up is owed.
    slot.lost_channel();
    let synced = slot.synced("ch2", &ids, removals, &[]);
    assert!(synced.newly_live.is_empty());
}
