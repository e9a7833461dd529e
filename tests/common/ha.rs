//! What the group tests (tests/ha_group.rs, tests/ha_relay.rs, tests/ha_chaos.rs) share:
//! the test database, a member's `[ha]`, and what they read off the simulator's request
//! log.

use std::time::Duration;

use genesys_closer::config::{DatabaseUrl, HaConfig};
use genesys_sim::RecordedRequest;

/// The test PostgreSQL: 127.0.0.1:5432 (trust, database `test`), or
/// `GENESYS_CLOSER_TEST_PG`.
pub fn url() -> String {
    std::env::var("GENESYS_CLOSER_TEST_PG")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=test".into())
}

/// A session on the test PostgreSQL.
pub async fn db() -> tokio_postgres::Client {
    let (c, conn) = tokio_postgres::connect(&url(), tokio_postgres::NoTls)
        .await
        .expect("the test PostgreSQL on 127.0.0.1:5432 (bash .ci/run starts one)");
    tokio::spawn(conn);
    c
}

/// An in-process member's `[ha]` on `db_url`, lease `closer`. The lease is long: a
/// takeover inside a test's waits can only come from a resign.
pub fn member_ha(db_url: &str, schema: &str, instance: &str) -> HaConfig {
    HaConfig {
        database_url: DatabaseUrl::Inline(db_url.to_owned()),
        schema: schema.into(),
        lease_name: "closer".into(),
        instance: instance.into(),
        lease_ttl: Duration::from_secs(120),
        renew_every: Duration::from_millis(500),
        instances: 2,
        ca_file: None,
    }
}

/// Whether a recorded request acts on a conversation (a disconnect, a teardown, a
/// farewell or a wrap-up), as opposed to reads, channels and subscriptions.
pub fn acts(r: &RecordedRequest) -> bool {
    (r.method == "PATCH" && r.path.starts_with("/api/v2/conversations/"))
        || (r.method == "POST"
            && (r.path.ends_with("/disconnect") || r.path.contains("/communications/")))
}

/// (instance, epoch) from a group member's User-Agent, `genesys-closer/V (host-a;
/// epoch 3)`; epoch `None` for `(host-a; standby)`.
pub fn who(r: &RecordedRequest) -> Option<(String, Option<i64>)> {
    let ua = r.user_agent.as_deref()?;
    let (_, inside) = ua.split_once('(')?;
    let inside = inside.trim_end_matches(')');
    let (instance, role) = inside.split_once("; ")?;
    let epoch = role.strip_prefix("epoch ").and_then(|e| e.parse().ok());
    Some((instance.to_owned(), epoch))
}
