//! The PostgreSQL backend of the journal (tokio-postgres; TLS as the connection string's
//! `sslmode` asks, through [`crate::ha::connect::Connector`]), for two or three
//! instances on one database with exactly one acting (issue 16).
//!
//! [`Backend`] is synchronous (the writer is a thread of its own), tokio-postgres is
//! not: the backend owns a current-thread tokio runtime and one connection whose task
//! runs on it, and each method blocks on its statements there (what the synchronous
//! `postgres` crate does). So it must never be called from inside an async runtime;
//! it answers an error if it is.
//!
//! The same records and semantics as [`SqliteBackend`](super::SqliteBackend), in the
//! tables `src/ha/schema.rs` migrates (applied by [`PostgresBackend::connect`], under
//! that module's lock: two instances starting together do not race them), in the
//! configured schema. Differences, all of them:
//! - every commit is durable (PostgreSQL's `synchronous_commit` fsyncs the WAL), so
//!   [`Backend::step_durable`] is [`Backend::step`];
//! - a group (`begin_group` .. `end_group`) is one transaction, as in SQLite; each
//!   write in it runs under a savepoint, pipelined with the write (no extra round
//!   trip), because a failed statement aborts a whole PostgreSQL transaction while
//!   SQLite's fails alone: a failed write is undone alone and the group goes on. Should
//!   undoing it fail too (the connection broke), the whole group fails at `end_group`;
//!   never is a write reported stored that was not;
//! - [`Backend::step_fenced`] checks the lease (see [`crate::ha::lease::fenced_step`]):
//!   a backend made with lease settings stores the row under the current epoch or
//!   refuses it ([`JournalError::Fenced`]); one made without stores it unfenced, as
//!   SQLite does;
//! - ties in `unfinished` (same `decided_ms`) and `finished_since` are ordered by
//!   conversation id (SQLite: by insertion);
//! - a broken connection fails the call that finds it broken; the next call outside a
//!   group connects again.
//!
//! Each write is one statement where SQLite's is one (single statements commit alone
//! outside a group); an outcome with its outbox entry is one transaction. Statements go
//! with typed parameters as unnamed statements: one round trip each, nothing prepared
//! that a transaction-mode pooler could lose.
//!
//! Errors never show the connection string (it may hold a password): connecting names
//! the host and database, statements carry the server's message.

use std::time::Duration;

use futures_util::future::{join, join3};
use tokio::runtime::{Handle, Runtime};
use tokio::task::JoinHandle;
use tokio_postgres::config::Host;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Config, Row};

use super::{
    Backend, DecisionRecord, EntryKind, HistoryEntry, HistoryQuery, JournalError, OutboxItem,
    OutcomeRecord, Sinks, Unfinished, history,
};
use crate::ha::HaError;
use crate::ha::connect::{Connector, Database};
use crate::ha::lease::LeaseSettings;

/// How long connecting may take when the connection string does not say
/// (`connect_timeout`): without a bound, a host that drops packets holds a start for
/// minutes.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a statement may take, on the server (`statement_timeout`) and here: past
/// it the session is dropped so the writer thread is never held by a silent server.
const ANSWER_WITHIN: Duration = Duration::from_secs(15);

/// The journal in a PostgreSQL schema.
pub struct PostgresBackend {
    /// Runs the connection's task and every statement; `None` only while dropping.
    rt: Option<Runtime>,
    /// Where to connect (again) and with which TLS; never shown.
    connector: Connector,
    /// The session; `None` until connected again after it broke.
    client: Option<Client>,
    /// The connection's task, awaited on drop so the session ends cleanly.
    conn_task: Option<JoinHandle<()>>,
    /// The statements (with the schema), and the lease.
    ctx: Ctx,
    /// Whether a group's transaction is open.
    group: Group,
    /// "host h, database d", for messages.
    at: String,
}

/// What every statement needs besides the client.
struct Ctx {
    sql: Sql,
    lease: Option<LeaseSettings>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Group {
    /// No group: each write commits alone.
    None,
    /// `BEGIN` went through; the writes since are in its transaction.
    Open,
    /// A write in the group failed and could not be undone alone: `end_group` rolls the
    /// transaction back and fails.
    Broken,
}

/// How a write is made atomic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// One statement (or a read): alone it commits alone.
    One,
    /// Several statements: alone they are a transaction of their own.
    Many,
}

/// A failed statement, already in words safe to show.
struct Fail(JournalError);

impl From<tokio_postgres::Error> for Fail {
    fn from(e: tokio_postgres::Error) -> Self {
        Fail(pg(e))
    }
}

impl From<HaError> for Fail {
    fn from(e: HaError) -> Self {
        Fail(JournalError::Storage(e.to_string()))
    }
}

/// A statement's error: the server's message and SQLSTATE, or the driver's words (the
/// I/O error; tokio-postgres never puts the connection string in them).
fn pg(e: tokio_postgres::Error) -> JournalError {
    JournalError::Storage(format!("PostgreSQL: {}", words(&e)))
}

/// The words of [`pg`]: the server's message, or the driver's with its cause (`error
/// connecting to server: Connection refused`; an I/O or TLS error, never the string).
fn words(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => crate::ha::connect::error_words(e),
    }
}

/// The SQL of every statement, with the schema written in.
struct Sql {
    decision: String,
    step: String,
    outcome: String,
    outcome_fed: String,
    outbox_insert: String,
    outbox_due: String,
    outbox_done: String,
    outbox_retry: String,
    outbox_pending: String,
    intake: String,
    unfinished: String,
    finished_since: String,
    history: String,
    prune: String,
}

impl Sql {
    /// Every statement, written out once for the schema `s`. Long because it is the
    /// backend's SQL in one place, one statement after another (split, a reader would
    /// hunt for each); each is short.
    fn new(s: &str) -> Sql {
        Sql {
            // A conversation is decided once: an open decision stays as it is (the same
            // decision again, e.g. resumed after a restart); a finished one decided again
            // (after its tombstone went) starts a fresh record without its old steps.
            decision: format!(
                "WITH finished AS (
                    SELECT 1 FROM {s}.decisions WHERE conversation_id = $1 AND outcome IS NOT NULL
                 ), gone AS (
                    DELETE FROM {s}.steps
                    WHERE conversation_id = $1 AND EXISTS (SELECT 1 FROM finished)
                 )
                 INSERT INTO {s}.decisions AS d
                    (conversation_id, rule, intent, queue_id, customer_id, source, watch,
                     deferred, decided_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                 ON CONFLICT (conversation_id) DO UPDATE SET
                    rule = EXCLUDED.rule, intent = EXCLUDED.intent, queue_id = EXCLUDED.queue_id,
                    customer_id = EXCLUDED.customer_id, source = EXCLUDED.source,
                    watch = EXCLUDED.watch, deferred = EXCLUDED.deferred,
                    decided_ms = EXCLUDED.decided_ms, outcome = NULL, outcome_ms = NULL,
                    reason = NULL, correlation_id = NULL, requests = NULL, latency_ms = NULL
                 WHERE d.outcome IS NOT NULL"
            ),
            // In a group every step names the instance that wrote it and the epoch it
            // held then (none once it lost the lease); one instance on PostgreSQL
            // (no lease) writes neither.
            step: format!(
                "INSERT INTO {s}.steps (conversation_id, at_ms, step, epoch, instance)
                 SELECT $1, $2, $3,
                        (SELECT l.epoch FROM {s}.lease l WHERE l.name = $4 AND l.holder = $5),
                        $5"
            ),
            outcome: format!(
                "UPDATE {s}.decisions SET outcome = $2, outcome_ms = $3, reason = $4,
                        correlation_id = $5, requests = $6, latency_ms = $7
                 WHERE conversation_id = $1"
            ),
            outcome_fed: format!(
                "UPDATE {s}.decisions SET outcome = $2, outcome_ms = $3, reason = $4,
                        correlation_id = $5, requests = $6, latency_ms = $7
                 WHERE conversation_id = $1
                 RETURNING rule, intent, source, queue_id, decided_ms"
            ),
            outbox_insert: format!(
                "INSERT INTO {s}.outbox (key, payload, created_ms, http_pending, file_pending,
                    next_ms) VALUES ($1, $2, $3, $4, $5, $3)
                 ON CONFLICT (key) DO NOTHING"
            ),
            outbox_due: format!(
                "SELECT id, key, payload, http_pending, file_pending, attempts FROM {s}.outbox
                 WHERE (http_pending OR file_pending) AND next_ms <= $1
                 ORDER BY next_ms, id LIMIT $2"
            ),
            outbox_done: format!(
                "UPDATE {s}.outbox SET http_pending = http_pending AND NOT $2,
                        file_pending = file_pending AND NOT $3 WHERE id = $1"
            ),
            outbox_retry: format!(
                "UPDATE {s}.outbox SET attempts = attempts + 1, next_ms = $2, last_error = $3
                 WHERE id = $1"
            ),
            outbox_pending: format!(
                "SELECT count(*) FROM {s}.outbox WHERE http_pending OR file_pending"
            ),
            intake: format!(
                "INSERT INTO {s}.intake (conversation_id, at_ms, intent, answer)
                 VALUES ($1, $2, $3, $4)"
            ),
            // One statement (one snapshot): each open decision with its steps in order.
            unfinished: format!(
                "SELECT d.conversation_id, d.rule, d.intent, d.queue_id, d.customer_id, d.source,
                        d.watch, d.deferred, d.decided_ms,
                        coalesce((SELECT array_agg(st.step ORDER BY st.id) FROM {s}.steps st
                                  WHERE st.conversation_id = d.conversation_id),
                                 ARRAY[]::text[])
                 FROM {s}.decisions d WHERE d.outcome IS NULL
                 ORDER BY d.decided_ms, d.conversation_id"
            ),
            finished_since: format!(
                "SELECT conversation_id FROM {s}.decisions WHERE outcome_ms >= $1
                 ORDER BY outcome_ms, conversation_id"
            ),
            // One row shape for the four kinds; a column that does not apply is NULL (typed
            // in the first branch: PostgreSQL types a union's columns branch by branch).
            // Steps carry the lease epoch and instance they were fenced under.
            history: format!(
                "SELECT at, conversation_id, kind, rule, intent, source, queue_id, deferred,
                        step, outcome, requests, latency_ms, reason, correlation_id, answer,
                        epoch, instance
                 FROM (
                   SELECT decided_ms AS at, conversation_id, text 'decision' AS kind, rule,
                          intent, source, queue_id, deferred, NULL::text AS step,
                          NULL::text AS outcome, NULL::bigint AS requests,
                          NULL::bigint AS latency_ms, NULL::text AS reason,
                          NULL::text AS correlation_id, NULL::text AS answer,
                          NULL::bigint AS epoch, NULL::text AS instance, 0 AS ord,
                          0::bigint AS id
                   FROM {s}.decisions
                   UNION ALL
                   SELECT at_ms, conversation_id, 'step', NULL, NULL, NULL, NULL, NULL, step,
                          NULL, NULL, NULL, NULL, NULL, NULL, epoch, instance, 1, id
                   FROM {s}.steps
                   UNION ALL
                   SELECT outcome_ms, conversation_id, 'outcome', rule, intent, NULL, NULL,
                          NULL, NULL, outcome, requests, latency_ms, reason, correlation_id,
                          NULL, NULL, NULL, 2, 0
                   FROM {s}.decisions WHERE outcome IS NOT NULL
                   UNION ALL
                   SELECT at_ms, conversation_id, 'intake', NULL, intent, NULL, NULL, NULL,
                          NULL, NULL, NULL, NULL, NULL, NULL, answer, NULL, NULL, 1, id
                   FROM {s}.intake
                 ) AS h
                 WHERE at >= $1 AND ($2 IS NULL OR conversation_id = $2)
                   AND ($3 IS NULL OR conversation_id IN
                         (SELECT conversation_id FROM {s}.decisions
                          WHERE outcome = $3 AND outcome_ms >= $1))
                   AND (NOT $4 OR conversation_id IN
                         (SELECT conversation_id FROM {s}.decisions WHERE outcome IS NULL))
                 ORDER BY at, ord, id"
            ),
            // One statement: the finished closes past the cut with their steps, intake
            // calls past it, and delivered outbox entries past it (undelivered ones are
            // kept: at least once).
            prune: format!(
                "WITH d AS (
                    DELETE FROM {s}.decisions WHERE outcome IS NOT NULL AND outcome_ms < $1
                    RETURNING conversation_id
                 ), st AS (
                    DELETE FROM {s}.steps WHERE conversation_id IN (SELECT conversation_id FROM d)
                 ), i AS (
                    DELETE FROM {s}.intake WHERE at_ms < $1
                 ), o AS (
                    DELETE FROM {s}.outbox
                    WHERE created_ms < $1 AND NOT http_pending AND NOT file_pending
                 )
                 SELECT count(*) FROM d"
            ),
        }
    }
}

/// The parameters of a statement, each with its type.
type Params<'a> = [(&'a (dyn ToSql + Sync), Type)];

impl PostgresBackend {
    /// Connects (`conn_str`: a libpq key=value string or a `postgresql://` URL; its
    /// certificate, if checked, against the system's roots), applies the migrations not
    /// applied yet to `schema`, and answers a backend on that schema. With `lease`,
    /// [`Backend::step_fenced`] checks its epoch; its schema must be `schema`. Call from
    /// a thread outside any async runtime.
    pub fn connect(
        conn_str: &str,
        schema: &str,
        lease: Option<LeaseSettings>,
    ) -> Result<Self, JournalError> {
        Self::connect_to(&Database::from(conn_str), schema, lease)
    }

    /// [`connect`](Self::connect) to `database` (`[ha]`'s connection string and
    /// `ca_file`).
    pub fn connect_to(
        database: &Database,
        schema: &str,
        lease: Option<LeaseSettings>,
    ) -> Result<Self, JournalError> {
        let mut b = Self::new(database, schema, lease)?;
        b.reconnect()?;
        if let (Some(rt), Some(client)) = (&b.rt, &mut b.client) {
            rt.block_on(crate::ha::schema::migrate(client, schema))
                .map_err(|e| JournalError::Storage(format!("{}: {e}", b.at)))?;
        }
        Ok(b)
    }

    /// Connects to the journal the group's instances keep in `schema`, changing nothing
    /// (for `history`, while they run): no migration is applied, and a schema without
    /// the journal's tables is an error that says so. Call from a thread outside any
    /// async runtime.
    pub fn open_read(database: &Database, schema: &str) -> Result<Self, JournalError> {
        let mut b = Self::new(database, schema, None)?;
        b.reconnect()?;
        let version = match (&b.rt, &b.client) {
            (Some(rt), Some(client)) => rt
                .block_on(async {
                    tokio::time::timeout(ANSWER_WITHIN, crate::ha::schema::applied(client, schema))
                        .await
                })
                .map_err(|_| {
                    JournalError::Storage(format!(
                        "the PostgreSQL server ({}) did not answer within {} s",
                        b.at,
                        ANSWER_WITHIN.as_secs()
                    ))
                })?
                .map_err(|e| JournalError::Storage(format!("{}: {e}", b.at)))?,
            _ => return Err(JournalError::Stopped),
        };
        if version.is_none_or(|v| v < 1) {
            return Err(JournalError::Storage(format!(
                "no journal in schema {schema} ({}): no instance of the group has started on \
                 it yet (the first one creates its tables)",
                b.at
            )));
        }
        Ok(b)
    }

    /// The backend, not connected yet: the connection string parsed and bounded, its
    /// TLS set up, the statements written for `schema`, the runtime made.
    fn new(
        database: &Database,
        schema: &str,
        lease: Option<LeaseSettings>,
    ) -> Result<Self, JournalError> {
        let bad = |s: String| JournalError::Storage(s);
        crate::ha::valid_schema(schema).map_err(|e| bad(e.to_string()))?;
        if let Some(l) = &lease
            && l.schema != schema
        {
            return Err(bad(format!(
                "the lease's schema {} is not the journal's {schema}: the fence checks the \
                 lease beside the steps",
                l.schema
            )));
        }
        not_in_runtime()?;
        // The string's errors name the option at fault, never its text.
        let mut connector = database
            .connector()
            .map_err(|e| bad(format!("PostgreSQL: {e}")))?;
        let config = connector.config_mut();
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        // A peer that vanished is noticed by TCP keepalives within about 30 s instead
        // of the kernel's two hours; a statement the server cannot finish is cut by it.
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(10));
        if config.get_options().is_none() {
            config.options(format!(
                "-c statement_timeout={}",
                ANSWER_WITHIN.as_millis()
            ));
        }
        if config.get_application_name().is_none() {
            config.application_name("genesys-closer journal");
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| {
                bad(format!(
                    "cannot start the PostgreSQL journal's runtime: {e}"
                ))
            })?;
        Ok(PostgresBackend {
            rt: Some(rt),
            at: place(connector.config()),
            connector,
            client: None,
            conn_task: None,
            ctx: Ctx {
                sql: Sql::new(schema),
                lease,
            },
            group: Group::None,
        })
    }

    /// Opens a session (replacing a broken one).
    fn reconnect(&mut self) -> Result<(), JournalError> {
        let Some(rt) = &self.rt else {
            return Err(JournalError::Stopped);
        };
        let (client, conn) = rt.block_on(self.connector.connect()).map_err(|e| {
            let why = match e {
                HaError::Db(why) => why,
                other => other.to_string(),
            };
            JournalError::Storage(format!("cannot connect to PostgreSQL ({}): {why}", self.at))
        })?;
        self.conn_task = Some(rt.spawn(async move {
            if let Err(e) = conn.await {
                tracing::warn!(error = %pg(e), "journal: the PostgreSQL connection ended");
            }
        }));
        self.client = Some(client);
        Ok(())
    }

    /// Runs `f` on the session, connecting again first if it broke outside a group
    /// (inside one, the group is lost: it fails).
    fn run<R>(&mut self, f: impl AsyncFnOnce(&Client, &Ctx) -> R) -> Result<R, JournalError> {
        not_in_runtime()?;
        if self.client.as_ref().is_none_or(Client::is_closed) {
            if self.group != Group::None {
                self.group = Group::Broken;
                return Err(JournalError::Storage(format!(
                    "the PostgreSQL connection ({}) broke inside a group: nothing of it is stored",
                    self.at
                )));
            }
            self.reconnect()?;
        }
        let answered = match (&self.rt, &self.client) {
            (Some(rt), Some(client)) => {
                // The timer is made inside the runtime (it needs its reactor).
                let ctx = &self.ctx;
                rt.block_on(async { tokio::time::timeout(ANSWER_WITHIN, f(client, ctx)).await })
            }
            _ => return Err(JournalError::Stopped),
        };
        match answered {
            Ok(r) => Ok(r),
            Err(_) => {
                // A server that does not answer (a black-holed network, a hung host) must
                // not hold the writer thread: this session is dropped and the next write
                // connects again (inside a group, the group is lost).
                self.client = None;
                if self.group != Group::None {
                    self.group = Group::Broken;
                }
                Err(JournalError::Storage(format!(
                    "the PostgreSQL server ({}) did not answer within {} s; the next write \
                     connects again",
                    self.at,
                    ANSWER_WITHIN.as_secs()
                )))
            }
        }
    }

    /// Runs a write (or a read) atomically: `One` alone commits alone, `Many` alone is a
    /// transaction of its own; inside a group either runs under a savepoint, so its
    /// failure undoes it alone and the group goes on (a failed statement would abort the
    /// whole transaction). The savepoint's statements are pipelined with a `One`.
    fn exec<T>(
        &mut self,
        shape: Shape,
        f: impl AsyncFnOnce(&Client, &Ctx) -> Result<T, Fail>,
    ) -> Result<T, JournalError> {
        let (open, close, undo) = match (self.group, shape) {
            (Group::Broken, _) => {
                return Err(JournalError::Storage(
                    "an earlier write of this group failed and could not be undone alone: \
                     nothing of the group is stored"
                        .into(),
                ));
            }
            (Group::None, Shape::One) => return self.run(f)?.map_err(|Fail(e)| e),
            (Group::None, Shape::Many) => ("BEGIN", "COMMIT", "ROLLBACK"),
            (Group::Open, _) => (
                "SAVEPOINT w",
                "RELEASE SAVEPOINT w",
                "ROLLBACK TO SAVEPOINT w; RELEASE SAVEPOINT w",
            ),
        };
        // Each future sends its request when first polled, and join polls in order: the
        // three go out in this order, in one write.
        let (r, undone) = self.run(async move |c: &Client, x: &Ctx| {
            let (o, r, cl) = match shape {
                Shape::One => join3(c.batch_execute(open), f(c, x), c.batch_execute(close)).await,
                Shape::Many => {
                    let (o, r) = join(c.batch_execute(open), f(c, x)).await;
                    let cl = match (&o, &r) {
                        (Ok(()), Ok(_)) => c.batch_execute(close).await,
                        _ => Ok(()),
                    };
                    (o, r, cl)
                }
            };
            match (o, r, cl) {
                (Ok(()), Ok(v), Ok(())) => (Ok(v), Ok(())),
                (o, r, cl) => {
                    let e = match (r, o, cl) {
                        (Err(Fail(e)), _, _) => e,
                        (_, Err(e), _) | (_, _, Err(e)) => pg(e),
                        (Ok(_), Ok(()), Ok(())) => unreachable!("matched above"),
                    };
                    (Err(e), c.batch_execute(undo).await)
                }
            }
        })?;
        if undone.is_err() && self.group == Group::Open {
            self.group = Group::Broken;
        }
        r
    }
}

impl Drop for PostgresBackend {
    fn drop(&mut self) {
        // Dropping the client lets the connection say goodbye (an open group is rolled
        // back); that takes one more turn of the runtime, which blocks, so not from
        // inside another runtime (there a runtime is let go without waiting).
        drop(self.client.take());
        let Some(rt) = self.rt.take() else { return };
        if Handle::try_current().is_ok() {
            rt.shutdown_background();
            return;
        }
        if let Some(task) = self.conn_task.take() {
            let _ = rt.block_on(async { tokio::time::timeout(Duration::from_secs(1), task).await });
        }
    }
}

/// The backend blocks on its own runtime, which panics inside another: answer an error.
fn not_in_runtime() -> Result<(), JournalError> {
    match Handle::try_current() {
        Err(_) => Ok(()),
        Ok(_) => Err(JournalError::Storage(
            "the PostgreSQL journal was called from inside an async runtime; it blocks, so it \
             runs on a thread of its own (the journal's writer, or spawn_blocking)"
                .into(),
        )),
    }
}

/// "host h, database d" from the configuration (no user, no password).
fn place(config: &Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            Host::Tcp(name) => name.clone(),
            #[cfg(unix)]
            Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    let host = if hosts.is_empty() {
        "the default host".to_owned()
    } else {
        format!("host {}", hosts.join(","))
    };
    match config.get_dbname() {
        Some(db) => format!("{host}, database {db}"),
        None => host,
    }
}

fn decision_of(r: &Row) -> Result<DecisionRecord, tokio_postgres::Error> {
    Ok(DecisionRecord {
        conversation_id: r.try_get(0)?,
        rule: r.try_get(1)?,
        intent: r.try_get(2)?,
        queue_id: r.try_get(3)?,
        customer_id: r.try_get(4)?,
        source: r.try_get(5)?,
        watch: r.try_get(6)?,
        deferred: r.try_get(7)?,
        decided_ms: r.try_get(8)?,
    })
}

fn history_of(r: &Row) -> Result<HistoryEntry, tokio_postgres::Error> {
    let kind = EntryKind::of_column(r.try_get::<_, &str>(2)?);
    Ok(history::entry(
        kind,
        r.try_get(0)?,
        r.try_get(1)?,
        history::Fields {
            rule: r.try_get(3)?,
            intent: r.try_get(4)?,
            source: r.try_get(5)?,
            queue_id: r.try_get(6)?,
            deferred: r.try_get(7)?,
            step: r.try_get(8)?,
            outcome: r.try_get(9)?,
            requests: r.try_get(10)?,
            latency_ms: r.try_get(11)?,
            reason: r.try_get(12)?,
            correlation_id: r.try_get(13)?,
            answer: r.try_get(14)?,
            epoch: r.try_get(15)?,
            instance: r.try_get(16)?,
        },
    ))
}

impl Backend for PostgresBackend {
    fn begin_group(&mut self) -> Result<(), JournalError> {
        if self.group != Group::None {
            return Err(JournalError::Storage("a group is open already".into()));
        }
        self.run(async |c, _| c.batch_execute("BEGIN").await)?
            .map_err(pg)?;
        self.group = Group::Open;
        Ok(())
    }

    fn end_group(&mut self) -> Result<(), JournalError> {
        match self.group {
            Group::None => Ok(()),
            Group::Open => {
                // On a broken connection `run` fails (the group is lost), never commits
                // on a fresh session.
                let r = self.run(async |c, _| c.batch_execute("COMMIT").await);
                self.group = Group::None;
                r?.map_err(pg)
            }
            Group::Broken => {
                let _ = self.run(async |c, _| c.batch_execute("ROLLBACK").await);
                self.group = Group::None;
                Err(JournalError::Storage(
                    "a write of the group failed and could not be undone alone: nothing of \
                     the group is stored"
                        .into(),
                ))
            }
        }
    }

    fn decision(&mut self, d: &DecisionRecord) -> Result<(), JournalError> {
        self.exec(Shape::One, async |c, x| {
            let p: &Params = &[
                (&d.conversation_id, Type::TEXT),
                (&d.rule, Type::TEXT),
                (&d.intent, Type::TEXT),
                (&d.queue_id, Type::TEXT),
                (&d.customer_id, Type::TEXT),
                (&d.source, Type::TEXT),
                (&d.watch, Type::BOOL),
                (&d.deferred, Type::BOOL),
                (&d.decided_ms, Type::INT8),
            ];
            c.execute_typed(&x.sql.decision, p).await?;
            Ok(())
        })
    }

    fn step(&mut self, conversation_id: &str, step: &str, at_ms: i64) -> Result<(), JournalError> {
        self.exec(Shape::One, async |c, x| {
            let name = x.lease.as_ref().map(|l| l.name.as_str());
            let instance = x.lease.as_ref().map(|l| l.instance.as_str());
            let p: &Params = &[
                (&conversation_id, Type::TEXT),
                (&at_ms, Type::INT8),
                (&step, Type::TEXT),
                (&name, Type::TEXT),
                (&instance, Type::TEXT),
            ];
            c.execute_typed(&x.sql.step, p).await?;
            Ok(())
        })
    }

    fn step_fenced(
        &mut self,
        conversation_id: &str,
        step: &str,
        at_ms: i64,
        epoch: i64,
    ) -> Result<(), JournalError> {
        if self.ctx.lease.is_none() {
            // No lease (one instance on PostgreSQL): nothing to fence against.
            return self.step_durable(conversation_id, step, at_ms);
        }
        let stored = self.exec(Shape::One, async |c, x| {
            let Some(lease) = &x.lease else {
                return Ok(false);
            };
            let stored =
                crate::ha::lease::fenced_step(c, lease, epoch, conversation_id, step, at_ms)
                    .await?;
            Ok(stored)
        })?;
        if stored {
            Ok(())
        } else {
            Err(JournalError::Fenced { epoch })
        }
    }

    fn outcome(&mut self, o: &OutcomeRecord, at_ms: i64, sinks: Sinks) -> Result<(), JournalError> {
        let fed = sinks.http || sinks.file;
        // The outcome and its outbox entry in one transaction: a crash keeps both or
        // neither, so every journalled outcome is delivered at least once.
        let shape = if fed { Shape::Many } else { Shape::One };
        self.exec(shape, async |c, x| {
            let p: &Params = &[
                (&o.conversation_id, Type::TEXT),
                (&o.outcome, Type::TEXT),
                (&at_ms, Type::INT8),
                (&o.reason, Type::TEXT),
                (&o.correlation_id, Type::TEXT),
                (&o.requests, Type::INT8),
                (&o.latency_ms, Type::INT8),
            ];
            if !fed {
                c.execute_typed(&x.sql.outcome, p).await?;
                return Ok(());
            }
            let Some(row) = c
                .query_typed(&x.sql.outcome_fed, p)
                .await?
                .into_iter()
                .next()
            else {
                return Ok(());
            };
            let (rule, intent, source): (String, String, String) =
                (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
            let queue_id: Option<String> = row.try_get(3)?;
            let decided_ms: i64 = row.try_get(4)?;
            let key = format!("{}:{decided_ms}", o.conversation_id);
            let payload = super::feed_payload(
                &key,
                o,
                &rule,
                &intent,
                &source,
                queue_id.as_deref(),
                decided_ms,
                at_ms,
            );
            let p: &Params = &[
                (&key, Type::TEXT),
                (&payload, Type::TEXT),
                (&at_ms, Type::INT8),
                (&sinks.http, Type::BOOL),
                (&sinks.file, Type::BOOL),
            ];
            c.execute_typed(&x.sql.outbox_insert, p).await?;
            Ok(())
        })
    }

    fn outbox_due(&mut self, now_ms: i64, limit: usize) -> Result<Vec<OutboxItem>, JournalError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.exec(Shape::One, async |c, x| {
            let p: &Params = &[(&now_ms, Type::INT8), (&limit, Type::INT8)];
            let rows = c.query_typed(&x.sql.outbox_due, p).await?;
            let items = rows
                .iter()
                .map(|r| {
                    Ok(OutboxItem {
                        id: r.try_get(0)?,
                        key: r.try_get(1)?,
                        payload: r.try_get(2)?,
                        http_pending: r.try_get(3)?,
                        file_pending: r.try_get(4)?,
                        attempts: r.try_get(5)?,
                    })
                })
                .collect::<Result<_, tokio_postgres::Error>>()?;
            Ok(items)
        })
    }

    fn outbox_done(&mut self, id: i64, http: bool, file: bool) -> Result<(), JournalError> {
        self.exec(Shape::One, async |c, x| {
            let p: &Params = &[(&id, Type::INT8), (&http, Type::BOOL), (&file, Type::BOOL)];
            c.execute_typed(&x.sql.outbox_done, p).await?;
            Ok(())
        })
    }

    fn outbox_retry(&mut self, id: i64, next_ms: i64, error: &str) -> Result<(), JournalError> {
        self.exec(Shape::One, async |c, x| {
            let p: &Params = &[
                (&id, Type::INT8),
                (&next_ms, Type::INT8),
                (&error, Type::TEXT),
            ];
            c.execute_typed(&x.sql.outbox_retry, p).await?;
            Ok(())
        })
    }

    fn outbox_pending(&mut self) -> Result<usize, JournalError> {
        self.exec(Shape::One, async |c, x| {
            let n: i64 = c
                .query_typed(&x.sql.outbox_pending, &[])
                .await?
                .first()
                .map_or(Ok(0), |r| r.try_get(0))?;
            Ok(n as usize)
        })
    }

    fn intake(
        &mut self,
        conversation_id: &str,
        intent: Option<&str>,
        answer: &str,
        at_ms: i64,
    ) -> Result<(), JournalError> {
        self.exec(Shape::One, async |c, x| {
            let p: &Params = &[
                (&conversation_id, Type::TEXT),
                (&at_ms, Type::INT8),
                (&intent, Type::TEXT),
                (&answer, Type::TEXT),
            ];
            c.execute_typed(&x.sql.intake, p).await?;
            Ok(())
        })
    }

    fn unfinished(&mut self) -> Result<Vec<Unfinished>, JournalError> {
        self.exec(Shape::One, async |c, x| {
            let rows = c.query_typed(&x.sql.unfinished, &[]).await?;
            let all = rows
                .iter()
                .map(|r| {
                    Ok(Unfinished {
                        decision: decision_of(r)?,
                        steps: r.try_get(9)?,
                    })
                })
                .collect::<Result<_, tokio_postgres::Error>>()?;
            Ok(all)
        })
    }

    fn finished_since(&mut self, since_ms: i64) -> Result<Vec<String>, JournalError> {
        self.exec(Shape::One, async |c, x| {
            let rows = c
                .query_typed(&x.sql.finished_since, &[(&since_ms, Type::INT8)])
                .await?;
            let ids = rows
                .iter()
                .map(|r| r.try_get(0))
                .collect::<Result<_, tokio_postgres::Error>>()?;
            Ok(ids)
        })
    }

    fn history_query(&mut self, q: &HistoryQuery<'_>) -> Result<Vec<HistoryEntry>, JournalError> {
        self.exec(Shape::One, async |c, x| {
            let p: &Params = &[
                (&q.since_ms, Type::INT8),
                (&q.conversation_id, Type::TEXT),
                (&q.outcome, Type::TEXT),
                (&q.unfinished, Type::BOOL),
            ];
            let rows = c.query_typed(&x.sql.history, p).await?;
            let entries = rows
                .iter()
                .map(history_of)
                .collect::<Result<_, tokio_postgres::Error>>()?;
            Ok(entries)
        })
    }

    fn prune(&mut self, before_ms: i64) -> Result<usize, JournalError> {
        self.exec(Shape::One, async |c, x| {
            let n: i64 = c
                .query_typed(&x.sql.prune, &[(&before_ms, Type::INT8)])
                .await?
                .first()
                .map_or(Ok(0), |r| r.try_get(0))?;
            Ok(n as usize)
        })
    }
}
