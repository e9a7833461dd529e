//! The journal: every decision, every close step before it is sent, every outcome and
//! every accepted intake call, kept under the state directory so a restart carries on
//! where the last run stopped (issue 7).
//!
//! The daemon talks to [`Journal`]; the storage sits behind the narrow [`Backend`]
//! trait: SQLite for one instance (`sqlite`), PostgreSQL for a group of instances
//! under `[ha]` (`postgres`, where every "about to send" is fenced on the lease).
//! Nothing outside those files knows which it is.
//!
//! Writes go through one writer thread in submission order, so a step journalled after
//! its decision is never stored before it. A caller that must know a record is stored
//! before it acts (the step "about to send" of a disconnect, and of the farewell, which
//! must even survive a power cut) awaits the write; others send and move on.
//!
//! A write that fails at run time is logged at error level and the close goes on: the
//! journal serves recovery after a crash, while the close serves a guest waiting now.
//! Refusing to close because the disk is full would turn a bookkeeping problem into a
//! customer-facing one; what is lost is only the ability to resume that close after a
//! crash, and the error line says so.

pub mod history;
mod postgres;
mod records;
mod sqlite;
mod writer;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::oneshot;

use crate::step::Step;

pub use postgres::PostgresBackend;
pub use records::*;
pub use sqlite::SqliteBackend;
use writer::writer;

/// The storage a journal needs. Implementations must be safe to call from one thread
/// at a time (the writer thread owns the writing instance); `history` and
/// `unfinished` may be served by a second, read-only instance.
pub trait Backend: Send {
    /// Opens a group: the writes until [`end_group`](Self::end_group) commit together
    /// (one commit for the records queued meanwhile, instead of one each). A backend
    /// without groups commits each write alone.
    fn begin_group(&mut self) -> Result<(), JournalError> {
        Ok(())
    }
    /// Commits the group; on an error none of its writes is stored.
    fn end_group(&mut self) -> Result<(), JournalError> {
        Ok(())
    }
    /// Records a decision (a second decision for the same conversation is ignored).
    fn decision(&mut self, d: &DecisionRecord) -> Result<(), JournalError>;
    /// Records a step of a conversation's close.
    fn step(&mut self, conversation_id: &str, step: &str, at_ms: i64) -> Result<(), JournalError>;
    /// Records a step durably even against an OS crash or power loss (the farewell's
    /// "about to send"); a backend whose every write is that durable uses `step`.
    fn step_durable(
        &mut self,
        conversation_id: &str,
        step: &str,
        at_ms: i64,
    ) -> Result<(), JournalError> {
        self.step(conversation_id, step, at_ms)
    }
    /// Records a step's "about to send" under the lease `epoch` (issue 16): stored only
    /// while `epoch` is the lease's current one, checked in the same statement, else
    /// [`JournalError::Fenced`] and nothing is stored. No row, no request. A backend
    /// without a lease (SQLite: one instance) stores it as
    /// [`step_durable`](Self::step_durable) does.
    fn step_fenced(
        &mut self,
        conversation_id: &str,
        step: &str,
        at_ms: i64,
        epoch: i64,
    ) -> Result<(), JournalError> {
        let _ = epoch;
        self.step_durable(conversation_id, step, at_ms)
    }
    /// Records how a close ended, with an outbox entry for each sink in `sinks`.
    fn outcome(&mut self, o: &OutcomeRecord, at_ms: i64, sinks: Sinks) -> Result<(), JournalError>;
    /// Outbox entries due for delivery at `now_ms`, oldest first.
    fn outbox_due(&mut self, now_ms: i64, limit: usize) -> Result<Vec<OutboxItem>, JournalError>;
    /// Marks sinks of an outbox entry delivered.
    fn outbox_done(&mut self, id: i64, http: bool, file: bool) -> Result<(), JournalError>;
    /// Counts a failed delivery and sets the next attempt.
    fn outbox_retry(&mut self, id: i64, next_ms: i64, error: &str) -> Result<(), JournalError>;
    /// Entries not yet delivered to every sink.
    fn outbox_pending(&mut self) -> Result<usize, JournalError>;
    /// Records an accepted intake call.
    fn intake(
        &mut self,
        conversation_id: &str,
        intent: Option<&str>,
        answer: &str,
        at_ms: i64,
    ) -> Result<(), JournalError>;
    /// Decisions without an outcome, with their steps.
    fn unfinished(&mut self) -> Result<Vec<Unfinished>, JournalError>;
    /// Conversations whose close finished at or after `since_ms`.
    fn finished_since(&mut self, since_ms: i64) -> Result<Vec<String>, JournalError>;
    /// The lines `query` selects, oldest first.
    fn history_query(
        &mut self,
        query: &HistoryQuery<'_>,
    ) -> Result<Vec<HistoryEntry>, JournalError>;
    /// Everything since `since_ms`, optionally for one conversation, oldest first.
    fn history(
        &mut self,
        since_ms: i64,
        conversation_id: Option<&str>,
    ) -> Result<Vec<HistoryEntry>, JournalError> {
        self.history_query(&HistoryQuery {
            since_ms,
            conversation_id,
            ..HistoryQuery::default()
        })
    }
    /// Forgets finished closes (and intake calls) older than `before_ms`; returns how
    /// many decisions went.
    fn prune(&mut self, before_ms: i64) -> Result<usize, JournalError>;
    /// Conversations an intake call left watched for their intent (answered
    /// `watching`, or `verifying`: waiting for Genesys's own attribute) at or after
    /// `since_ms` and not decided since, oldest first: a new leader watches them again
    /// (their per-conversation topics, and the verify read, were the old leader's).
    /// Read from the history, so both backends answer alike.
    fn watched_since(&mut self, since_ms: i64) -> Result<Vec<String>, JournalError> {
        let lines = self.history(since_ms, None)?;
        let decided: std::collections::HashSet<&str> = lines
            .iter()
            .filter(|l| matches!(l.kind, EntryKind::Decision | EntryKind::Outcome))
            .map(|l| l.conversation_id.as_str())
            .collect();
        let mut seen = std::collections::HashSet::new();
        Ok(lines
            .iter()
            .filter(|l| {
                l.kind == EntryKind::Intake
                    && matches!(l.answer.as_deref(), Some("watching" | "verifying"))
            })
            .map(|l| l.conversation_id.as_str())
            .filter(|id| !decided.contains(id) && seen.insert(*id))
            .map(str::to_owned)
            .collect())
    }
}

/// What can go wrong with the journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The state directory cannot be used.
    #[error("state directory {dir}: {reason}")]
    StateDir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        reason: String,
    },
    /// Another daemon holds the state directory.
    #[error(
        "another genesys-closer is running on state directory {0} (it holds {0}/lock); \
         two daemons on one journal would close conversations twice"
    )]
    Locked(PathBuf),
    /// The storage failed.
    #[error("journal storage: {0}")]
    Storage(String),
    /// The writer thread is gone (shut down or panicked).
    #[error("journal writer stopped")]
    Stopped,
    /// A fenced step was refused: its lease epoch is no longer the current one.
    #[error(
        "lease epoch {epoch} is no longer the current one (a newer lease epoch exists): \
         this instance must not send"
    )]
    Fenced {
        /// The stale epoch the step was written under.
        epoch: i64,
    },
}

/// Milliseconds since the Unix epoch now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

type Reply = oneshot::Sender<Result<(), JournalError>>;

/// `[ha]`: how soon a fenced step whose write failed is tried again.
const FENCED_RETRY: Duration = Duration::from_millis(250);

enum Cmd {
    Decision(DecisionRecord, Option<Reply>),
    Step(String, String, i64, Option<Reply>),
    StepDurable(String, String, i64, Reply),
    StepFenced(String, String, i64, i64, Reply),
    /// The unfinished closes, and those finished since the time given (a takeover).
    Reread(i64, oneshot::Sender<Result<Reread, JournalError>>),
    /// What intake calls left watched since the time given (a takeover).
    Watched(i64, oneshot::Sender<Result<Vec<String>, JournalError>>),
    Outcome(OutcomeRecord, i64, Option<Reply>),
    Intake(String, Option<String>, String, i64),
    Prune(i64),
    Flush(Reply),
    OutboxDue(
        i64,
        usize,
        oneshot::Sender<Result<(Vec<OutboxItem>, usize), JournalError>>,
    ),
    OutboxDone(i64, bool, bool),
    OutboxRetry(i64, i64, String),
}

/// What a takeover reads: the unfinished closes, and the conversations whose close
/// finished recently.
pub type Reread = (Vec<Unfinished>, Vec<String>);

/// The daemon's handle on the journal. Cheap to clone.
#[derive(Clone)]
pub struct Journal {
    tx: std_mpsc::Sender<Cmd>,
    /// `[ha]`: the lease loop's role; every "about to send" is then written under its
    /// epoch and refused (and not sent) without one.
    fence: Option<tokio::sync::watch::Receiver<crate::ha::leader::Role>>,
    /// Whether writes are failing (for `/readyz`): every write's result is recorded.
    writable: Arc<crate::metrics::JournalHealth>,
    /// Woken when an outcome enters the outbox.
    outbox_ready: Arc<tokio::sync::Notify>,
}

/// What `open` hands back besides the handle: the lock and the writer, kept alive
/// for the daemon's lifetime.
pub struct Opened {
    /// Writes.
    pub journal: Journal,
    /// Closes past crashes left unfinished.
    pub unfinished: Vec<Unfinished>,
    /// Conversations whose close finished recently (for tombstones).
    pub recently_finished: Vec<String>,
    /// Held while the daemon runs; dropping it releases the state directory.
    pub guard: JournalGuard,
}

/// Holds the state directory's lock and joins the writer on drop (after the last
/// handle is gone).
pub struct JournalGuard {
    /// The state directory's lock (SQLite); none for a shared PostgreSQL journal.
    _lock: Option<File>,
    writer: Option<std::thread::JoinHandle<()>>,
    checkpointer: Option<Checkpointer>,
    dir: PathBuf,
}

/// The thread that checkpoints the WAL, and the sender whose drop stops it.
struct Checkpointer {
    stop: std_mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

/// How often the WAL is copied into the database off the writer's path.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

impl JournalGuard {
    /// Waits for every queued write to be stored. Call after the last [`Journal`]
    /// handle is dropped (else it waits for them to go).
    pub fn finish(mut self) {
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
        if let Some(c) = self.checkpointer.take() {
            drop(c.stop);
            let _ = c.thread.join();
        }
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// The journal file inside the state directory.
pub fn db_path(state_dir: &Path) -> PathBuf {
    state_dir.join("journal.sqlite3")
}

/// Opens the journal under `state_dir` for the daemon: creates the directory if
/// needed, takes its lock (a second daemon is refused), opens or creates the
/// database, and reads what a past run left unfinished and the closes finished since
/// `finished_since_ms`.
pub fn open(state_dir: &Path, finished_since_ms: i64) -> Result<Opened, JournalError> {
    open_with(state_dir, finished_since_ms, Sinks::default())
}

/// [`open`], with an outbox entry per outcome for each of `sinks` (the outcome feed).
pub fn open_with(
    state_dir: &Path,
    finished_since_ms: i64,
    sinks: Sinks,
) -> Result<Opened, JournalError> {
    let dir_err = |reason: String| JournalError::StateDir {
        dir: state_dir.to_path_buf(),
        reason,
    };
    std::fs::create_dir_all(state_dir).map_err(|e| dir_err(format!("cannot create it: {e}")))?;
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(state_dir.join("lock"))
        .map_err(|e| dir_err(format!("cannot write to it: {e}")))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(JournalError::Locked(state_dir.to_path_buf()));
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(dir_err(format!("cannot lock it: {e}")));
        }
    }
    let mut backend = SqliteBackend::open(&db_path(state_dir)).map_err(|e| match e {
        JournalError::Storage(s) => dir_err(s),
        other => other,
    })?;
    let unfinished = backend.unfinished()?;
    let recently_finished = backend.finished_since(finished_since_ms)?;
    let (tx, rx) = std_mpsc::channel::<Cmd>();
    let writable = crate::metrics::JournalHealth::new();
    let outbox_ready = Arc::new(tokio::sync::Notify::new());
    let ok = Arc::clone(&writable);
    let writer = std::thread::Builder::new()
        .name("journal".into())
        .spawn({
            let ready = Arc::clone(&outbox_ready);
            move || writer(Box::new(backend), rx, &ok, sinks, &ready)
        })
        .map_err(|e| JournalError::Storage(format!("cannot start the writer: {e}")))?;
    let checkpointer = start_checkpointer(&db_path(state_dir));
    Ok(Opened {
        journal: Journal {
            tx,
            fence: None,
            writable,
            outbox_ready,
        },
        unfinished,
        recently_finished,
        guard: JournalGuard {
            _lock: Some(lock),
            writer: Some(writer),
            checkpointer,
            dir: state_dir.to_path_buf(),
        },
    })
}

/// Opens the shared journal on PostgreSQL (`[ha]`): the writer thread connects (TLS as
/// the connection string's `sslmode` says; a bare connection string checks a certificate
/// against the system's roots only, a [`Database`](crate::ha::connect::Database) against
/// `[ha] ca_file` too) and applies the migrations, then reads what is unfinished and what
/// finished since `finished_since_ms`. Every "about to send" is fenced on the lease
/// `role` follows.
pub fn open_postgres(
    database: impl Into<crate::ha::connect::Database>,
    lease: crate::ha::lease::LeaseSettings,
    role: tokio::sync::watch::Receiver<crate::ha::leader::Role>,
    finished_since_ms: i64,
    sinks: Sinks,
) -> Result<Opened, JournalError> {
    let database = database.into();
    let (tx, rx) = std_mpsc::channel::<Cmd>();
    let writable = crate::metrics::JournalHealth::new();
    let outbox_ready = Arc::new(tokio::sync::Notify::new());
    let ok = Arc::clone(&writable);
    let (opened_tx, opened_rx) = std_mpsc::channel::<Result<Reread, JournalError>>();
    let writer = std::thread::Builder::new()
        .name("journal".into())
        .spawn({
            let ready = Arc::clone(&outbox_ready);
            move || {
                let schema = lease.schema.clone();
                let first = postgres::PostgresBackend::connect_to(&database, &schema, Some(lease))
                    .and_then(|mut b| {
                        let read = b
                            .unfinished()
                            .and_then(|u| Ok((u, b.finished_since(finished_since_ms)?)));
                        read.map(|r| (b, r))
                    });
                match first {
                    Ok((b, read)) => {
                        let _ = opened_tx.send(Ok(read));
                        writer(Box::new(b), rx, &ok, sinks, &ready);
                    }
                    Err(e) => {
                        let _ = opened_tx.send(Err(e));
                    }
                }
            }
        })
        .map_err(|e| JournalError::Storage(format!("cannot start the writer: {e}")))?;
    let (unfinished, recently_finished) = opened_rx.recv().map_err(|_| JournalError::Stopped)??;
    Ok(Opened {
        journal: Journal {
            tx,
            fence: Some(role),
            writable,
            outbox_ready,
        },
        unfinished,
        recently_finished,
        guard: JournalGuard {
            _lock: None,
            writer: Some(writer),
            checkpointer: None,
            dir: PathBuf::new(),
        },
    })
}

/// Opens the journal read-only (for `history`, while the daemon runs or not).
pub fn open_read(state_dir: &Path) -> Result<SqliteBackend, JournalError> {
    let path = db_path(state_dir);
    if !path.exists() {
        return Err(JournalError::StateDir {
            dir: state_dir.to_path_buf(),
            reason: format!("no journal at {}", path.display()),
        });
    }
    SqliteBackend::open_read_only(&path)
}

/// Starts the checkpoint thread. Without it the writer's own (rarer) automatic
/// checkpoint still bounds the WAL, so a failure here is a warning, not a refusal.
fn start_checkpointer(path: &Path) -> Option<Checkpointer> {
    let db = match SqliteBackend::open_checkpointer(path) {
        Ok(db) => db,
        Err(e) => {
            tracing::warn!(error = %e, "journal: no checkpoint thread; the writer checkpoints inline (slower closes now and then)");
            return None;
        }
    };
    let (stop, rx) = std_mpsc::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("journal-checkpoint".into())
        .spawn(move || {
            let mut warned = false;
            while let Err(std_mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(CHECKPOINT_EVERY) {
                match db.checkpoint() {
                    Ok(_) => warned = false,
                    Err(e) if !warned => {
                        warned = true;
                        tracing::warn!(error = %e, "journal: checkpoint failed; retrying each second");
                    }
                    Err(_) => {}
                }
            }
        });
    match thread {
        Ok(thread) => Some(Checkpointer { stop, thread }),
        Err(e) => {
            tracing::warn!(error = %e, "journal: no checkpoint thread; the writer checkpoints inline (slower closes now and then)");
            None
        }
    }
}

impl Journal {
    fn submit(&self, cmd: Cmd) {
        if self.tx.send(cmd).is_err() {
            self.writable.failure();
            tracing::error!("journal writer stopped; records are no longer kept");
        }
    }

    /// Whether writes are failing, from each write's result (for `/readyz`).
    pub fn writable(&self) -> Arc<crate::metrics::JournalHealth> {
        Arc::clone(&self.writable)
    }

    async fn submit_wait(&self, make: impl FnOnce(Reply) -> Cmd) -> Result<(), JournalError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).map_err(|_| JournalError::Stopped)?;
        rx.await.map_err(|_| JournalError::Stopped)?
    }

    /// Records a decision (queued; ordered before any later step of it).
    pub fn decision(&self, d: DecisionRecord) {
        self.submit(Cmd::Decision(d, None));
    }

    /// Records a decision and waits until it is stored.
    pub async fn decision_durable(&self, d: DecisionRecord) -> Result<(), JournalError> {
        self.submit_wait(|r| Cmd::Decision(d, Some(r))).await
    }

    /// Records a step and waits until it is stored: call before acting on it.
    pub async fn step(&self, conversation_id: &str, step: &Step) -> Result<(), JournalError> {
        let (id, step) = (conversation_id.to_owned(), step.to_string());
        if let Some(role) = &self.fence {
            return self.fenced(role, id, step).await;
        }
        self.submit_wait(|r| Cmd::Step(id, step, now_ms(), Some(r)))
            .await
    }

    /// `[ha]`: the step under the epoch this instance acts under now, refused without
    /// one ([`JournalError::Fenced`]); the trust window is asked again once the row is
    /// stored, as close to the request as the journal can (the round trip may have
    /// taken it past its end). The caller sends nothing on an error.
    async fn fenced(
        &self,
        role: &tokio::sync::watch::Receiver<crate::ha::leader::Role>,
        id: String,
        step: String,
    ) -> Result<(), JournalError> {
        let acting = || role.borrow().acting(tokio::time::Instant::now());
        let Some(epoch) = acting() else {
            return Err(JournalError::Fenced { epoch: 0 });
        };
        // In a group no row means no request, whatever kept the row out: a failed
        // write (the connection reset, the database restarting) is tried again while
        // this instance acts under `epoch`, and refused once it no longer does. Unlike
        // one instance's journal, a failed write here never lets the step go unfenced.
        let mut said = false;
        loop {
            let (i, s) = (id.clone(), step.clone());
            match self
                .submit_wait(|r| Cmd::StepFenced(i, s, now_ms(), epoch, r))
                .await
            {
                Ok(()) => break,
                Err(e @ (JournalError::Fenced { .. } | JournalError::Stopped)) => return Err(e),
                Err(e) => {
                    if !said {
                        tracing::warn!(conversation_id = %id, epoch, error = %e,
                            "journal: the fenced step could not be stored; not sending until \
                             it is (or this instance no longer acts)");
                        said = true;
                    }
                    tokio::time::sleep(FENCED_RETRY).await;
                    if acting() != Some(epoch) {
                        return Err(JournalError::Fenced { epoch });
                    }
                }
            }
        }
        match acting() {
            Some(e) if e == epoch => Ok(()),
            _ => Err(JournalError::Fenced { epoch }),
        }
    }

    /// `[ha]`: a step that is not journalled for one instance (a wrap-up), fenced like
    /// an "about to send" in a group; without `[ha]` nothing is written.
    pub async fn fence(&self, conversation_id: &str, step: &Step) -> Result<(), JournalError> {
        match &self.fence {
            Some(role) => {
                self.fenced(role, conversation_id.to_owned(), step.to_string())
                    .await
            }
            None => Ok(()),
        }
    }

    /// What a takeover reads afresh: the unfinished closes (of every earlier epoch)
    /// and the conversations whose close finished since `since_ms`.
    pub async fn reread(&self, since_ms: i64) -> Result<Reread, JournalError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Reread(since_ms, tx))
            .map_err(|_| JournalError::Stopped)?;
        rx.await.map_err(|_| JournalError::Stopped)?
    }

    /// What intake calls left watched for their intent since `since_ms`, not decided
    /// since (see [`Backend::watched_since`]).
    pub async fn watched(&self, since_ms: i64) -> Result<Vec<String>, JournalError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Watched(since_ms, tx))
            .map_err(|_| JournalError::Stopped)?;
        rx.await.map_err(|_| JournalError::Stopped)?
    }

    /// Records a step and waits until it is on disk even against power loss (the
    /// farewell's "about to send", whose loss could send a second farewell).
    pub async fn step_durable(
        &self,
        conversation_id: &str,
        step: &Step,
    ) -> Result<(), JournalError> {
        let (id, step) = (conversation_id.to_owned(), step.to_string());
        if let Some(role) = &self.fence {
            return self.fenced(role, id, step).await;
        }
        self.submit_wait(|r| Cmd::StepDurable(id, step, now_ms(), r))
            .await
    }

    /// Records a step without waiting (what happened, not what is about to).
    pub fn note(&self, conversation_id: &str, step: &Step) {
        self.submit(Cmd::Step(
            conversation_id.to_owned(),
            step.to_string(),
            now_ms(),
            None,
        ));
    }

    /// Records how a close ended and waits until it is stored.
    pub async fn outcome(&self, o: OutcomeRecord) -> Result<(), JournalError> {
        self.submit_wait(|r| Cmd::Outcome(o, now_ms(), Some(r)))
            .await
    }

    /// Outcomes due for delivery now (at most `limit`), and how many are pending in all.
    pub async fn outbox_due(&self, limit: usize) -> Result<(Vec<OutboxItem>, usize), JournalError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Cmd::OutboxDue(now_ms(), limit, tx))
            .map_err(|_| JournalError::Stopped)?;
        rx.await.map_err(|_| JournalError::Stopped)?
    }

    /// Marks an outcome delivered to these sinks (queued).
    pub fn outbox_done(&self, id: i64, http: bool, file: bool) {
        self.submit(Cmd::OutboxDone(id, http, file));
    }

    /// Records a failed delivery; the next attempt is due at `next_ms` (queued).
    pub fn outbox_retry(&self, id: i64, next_ms: i64, error: &str) {
        self.submit(Cmd::OutboxRetry(id, next_ms, error.to_owned()));
    }

    /// Resolves when a new outcome entered the outbox.
    pub async fn outbox_ready(&self) {
        self.outbox_ready.notified().await;
    }

    /// Records an accepted intake call (queued).
    pub fn intake(&self, conversation_id: &str, intent: Option<&str>, answer: &str) {
        self.submit(Cmd::Intake(
            conversation_id.to_owned(),
            intent.map(str::to_owned),
            answer.to_owned(),
            now_ms(),
        ));
    }

    /// Waits until everything queued so far is stored.
    pub async fn flush(&self) -> Result<(), JournalError> {
        self.submit_wait(Cmd::Flush).await
    }

    /// Forgets finished closes older than `retention` (queued).
    pub fn prune(&self, retention: Duration) {
        self.submit(Cmd::Prune(now_ms() - retention.as_millis() as i64));
    }
}

#[cfg(test)]
mod backend_suite;
#[cfg(test)]
mod tests;
