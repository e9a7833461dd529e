//! The lease loop against a real PostgreSQL (issue 16): two instances, one acting; a
//! resign hands over at once; a lost lease makes a standby. The database on
//! 127.0.0.1:5432 (trust, database `test`), or `GENESYS_CLOSER_TEST_PG`.

use std::time::Duration;

use genesys_closer::ha::leader::{self, Role};
use genesys_closer::ha::lease::LeaseSettings;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

fn url() -> String {
    std::env::var("GENESYS_CLOSER_TEST_PG")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=test".into())
}

async fn admin() -> tokio_postgres::Client {
    let (c, conn) = tokio_postgres::connect(&url(), tokio_postgres::NoTls)
        .await
        .expect("the test PostgreSQL on 127.0.0.1:5432 (bash .ci/run starts one)");
    tokio::spawn(conn);
    c
}

struct Instance {
    role: watch::Receiver<Role>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

fn start(schema: &str, name: &str) -> Instance {
    let settings = LeaseSettings::new(
        schema,
        "closer",
        name,
        // Long: a takeover within the test's wait can only come from a resign (or the
        // lease taken from under it), never from the TTL running out.
        Duration::from_secs(120),
        Duration::from_millis(500),
    )
    .unwrap();
    let (tx, role) = watch::channel(Role::Standby);
    let stop = CancellationToken::new();
    let gate = std::sync::Arc::new(genesys_closer::ha::gate::SendGate::default());
    let db = genesys_closer::ha::connect::Database::from(url().as_str())
        .connector()
        .expect("a connection string");
    let task = tokio::spawn(leader::run(settings, db, tx, gate, stop.clone()));
    Instance { role, stop, task }
}

/// Waits (bounded) until `role` satisfies `what`.
async fn until(role: &mut watch::Receiver<Role>, what: impl Fn(&Role) -> bool) -> Role {
    let r = tokio::time::timeout(Duration::from_secs(20), role.wait_for(|r| what(r)))
        .await
        .expect("role did not change in time")
        .expect("lease loop ended");
    *r
}

fn leads(r: &Role) -> bool {
    matches!(r, Role::Leader { .. })
}

#[tokio::test]
async fn one_of_two_acts_and_a_resign_hands_over_at_once() {
    let schema = format!("t_leader_{}", std::process::id());
    let db = admin().await;
    db.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await
        .unwrap();
    // A fresh database: the lease loop creates its table itself (before, the first
    // asks failed until the journal had migrated, with a warning on every first start).
    let mut a = start(&schema, "host-a");
    let first = until(&mut a.role, leads).await;
    let Role::Leader { epoch, .. } = first else {
        unreachable!()
    };
    assert_eq!(first.acting(Instant::now()), Some(epoch));
    let mut b = start(&schema, "host-b");
    // B asks every 500 ms; after several rounds it is still a standby while A renews.
    let holder_seen = async {
        loop {
            let holder: String = db
                .query_one(&format!("SELECT holder FROM {schema}.lease"), &[])
                .await
                .unwrap()
                .get(0);
            // A renew publishes a later trust window.
            let renewed = a.role.has_changed().unwrap_or(false);
            if holder == "host-a" && renewed {
                break;
            }
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), holder_seen)
        .await
        .expect("A renews");
    assert_eq!(*b.role.borrow(), Role::Standby, "A holds it: B waits");

    // SIGTERM on A: it resigns; B is told and takes over without waiting for the TTL
    // (120 s, far beyond the wait).
    a.stop.cancel();
    a.task.await.unwrap();
    assert_eq!(*a.role.borrow(), Role::Standby);
    let taken = until(&mut b.role, leads).await;
    let Role::Leader { epoch: next, .. } = taken else {
        unreachable!()
    };
    assert_eq!(next, epoch + 1, "a takeover bumps the epoch");

    // B's lease is taken from under it (as if it had been paused past its TTL): its
    // next renew finds a newer epoch and it becomes a standby, still running.
    db.execute(
        &format!(
            "UPDATE {schema}.lease SET holder = 'host-c', epoch = epoch + 1, \
             expires_at = now() + interval '1 hour'"
        ),
        &[],
    )
    .await
    .unwrap();
    until(&mut b.role, |r| *r == Role::Standby).await;
    assert!(
        !b.task.is_finished(),
        "a lost lease never ends the instance"
    );
    b.stop.cancel();
    b.task.await.unwrap();
    db.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await
        .unwrap();
}
