//! The lease and the fence against a real PostgreSQL (issue 16): the database on
//! 127.0.0.1:5432 (trust authentication, database `test`), or `GENESYS_CLOSER_TEST_PG`
//! (a libpq connection string). `.ci/run` starts a throwaway cluster where none runs.
//! Each test works in a schema of its own and drops it at the end.

use std::time::Duration;

use futures_util::StreamExt;
use genesys_closer::ha::lease::{Lease, LeaseSettings, NOTIFY_CHANNEL, Renewed, fenced_step};
use genesys_closer::ha::schema;
use tokio_postgres::{AsyncMessage, Client, NoTls};

fn url() -> String {
    std::env::var("GENESYS_CLOSER_TEST_PG")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=test".into())
}

/// A client, and the messages (notifications) its connection reads.
async fn connect() -> (Client, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let (client, mut conn) = tokio_postgres::connect(&url(), NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot reach the test PostgreSQL ({e}): start one on 127.0.0.1:5432 with a \
             database `test` and trust authentication (`bash .ci/run` does), or set \
             GENESYS_CLOSER_TEST_PG"
            )
        });
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(Ok(m)) = messages.next().await {
            if let AsyncMessage::Notification(n) = m {
                let _ = tx.send(n.payload().to_owned());
            }
        }
    });
    (client, rx)
}

/// The step the fence guards in these tests.
const STEP: &str = "about_to_send:disconnect";

/// A fresh schema for one test, dropped by `drop_schema`.
fn schema_name(test: &str) -> String {
    format!("t_{test}_{}", std::process::id())
}

async fn drop_schema(c: &Client, schema: &str) {
    c.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await
        .unwrap();
}

fn settings(schema: &str, instance: &str) -> LeaseSettings {
    LeaseSettings::new(
        schema,
        "closer",
        instance,
        Duration::from_secs(10),
        Duration::from_secs(2),
    )
    .unwrap()
}

/// The lease row expires now, as if its holder stopped renewing `ttl` ago.
async fn expire(c: &Client, schema: &str) {
    c.execute(
        &format!("UPDATE {schema}.lease SET expires_at = now() - interval '1 millisecond'"),
        &[],
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn two_instances_starting_together_apply_each_migration_once() {
    let schema = schema_name("migrate");
    let (mut a, _) = connect().await;
    let (mut b, _) = connect().await;
    drop_schema(&a, &schema).await;
    let (ra, rb) = tokio::join!(
        schema::migrate(&mut a, &schema),
        schema::migrate(&mut b, &schema)
    );
    let applied = ra.unwrap() + rb.unwrap();
    assert_eq!(
        applied,
        schema::latest() as usize,
        "each version applied once in all"
    );
    let rows = a
        .query(&format!("SELECT version FROM {schema}.migrations"), &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), schema::latest() as usize);
    // Again: nothing to do.
    assert_eq!(schema::migrate(&mut a, &schema).await.unwrap(), 0);
    drop_schema(&a, &schema).await;
}

#[tokio::test]
async fn a_taken_lease_excludes_others_and_a_takeover_fences_the_old_epoch() {
    let schema = schema_name("takeover");
    let (mut db, _) = connect().await;
    drop_schema(&db, &schema).await;
    schema::migrate(&mut db, &schema).await.unwrap();
    let mut a = Lease::new(settings(&schema, "host-a"));
    let mut b = Lease::new(settings(&schema, "host-b"));

    let held_a = a.try_take(&db).await.unwrap().expect("nobody held it");
    assert_eq!(held_a.epoch, 1);
    assert!(b.try_take(&db).await.unwrap().is_none(), "A holds it");
    // B never held it: its renew cannot extend A's lease and make B believe it leads.
    assert_eq!(b.renew(&db).await.unwrap(), Renewed::Lost);
    assert!(matches!(a.renew(&db).await.unwrap(), Renewed::Kept(h) if h.epoch == 1));
    assert!(
        fenced_step(&db, a.settings(), 1, "c-1", STEP, 1_000)
            .await
            .unwrap()
    );

    // A stops renewing (paused, cut off): its row expires and B takes over.
    expire(&db, &schema).await;
    let held_b = b.try_take(&db).await.unwrap().expect("expired: B takes it");
    assert_eq!(held_b.epoch, 2, "a takeover bumps the epoch");
    // A wakes up: its steps under epoch 1 are refused, and its renew says lost.
    assert!(
        !fenced_step(&db, a.settings(), 1, "c-2", STEP, 2_000)
            .await
            .unwrap()
    );
    assert_eq!(a.renew(&db).await.unwrap(), Renewed::Lost);
    assert_eq!(a.trusted(tokio::time::Instant::now()), None);
    assert!(
        fenced_step(&db, b.settings(), 2, "c-2", STEP, 3_000)
            .await
            .unwrap()
    );
    let sent: Vec<(String, i64, String)> = db
        .query(
            &format!("SELECT conversation_id, epoch, instance FROM {schema}.steps ORDER BY id"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        sent,
        vec![
            ("c-1".to_owned(), 1, "host-a".to_owned()),
            ("c-2".to_owned(), 2, "host-b".to_owned())
        ]
    );
    drop_schema(&db, &schema).await;
}

#[tokio::test]
async fn resigning_lets_a_standby_take_over_at_once_and_tells_it() {
    let schema = schema_name("resign");
    let (mut db, _) = connect().await;
    let (standby_db, mut notified) = connect().await;
    drop_schema(&db, &schema).await;
    schema::migrate(&mut db, &schema).await.unwrap();
    standby_db
        .batch_execute(&format!("LISTEN {NOTIFY_CHANNEL}"))
        .await
        .unwrap();
    let mut a = Lease::new(settings(&schema, "host-a"));
    let mut b = Lease::new(settings(&schema, "host-b"));
    a.try_take(&db).await.unwrap().unwrap();
    assert!(b.try_take(&standby_db).await.unwrap().is_none());

    assert!(a.resign(&db).await.unwrap(), "the row was ours");
    assert_eq!(a.trusted(tokio::time::Instant::now()), None);
    let payload = tokio::time::timeout(Duration::from_secs(10), notified.recv())
        .await
        .expect("the standby is notified")
        .unwrap();
    assert_eq!(payload, "closer");
    let held = b
        .try_take(&standby_db)
        .await
        .unwrap()
        .expect("free at once");
    assert_eq!(held.epoch, 2);
    drop_schema(&db, &schema).await;
}

#[tokio::test]
async fn a_fenced_insert_in_flight_holds_a_takeover_until_it_is_stored() {
    // The old holder's "about to send" and a takeover race: the takeover waits for the
    // insert's transaction, so the new holder reads it as an earlier epoch's step.
    let schema = schema_name("race");
    let (mut db, _) = connect().await;
    let (mut old, _) = connect().await;
    let (taker_db, _) = connect().await;
    drop_schema(&db, &schema).await;
    schema::migrate(&mut db, &schema).await.unwrap();
    let mut a = Lease::new(settings(&schema, "host-a"));
    a.try_take(&db).await.unwrap().unwrap();
    expire(&db, &schema).await;

    // The fenced insert, held open in a transaction (as if paused before its commit).
    let tx = old.transaction().await.unwrap();
    let stored = fenced_step(&tx, a.settings(), 1, "c-9", STEP, 9_000)
        .await
        .unwrap();
    assert!(stored);
    let schema2 = schema.clone();
    let taker = tokio::spawn(async move {
        let mut b = Lease::new(settings(&schema2, "host-b"));
        b.try_take(&taker_db).await
    });
    // Wait until the takeover is seen blocked on the lease row's lock.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: i64 = db
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE wait_event_type = 'Lock' AND query LIKE '%lease AS l%'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if waiting > 0 {
            break;
        }
        assert!(
            !taker.is_finished(),
            "the takeover did not wait for the fenced insert"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "the takeover never blocked"
        );
        tokio::task::yield_now().await;
    }
    tx.commit().await.unwrap();
    let held = taker.await.unwrap().unwrap().expect("expired: taken");
    assert_eq!(held.epoch, 2);
    let earlier: i64 = db
        .query_one(
            &format!("SELECT count(*) FROM {schema}.steps WHERE epoch < $1"),
            &[&held.epoch],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(earlier, 1, "the new holder sees the old epoch's step");
    drop_schema(&db, &schema).await;
}

#[tokio::test]
async fn the_group_counts_the_instances_alive_within_one_ttl() {
    let schema = schema_name("members");
    let (mut db, _) = connect().await;
    drop_schema(&db, &schema).await;
    schema::migrate(&mut db, &schema).await.unwrap();
    let a = Lease::new(settings(&schema, "host-a"));
    let b = Lease::new(settings(&schema, "host-b"));
    let c = Lease::new(settings(&schema, "host-c"));
    assert_eq!(a.heartbeat(&db).await.unwrap(), 1, "A alone");
    assert_eq!(b.heartbeat(&db).await.unwrap(), 2);
    assert_eq!(c.heartbeat(&db).await.unwrap(), 3);
    assert_eq!(
        a.heartbeat(&db).await.unwrap(),
        3,
        "again: not counted twice"
    );
    // C stops: it leaves. B goes silent past the TTL: no longer counted.
    c.leave(&db).await.unwrap();
    db.execute(
        &format!(
            "UPDATE {schema}.members SET seen_at = now() - interval '11 seconds' \
             WHERE instance = 'host-b'"
        ),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(a.heartbeat(&db).await.unwrap(), 1);
    // Another group's instances in the same schema are not this group's.
    let other = Lease::new(
        LeaseSettings::new(
            &schema,
            "other",
            "host-x",
            Duration::from_secs(10),
            Duration::from_secs(2),
        )
        .unwrap(),
    );
    assert_eq!(other.heartbeat(&db).await.unwrap(), 1);
    assert_eq!(a.heartbeat(&db).await.unwrap(), 1);
    drop_schema(&db, &schema).await;
}
