//! Two or three instances on one PostgreSQL, exactly one acting (`[ha]`): the lease,
//! the fence, the schema and the intake relay; `crate::daemon` wires them (its `group`
//! and `running` modules) and `crate::journal::postgres` is the group's journal.
//!
//! - [`schema`]: versioned migrations embedded in the binary, applied at start under a
//!   transaction-scoped lock, so two instances starting together do not race them.
//! - [`lease`]: the lease row (name, holder, epoch, expires_at), taken, renewed and
//!   resigned by single autocommit statements that use the database's `now()` (a
//!   transaction-mode pooler works), and the local trust window, measured on this
//!   process's monotonic clock from the moment the statement was sent, never by
//!   comparing this host's wall clock with the database's.
//! - [`lease::fenced_step`]: the fence. Genesys cannot check a token, so the journal
//!   is the fenced resource: a step's "about to send" row is inserted only while its
//!   epoch is the lease's current one, in the same statement, holding the lease row
//!   for share so a concurrent takeover waits for it (and a takeover that committed
//!   first makes the insert find no row). No row, no request.
//! - [`relay`]: intake calls that reach a standby, carried out by the acting instance.
//!
//! Why not advisory locks for leadership: a transaction-mode pooler breaks session
//! locks, a vanished host keeps one until TCP keepalive gives up, a stopped process
//! keeps it for ever, and a lock carries no fencing token (`../shared/ha-prior-art.md`).
//! The migrations' lock is transaction-scoped, which a pooler keeps.

pub mod connect;
pub mod gate;
pub mod leader;
pub mod lease;
pub mod relay;
pub mod schema;

/// What can go wrong talking to the coordination database.
#[derive(Debug, thiserror::Error)]
pub enum HaError {
    /// The database refused or failed a statement, or the connection broke. The
    /// message never holds the connection string (it may carry a password).
    #[error("coordination database: {0}")]
    Db(String),
    /// A statement did not complete in time.
    #[error("coordination database: no answer within {0} ms")]
    Timeout(u128),
    /// The settings cannot work together.
    #[error("[ha] {0}")]
    Settings(String),
}

impl From<tokio_postgres::Error> for HaError {
    fn from(e: tokio_postgres::Error) -> Self {
        // tokio-postgres' Display names the server's message (or the I/O error), not
        // the connection string.
        match e.as_db_error() {
            Some(db) => HaError::Db(format!("{} ({})", db.message(), db.code().code())),
            None => HaError::Db(e.to_string()),
        }
    }
}

/// A schema name safe to write into SQL as an identifier (the rule `check` applies:
/// [`crate::config::schema_name`]).
pub fn valid_schema(name: &str) -> Result<(), HaError> {
    crate::config::schema_name(name).map_err(HaError::Settings)
}
