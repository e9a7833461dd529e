//! The SQLite backend of the journal (rusqlite, SQLite compiled in).
//!
//! WAL mode: `history` reads while the daemon writes, and a crash never corrupts the
//! file. `synchronous = NORMAL` for most records: in WAL mode a commit is then durable
//! against the process being killed (SIGKILL, a crash: the WAL is in the OS's hands),
//! and only an OS crash or power loss can roll back the last commits. That is enough for
//! every record whose loss is harmless to repeat: a disconnect or teardown sent again
//! is idempotent, a decision or outcome journalled again changes nothing. And it keeps
//! an fsync (milliseconds on a disk) out of the path between a decision and its
//! disconnect. The one record whose loss could do harm is "about to send" of a
//! farewell: lost to a power cut after the message went out, a restart would send it
//! again. It is written with `synchronous = FULL` ([`Backend::step_durable`]): that
//! commit, and every one before it, reaches the disk before the farewell is sent.

use std::path::Path;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use super::{
    Backend, DecisionRecord, EntryKind, HistoryEntry, HistoryQuery, JournalError, OutboxItem,
    OutcomeRecord, Sinks, Unfinished, history,
};

const SCHEMA_VERSION: i64 = 2;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS decisions (
    conversation_id TEXT PRIMARY KEY,
    rule            TEXT NOT NULL,
    intent          TEXT NOT NULL,
    queue_id        TEXT,
    customer_id     TEXT,
    source          TEXT NOT NULL,
    watch           INTEGER NOT NULL,
    deferred        INTEGER NOT NULL,
    decided_ms      INTEGER NOT NULL,
    outcome         TEXT,
    outcome_ms      INTEGER,
    reason          TEXT,
    correlation_id  TEXT,
    requests        INTEGER,
    latency_ms      INTEGER
);
CREATE INDEX IF NOT EXISTS decisions_open ON decisions(decided_ms) WHERE outcome IS NULL;
CREATE INDEX IF NOT EXISTS decisions_finished ON decisions(outcome_ms);
CREATE TABLE IF NOT EXISTS steps (
    id              INTEGER PRIMARY KEY,
    conversation_id TEXT NOT NULL,
    at_ms           INTEGER NOT NULL,
    step            TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS steps_conversation ON steps(conversation_id, id);
CREATE TABLE IF NOT EXISTS intake (
    id              INTEGER PRIMARY KEY,
    conversation_id TEXT NOT NULL,
    at_ms           INTEGER NOT NULL,
    intent          TEXT,
    answer          TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS intake_at ON intake(at_ms);
CREATE TABLE IF NOT EXISTS outbox (
    id              INTEGER PRIMARY KEY,
    key             TEXT NOT NULL UNIQUE,
    payload         TEXT NOT NULL,
    created_ms      INTEGER NOT NULL,
    http_pending    INTEGER NOT NULL,
    file_pending    INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_ms         INTEGER NOT NULL,
    last_error      TEXT
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox(next_ms) WHERE http_pending OR file_pending;
";

fn storage(e: rusqlite::Error) -> JournalError {
    JournalError::Storage(e.to_string())
}

/// The journal in one SQLite file.
pub struct SqliteBackend {
    db: Connection,
}

impl SqliteBackend {
    /// Opens (creating if needed) the journal for writing.
    pub fn open(path: &Path) -> Result<Self, JournalError> {
        let db = Connection::open(path).map_err(storage)?;
        db.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(storage)?;
        let mode: String = db
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(storage)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(JournalError::Storage(format!(
                "cannot use WAL mode on {} (got {mode})",
                path.display()
            )));
        }
        // Checkpoints (copying the WAL into the database, with an fsync of each) run on
        // their own thread ([`checkpoint`]), not inside a commit the writer makes: an
        // automatic checkpoint would hold up the "about to send" step a disconnect
        // waits for by the length of two fsyncs. The writer's own automatic checkpoint
        // stays as a backstop, at 10,000 pages (about 40 MB of WAL), should the
        // checkpoint thread fall behind.
        db.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = 10000;")
            .map_err(storage)?;
        let version: i64 = db
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(storage)?;
        if version > SCHEMA_VERSION {
            return Err(JournalError::Storage(format!(
                "{} was written by a newer genesys-closer (schema {version}, this one knows {SCHEMA_VERSION})",
                path.display()
            )));
        }
        if version == 1 {
            // Version 2 added the latency of each outcome and the outbox.
            db.execute_batch("ALTER TABLE decisions ADD COLUMN latency_ms INTEGER;")
                .map_err(storage)?;
        }
        db.execute_batch(SCHEMA).map_err(storage)?;
        db.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION};"))
            .map_err(storage)?;
        // A write test, so an unwritable directory is found at start-up, not mid-close.
        db.execute_batch("BEGIN IMMEDIATE; COMMIT;")
            .map_err(storage)?;
        Ok(SqliteBackend { db })
    }

    /// Opens a second connection for [`checkpoint`](Self::checkpoint) calls.
    pub fn open_checkpointer(path: &Path) -> Result<Self, JournalError> {
        Self::open_existing(path, OpenFlags::SQLITE_OPEN_READ_WRITE)
    }

    /// Copies what it can of the WAL into the database without waiting for the
    /// writer or readers (`PASSIVE`).
    pub fn checkpoint(&self) -> Result<(), JournalError> {
        self.db
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
            .map_err(storage)
    }

    /// Opens the journal for reading only.
    pub fn open_read_only(path: &Path) -> Result<Self, JournalError> {
        Self::open_existing(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
    }

    /// A further connection to a journal the writer has created.
    fn open_existing(path: &Path, mode: OpenFlags) -> Result<Self, JournalError> {
        let db = Connection::open_with_flags(path, mode | OpenFlags::SQLITE_OPEN_NO_MUTEX)
            .map_err(storage)?;
        db.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(storage)?;
        Ok(SqliteBackend { db })
    }

    fn steps_of(&self, conversation_id: &str) -> Result<Vec<String>, JournalError> {
        let mut st = self
            .db
            .prepare_cached("SELECT step FROM steps WHERE conversation_id = ?1 ORDER BY id")
            .map_err(storage)?;
        let rows = st
            .query_map([conversation_id], |r| r.get::<_, String>(0))
            .map_err(storage)?;
        rows.collect::<Result<_, _>>().map_err(storage)
    }
}

impl Backend for SqliteBackend {
    fn begin_group(&mut self) -> Result<(), JournalError> {
        self.db
            .prepare_cached("BEGIN")
            .and_then(|mut st| st.execute([]))
            .map(drop)
            .map_err(storage)
    }

    fn end_group(&mut self) -> Result<(), JournalError> {
        let r = self
            .db
            .prepare_cached("COMMIT")
            .and_then(|mut st| st.execute([]))
            .map(drop)
            .map_err(storage);
        if r.is_err() && !self.db.is_autocommit() {
            let _ = self.db.execute_batch("ROLLBACK");
        }
        r
    }

    fn decision(&mut self, d: &DecisionRecord) -> Result<(), JournalError> {
        // A conversation is decided once; a finished one decided again (after its
        // tombstone went) starts a fresh record.
        // A savepoint: its own transaction alone, nested in the writer's group.
        let tx = self.db.savepoint().map_err(storage)?;
        let finished: Option<bool> = tx
            .prepare_cached("SELECT outcome IS NOT NULL FROM decisions WHERE conversation_id = ?1")
            .map_err(storage)?
            .query_row([&d.conversation_id], |r| r.get(0))
            .optional()
            .map_err(storage)?;
        if finished == Some(false) {
            // Still open: this is the same decision again (e.g. resumed after a restart).
            return tx.commit().map_err(storage);
        }
        if finished == Some(true) {
            tx.prepare_cached("DELETE FROM steps WHERE conversation_id = ?1")
                .map_err(storage)?
                .execute([&d.conversation_id])
                .map_err(storage)?;
        }
        tx.prepare_cached(
            "INSERT OR REPLACE INTO decisions
               (conversation_id, rule, intent, queue_id, customer_id, source, watch, deferred,
                decided_ms, outcome, outcome_ms, reason, correlation_id, requests)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, NULL, NULL, NULL, NULL, NULL)",
        )
        .map_err(storage)?
        .execute(params![
            d.conversation_id,
            d.rule,
            d.intent,
            d.queue_id,
            d.customer_id,
            d.source,
            d.watch,
            d.deferred,
            d.decided_ms
        ])
        .map_err(storage)?;
        tx.commit().map_err(storage)
    }

    fn step(&mut self, conversation_id: &str, step: &str, at_ms: i64) -> Result<(), JournalError> {
        self.db
            .prepare_cached("INSERT INTO steps (conversation_id, at_ms, step) VALUES (?1, ?2, ?3)")
            .map_err(storage)?
            .execute(params![conversation_id, at_ms, step])
            .map_err(storage)?;
        Ok(())
    }

    fn step_durable(
        &mut self,
        conversation_id: &str,
        step: &str,
        at_ms: i64,
    ) -> Result<(), JournalError> {
        self.db
            .execute_batch("PRAGMA synchronous = FULL;")
            .map_err(storage)?;
        let r = self.step(conversation_id, step, at_ms);
        let back = self
            .db
            .execute_batch("PRAGMA synchronous = NORMAL;")
            .map_err(storage);
        r.and(back)
    }

    fn outcome(&mut self, o: &OutcomeRecord, at_ms: i64, sinks: Sinks) -> Result<(), JournalError> {
        // The outcome and its outbox entry in one transaction: a crash keeps both or
        // neither, so every journalled outcome is delivered at least once.
        // A savepoint: its own transaction alone, nested in the writer's group.
        let tx = self.db.savepoint().map_err(storage)?;
        tx.prepare_cached(
            "UPDATE decisions SET outcome = ?2, outcome_ms = ?3, reason = ?4,
                    correlation_id = ?5, requests = ?6, latency_ms = ?7
             WHERE conversation_id = ?1",
        )
        .map_err(storage)?
        .execute(params![
            o.conversation_id,
            o.outcome,
            at_ms,
            o.reason,
            o.correlation_id,
            o.requests,
            o.latency_ms
        ])
        .map_err(storage)?;
        if sinks.http || sinks.file {
            let row = tx
                .prepare_cached(
                    "SELECT rule, intent, source, queue_id, decided_ms FROM decisions
                     WHERE conversation_id = ?1",
                )
                .map_err(storage)?
                .query_row([&o.conversation_id], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, Option<String>>(3)?,
                        r.get::<_, i64>(4)?,
                    ))
                })
                .optional()
                .map_err(storage)?;
            if let Some((rule, intent, source, queue_id, decided_ms)) = row {
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
                tx.prepare_cached(
                    "INSERT OR IGNORE INTO outbox (key, payload, created_ms, http_pending,
                        file_pending, next_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?3)",
                )
                .map_err(storage)?
                .execute(params![key, payload, at_ms, sinks.http, sinks.file])
                .map_err(storage)?;
            }
        }
        tx.commit().map_err(storage)
    }

    fn outbox_due(&mut self, now_ms: i64, limit: usize) -> Result<Vec<OutboxItem>, JournalError> {
        let mut st = self
            .db
            .prepare_cached(
                "SELECT id, key, payload, http_pending, file_pending, attempts FROM outbox
                 WHERE (http_pending OR file_pending) AND next_ms <= ?1
                 ORDER BY next_ms, id LIMIT ?2",
            )
            .map_err(storage)?;
        let rows = st
            .query_map(params![now_ms, limit as i64], |r| {
                Ok(OutboxItem {
                    id: r.get(0)?,
                    key: r.get(1)?,
                    payload: r.get(2)?,
                    http_pending: r.get(3)?,
                    file_pending: r.get(4)?,
                    attempts: r.get(5)?,
                })
            })
            .map_err(storage)?;
        rows.collect::<Result<_, _>>().map_err(storage)
    }

    fn outbox_done(&mut self, id: i64, http: bool, file: bool) -> Result<(), JournalError> {
        self.db
            .execute(
                "UPDATE outbox SET http_pending = http_pending AND NOT ?2,
                        file_pending = file_pending AND NOT ?3 WHERE id = ?1",
                params![id, http, file],
            )
            .map_err(storage)?;
        Ok(())
    }

    fn outbox_retry(&mut self, id: i64, next_ms: i64, error: &str) -> Result<(), JournalError> {
        self.db
            .execute(
                "UPDATE outbox SET attempts = attempts + 1, next_ms = ?2, last_error = ?3
                 WHERE id = ?1",
                params![id, next_ms, error],
            )
            .map_err(storage)?;
        Ok(())
    }

    fn outbox_pending(&mut self) -> Result<usize, JournalError> {
        self.db
            .query_row(
                "SELECT COUNT(*) FROM outbox WHERE http_pending OR file_pending",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as usize)
            .map_err(storage)
    }

    fn intake(
        &mut self,
        conversation_id: &str,
        intent: Option<&str>,
        answer: &str,
        at_ms: i64,
    ) -> Result<(), JournalError> {
        self.db
            .prepare_cached("INSERT INTO intake (conversation_id, at_ms, intent, answer) VALUES (?1, ?2, ?3, ?4)")
                .map_err(storage)?
                .execute(
                params![conversation_id, at_ms, intent, answer],
            )
            .map_err(storage)?;
        Ok(())
    }

    fn unfinished(&mut self) -> Result<Vec<Unfinished>, JournalError> {
        let decisions: Vec<DecisionRecord> = {
            let mut st = self
                .db
                .prepare(
                    "SELECT conversation_id, rule, intent, queue_id, customer_id, source, watch,
                            deferred, decided_ms
                     FROM decisions WHERE outcome IS NULL ORDER BY decided_ms",
                )
                .map_err(storage)?;
            let rows = st
                .query_map([], |r| {
                    Ok(DecisionRecord {
                        conversation_id: r.get(0)?,
                        rule: r.get(1)?,
                        intent: r.get(2)?,
                        queue_id: r.get(3)?,
                        customer_id: r.get(4)?,
                        source: r.get(5)?,
                        watch: r.get(6)?,
                        deferred: r.get(7)?,
                        decided_ms: r.get(8)?,
                    })
                })
                .map_err(storage)?;
            rows.collect::<Result<_, _>>().map_err(storage)?
        };
        decisions
            .into_iter()
            .map(|d| {
                let steps = self.steps_of(&d.conversation_id)?;
                Ok(Unfinished { decision: d, steps })
            })
            .collect()
    }

    fn finished_since(&mut self, since_ms: i64) -> Result<Vec<String>, JournalError> {
        let mut st = self
            .db
            .prepare("SELECT conversation_id FROM decisions WHERE outcome_ms >= ?1")
            .map_err(storage)?;
        let rows = st
            .query_map([since_ms], |r| r.get::<_, String>(0))
            .map_err(storage)?;
        rows.collect::<Result<_, _>>().map_err(storage)
    }

    fn history_query(&mut self, q: &HistoryQuery<'_>) -> Result<Vec<HistoryEntry>, JournalError> {
        // One row shape for the four kinds; a column that does not apply to a kind is NULL.
        let mut st = self
            .db
            .prepare_cached(
                "SELECT at, conversation_id, kind, rule, intent, source, queue_id, deferred,
                        step, outcome, requests, latency_ms, reason, correlation_id, answer
                 FROM (
                   SELECT decided_ms AS at, conversation_id, 'decision' AS kind, rule, intent,
                          source, queue_id, deferred, NULL AS step, NULL AS outcome,
                          NULL AS requests, NULL AS latency_ms, NULL AS reason,
                          NULL AS correlation_id, NULL AS answer, 0 AS ord, 0 AS id
                   FROM decisions
                   UNION ALL
                   SELECT at_ms, conversation_id, 'step', NULL, NULL, NULL, NULL, NULL, step,
                          NULL, NULL, NULL, NULL, NULL, NULL, 1, id
                   FROM steps
                   UNION ALL
                   SELECT outcome_ms, conversation_id, 'outcome', rule, intent, NULL, NULL,
                          NULL, NULL, outcome, requests, latency_ms, reason, correlation_id,
                          NULL, 2, 0
                   FROM decisions WHERE outcome IS NOT NULL
                   UNION ALL
                   SELECT at_ms, conversation_id, 'intake', NULL, intent, NULL, NULL, NULL,
                          NULL, NULL, NULL, NULL, NULL, NULL, answer, 1, id
                   FROM intake
                 )
                 WHERE at >= ?1 AND (?2 IS NULL OR conversation_id = ?2)
                   AND (?3 IS NULL OR conversation_id IN
                         (SELECT conversation_id FROM decisions
                          WHERE outcome = ?3 AND outcome_ms >= ?1))
                   AND (NOT ?4 OR conversation_id IN
                         (SELECT conversation_id FROM decisions WHERE outcome IS NULL))
                 ORDER BY at, ord, id",
            )
            .map_err(storage)?;
        let rows = st
            .query_map(
                params![q.since_ms, q.conversation_id, q.outcome, q.unfinished],
                |r| {
                    let kind = EntryKind::of_column(r.get_ref(2)?.as_str()?);
                    Ok(history::entry(
                        kind,
                        r.get(0)?,
                        r.get(1)?,
                        history::Fields {
                            rule: r.get(3)?,
                            intent: r.get(4)?,
                            source: r.get(5)?,
                            queue_id: r.get(6)?,
                            deferred: r.get(7)?,
                            step: r.get(8)?,
                            outcome: r.get(9)?,
                            requests: r.get(10)?,
                            latency_ms: r.get(11)?,
                            reason: r.get(12)?,
                            correlation_id: r.get(13)?,
                            answer: r.get(14)?,
                            // One instance: no lease, no epoch.
                            epoch: None,
                            instance: None,
                        },
                    ))
                },
            )
            .map_err(storage)?;
        rows.collect::<Result<_, _>>().map_err(storage)
    }

    fn prune(&mut self, before_ms: i64) -> Result<usize, JournalError> {
        // Never grouped (the writer commits its group first): a transaction of its own.
        let tx = self.db.savepoint().map_err(storage)?;
        tx.execute(
            "DELETE FROM steps WHERE conversation_id IN
               (SELECT conversation_id FROM decisions
                WHERE outcome IS NOT NULL AND outcome_ms < ?1)",
            [before_ms],
        )
        .map_err(storage)?;
        let n = tx
            .execute(
                "DELETE FROM decisions WHERE outcome IS NOT NULL AND outcome_ms < ?1",
                [before_ms],
            )
            .map_err(storage)?;
        tx.execute("DELETE FROM intake WHERE at_ms < ?1", [before_ms])
            .map_err(storage)?;
        // Delivered entries go with retention; undelivered ones are kept (at least once).
        tx.execute(
            "DELETE FROM outbox WHERE created_ms < ?1 AND NOT http_pending AND NOT file_pending",
            [before_ms],
        )
        .map_err(storage)?;
        tx.commit().map_err(storage)?;
        Ok(n)
    }
}
