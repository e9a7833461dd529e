//! The coordination tables (the lease) and the PostgreSQL journal's tables, created by
//! versioned migrations embedded in the binary.
//!
//! Each migration runs in one transaction that first takes a transaction-scoped
//! advisory lock, so two instances starting together apply each version once (the
//! second waits, then finds it applied). A transaction-scoped lock is released at
//! commit, which a transaction-mode pooler keeps; it is never used for leadership.

use tokio_postgres::Client;

use super::HaError;

/// The lock key migrations take (any constant; named so it shows in `pg_locks`).
const MIGRATION_LOCK: i64 = 0x0067_636c_6f73_6572; // "gcloser"

/// Version and SQL, in order. `{schema}` is replaced by the configured schema. A
/// released version is never edited: a change is a new version. (Version 1 was edited
/// once, before any release: the journal's tables joined the lease's, and the fence's
/// rows moved from a table of their own into the journal's steps.)
///
/// The journal's tables mirror the SQLite journal's (`src/journal/sqlite.rs`), column
/// for column, in PostgreSQL's types: `bigint` for times (`*_ms`, ms since the Unix
/// epoch, written by the instance as in SQLite) and counts, `bigserial` for ids,
/// `boolean` for flags (SQLite's 0/1 integers). Steps carry the lease epoch and the
/// instance that wrote them under the fence (`NULL` for a step written unfenced).
const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        "CREATE TABLE {schema}.lease (
        name text PRIMARY KEY,
        holder text NOT NULL,
        epoch bigint NOT NULL,
        expires_at timestamptz NOT NULL
    );
    CREATE TABLE {schema}.decisions (
        conversation_id text PRIMARY KEY,
        rule text NOT NULL,
        intent text NOT NULL,
        queue_id text,
        customer_id text,
        source text NOT NULL,
        watch boolean NOT NULL,
        deferred boolean NOT NULL,
        decided_ms bigint NOT NULL,
        outcome text,
        outcome_ms bigint,
        reason text,
        correlation_id text,
        requests bigint,
        latency_ms bigint
    );
    CREATE INDEX decisions_open ON {schema}.decisions (decided_ms) WHERE outcome IS NULL;
    CREATE INDEX decisions_finished ON {schema}.decisions (outcome_ms);
    CREATE TABLE {schema}.steps (
        id bigserial PRIMARY KEY,
        conversation_id text NOT NULL,
        at_ms bigint NOT NULL,
        step text NOT NULL,
        epoch bigint,
        instance text
    );
    CREATE INDEX steps_conversation ON {schema}.steps (conversation_id, id);
    CREATE TABLE {schema}.intake (
        id bigserial PRIMARY KEY,
        conversation_id text NOT NULL,
        at_ms bigint NOT NULL,
        intent text,
        answer text NOT NULL
    );
    CREATE INDEX intake_at ON {schema}.intake (at_ms);
    CREATE TABLE {schema}.outbox (
        id bigserial PRIMARY KEY,
        key text NOT NULL UNIQUE,
        payload text NOT NULL,
        created_ms bigint NOT NULL,
        http_pending boolean NOT NULL,
        file_pending boolean NOT NULL,
        attempts bigint NOT NULL DEFAULT 0,
        next_ms bigint NOT NULL,
        last_error text
    );
    CREATE INDEX outbox_due ON {schema}.outbox (next_ms) WHERE http_pending OR file_pending;",
    ),
    // Intake calls a standby relays to the acting instance (`super::relay`): stored by
    // the standby, answered by the leader.
    (
        2,
        "CREATE TABLE {schema}.relayed (
        id bigserial PRIMARY KEY,
        conversation_id text NOT NULL,
        intent text,
        attributes text NOT NULL,
        event_ms bigint,
        received_by text NOT NULL,
        received_at timestamptz NOT NULL DEFAULT now(),
        answer text,
        answered_by text,
        answered_epoch bigint,
        answered_at timestamptz
    );
    CREATE INDEX relayed_open ON {schema}.relayed (id) WHERE answer IS NULL;",
    ),
    // The instances of each lease's group and when each last said it was alive
    // (`super::lease::Lease::heartbeat`): the group's size, seen rather than told.
    (
        3,
        "CREATE TABLE {schema}.members (
        lease_name text NOT NULL,
        instance text NOT NULL,
        seen_at timestamptz NOT NULL,
        PRIMARY KEY (lease_name, instance)
    );",
    ),
    // The epoch that first took each relayed call (`super::relay`): a call taken again
    // by a later leader may have been acted on by the earlier one.
    (
        4,
        "ALTER TABLE {schema}.relayed ADD COLUMN first_taken_epoch bigint;",
    ),
];

/// The newest version this binary knows.
pub fn latest() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

/// Applies the migrations not applied yet; returns how many this call applied. A
/// database newer than this binary is refused (an older binary must not write to
/// tables it does not know).
pub async fn migrate(client: &mut Client, schema: &str) -> Result<usize, HaError> {
    super::valid_schema(schema)?;
    let mut applied = 0;
    for (version, sql) in MIGRATIONS {
        let mut again = true;
        let done = loop {
            match apply(client, schema, *version, sql).await {
                // A session that looked the schema or table name up before another
                // instance created it keeps that "no such name" in its catalog cache
                // until its next transaction: waiting on an advisory lock (no relation
                // lock) reads no invalidations, so `CREATE ... IF NOT EXISTS` collides
                // with what the other instance committed. A fresh transaction sees it.
                Err(e) if again && stale_catalog(&e) => {
                    again = false;
                    tracing::debug!(schema, version, error = %e,
                        "coordination database: created meanwhile by another instance; again");
                }
                r => break r?,
            }
        };
        match done {
            Applied::Now => {
                applied += 1;
                tracing::info!(schema, version, "coordination database: migration applied");
            }
            Applied::Before => {}
            Applied::Newer(n) => {
                return Err(HaError::Settings(format!(
                    "the database's schema {schema} is at version {n}, newer than this \
                     binary's {}: upgrade this instance",
                    latest()
                )));
            }
        }
    }
    Ok(applied)
}

/// The migration version the database's `schema` is at, without changing anything:
/// `None` when the schema or its migrations table does not exist (no instance has
/// started on it yet). Single statements, unnamed (a transaction-mode pooler keeps them).
pub async fn applied(client: &Client, schema: &str) -> Result<Option<i32>, HaError> {
    super::valid_schema(schema)?;
    let table = format!("{schema}.migrations");
    let exists: bool = client
        .query_typed(
            "SELECT to_regclass($1) IS NOT NULL",
            &[(&table, tokio_postgres::types::Type::TEXT)],
        )
        .await?
        .first()
        .map_or(Ok(false), |r| r.try_get(0))?;
    if !exists {
        return Ok(None);
    }
    let version: Option<i32> = client
        .query_typed(&format!("SELECT max(version) FROM {table}"), &[])
        .await?
        .first()
        .map_or(Ok(None), |r| r.try_get(0))?;
    // A migrations table without a row has no migration applied: version 0.
    Ok(Some(version.unwrap_or(0)))
}

/// What [`apply`] found.
enum Applied {
    /// Applied by this call.
    Now,
    /// Applied already.
    Before,
    /// The database is at this version, newer than this binary's.
    Newer(i32),
}

/// Whether `e` is a name collision a stale catalog cache explains (duplicate schema,
/// table or catalog key; a table not found).
fn stale_catalog(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    e.code().is_some_and(|c| {
        [
            SqlState::UNIQUE_VIOLATION,
            SqlState::DUPLICATE_SCHEMA,
            SqlState::DUPLICATE_TABLE,
            SqlState::UNDEFINED_TABLE,
        ]
        .contains(c)
    })
}

/// Applies `version` in one transaction under the migrations' lock, unless applied.
async fn apply(
    client: &mut Client,
    schema: &str,
    version: i32,
    sql: &str,
) -> Result<Applied, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE IF NOT EXISTS {schema}.migrations (
             version int PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         );"
    ))
    .await?;
    let newest: Option<i32> = tx
        .query_one(
            &format!("SELECT max(version) FROM {schema}.migrations"),
            &[],
        )
        .await?
        .get(0);
    if let Some(n) = newest
        && n > latest()
    {
        return Ok(Applied::Newer(n));
    }
    if newest.is_some_and(|n| n >= version) {
        tx.commit().await?;
        return Ok(Applied::Before);
    }
    tx.batch_execute(&sql.replace("{schema}", schema)).await?;
    tx.execute(
        &format!("INSERT INTO {schema}.migrations (version) VALUES ($1)"),
        &[&version],
    )
    .await?;
    tx.commit().await?;
    Ok(Applied::Now)
}
