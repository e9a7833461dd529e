//! The SQLite backend of the journal (rusqlite, SQLite compiled in).
//!
//! WAL mode: `history` reads while the daemon writes, and a crash never corrupts the
//! file. `synchronous = FULL`: every commit reaches the disk before the write is
//! acknowledged, so "about to send" survives not only a killed process (NORMAL would
//! do for that) but an OS crash or power loss too, which is what "a farewell at most
//! once" needs. The cost is one fsync per record; closes are bounded by the REST
//! budget (a few hundred a minute), so a few records per close is a few fsyncs a
//! second at most.

use std::path::Path;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use super::{Backend, DecisionRecord, HistoryEntry, JournalError, OutcomeRecord, Unfinished};

const SCHEMA_VERSION: i64 = 1;

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
    requests        INTEGER
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
        db.execute_batch("PRAGMA synchronous = FULL;")
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
        db.execute_batch(SCHEMA).map_err(storage)?;
        db.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION};"))
            .map_err(storage)?;
        // A write test, so an unwritable directory is found at start-up, not mid-close.
        db.execute_batch("BEGIN IMMEDIATE; COMMIT;")
            .map_err(storage)?;
        Ok(SqliteBackend { db })
    }

    /// Opens the journal for reading only.
    pub fn open_read_only(path: &Path) -> Result<Self, JournalError> {
        let db = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
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
    fn decision(&mut self, d: &DecisionRecord) -> Result<(), JournalError> {
        // A conversation is decided once; a finished one decided again (after its
        // tombstone went) starts a fresh record.
        let tx = self.db.transaction().map_err(storage)?;
        let finished: Option<bool> = tx
            .query_row(
                "SELECT outcome IS NOT NULL FROM decisions WHERE conversation_id = ?1",
                [&d.conversation_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(storage)?;
        if finished == Some(false) {
            // Still open: this is the same decision again (e.g. resumed after a restart).
            return tx.commit().map_err(storage);
        }
        if finished == Some(true) {
            tx.execute(
                "DELETE FROM steps WHERE conversation_id = ?1",
                [&d.conversation_id],
            )
            .map_err(storage)?;
        }
        tx.execute(
            "INSERT OR REPLACE INTO decisions
               (conversation_id, rule, intent, queue_id, customer_id, source, watch, deferred,
                decided_ms, outcome, outcome_ms, reason, correlation_id, requests)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, NULL, NULL, NULL, NULL, NULL)",
            params![
                d.conversation_id,
                d.rule,
                d.intent,
                d.queue_id,
                d.customer_id,
                d.source,
                d.watch,
                d.deferred,
                d.decided_ms
            ],
        )
        .map_err(storage)?;
        tx.commit().map_err(storage)
    }

    fn step(&mut self, conversation_id: &str, step: &str, at_ms: i64) -> Result<(), JournalError> {
        self.db
            .execute(
                "INSERT INTO steps (conversation_id, at_ms, step) VALUES (?1, ?2, ?3)",
                params![conversation_id, at_ms, step],
            )
            .map_err(storage)?;
        Ok(())
    }

    fn outcome(&mut self, o: &OutcomeRecord, at_ms: i64) -> Result<(), JournalError> {
        self.db
            .execute(
                "UPDATE decisions SET outcome = ?2, outcome_ms = ?3, reason = ?4,
                        correlation_id = ?5, requests = ?6
                 WHERE conversation_id = ?1",
                params![
                    o.conversation_id,
                    o.outcome,
                    at_ms,
                    o.reason,
                    o.correlation_id,
                    o.requests
                ],
            )
            .map_err(storage)?;
        Ok(())
    }

    fn intake(
        &mut self,
        conversation_id: &str,
        intent: Option<&str>,
        answer: &str,
        at_ms: i64,
    ) -> Result<(), JournalError> {
        self.db
            .execute(
                "INSERT INTO intake (conversation_id, at_ms, intent, answer) VALUES (?1, ?2, ?3, ?4)",
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

    fn history(
        &mut self,
        since_ms: i64,
        conversation_id: Option<&str>,
    ) -> Result<Vec<HistoryEntry>, JournalError> {
        let mut st = self
            .db
            .prepare(
                "SELECT at, conversation_id, kind, what, detail FROM (
                   SELECT decided_ms AS at, conversation_id, 'decision' AS kind,
                          'rule ' || rule || ', intent ' || intent
                            || CASE WHEN deferred THEN ' (deferred: decided while shutting down)'
                                    ELSE '' END AS what,
                          'source ' || source || COALESCE(', queue ' || queue_id, '') AS detail,
                          0 AS ord, 0 AS id
                   FROM decisions
                   UNION ALL
                   SELECT at_ms, conversation_id, 'step', step, NULL, 1, id FROM steps
                   UNION ALL
                   SELECT outcome_ms, conversation_id, 'outcome', outcome,
                          NULLIF(TRIM(COALESCE('requests ' || requests, '')
                            || COALESCE('; ' || reason, '')
                            || COALESCE('; correlation id ' || correlation_id, '')), ''),
                          2, 0
                   FROM decisions WHERE outcome IS NOT NULL
                   UNION ALL
                   SELECT at_ms, conversation_id, 'intake',
                          answer, COALESCE('intent ' || intent, NULL), 1, id FROM intake
                 )
                 WHERE at >= ?1 AND (?2 IS NULL OR conversation_id = ?2)
                 ORDER BY at, ord, id",
            )
            .map_err(storage)?;
        let rows = st
            .query_map(params![since_ms, conversation_id], |r| {
                Ok(HistoryEntry {
                    at_ms: r.get(0)?,
                    conversation_id: r.get(1)?,
                    kind: r.get(2)?,
                    what: r.get(3)?,
                    detail: r.get(4)?,
                })
            })
            .map_err(storage)?;
        rows.collect::<Result<_, _>>().map_err(storage)
    }

    fn prune(&mut self, before_ms: i64) -> Result<usize, JournalError> {
        let tx = self.db.transaction().map_err(storage)?;
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
        tx.commit().map_err(storage)?;
        Ok(n)
    }
}
