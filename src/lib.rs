//! # genesys-closer
//!
//! Ends Genesys Cloud messaging conversations from the backend when a bot intent matches
//! a rule, and confirms each closure from the pushed notification events, never by polling.
//!
//! A frame travels one way through the modules:
//! [`genesys::stream`] (channel and socket state machine) reads it, [`genesys::frames`]
//! parses it tolerantly, the event loop in [`daemon`] applies it to [`state`] (the
//! conversation map, which it alone writes), [`rules`] decide on it, and [`closer`] runs
//! the close sequence through [`genesys::api`] (authenticated by [`genesys::auth`]),
//! learning of the confirming event through a waiter that the event loop fires.
//! [`config`] validates the TOML before any I/O; [`telemetry`] holds logs and counters.
//! At the bottom, importing nothing of the crate, [`ids`] is the one UUID reader and
//! [`outcome`] names how a close ended and [`step`] the steps of a close, as the journal
//! keeps them (for the closer, the journal, restarts and `history`).
//!
//! The Genesys simulator (REST, socket, conversation generator) is a crate of its own,
//! `genesys-sim` (`crates/genesys-sim`), which does not depend on this one; only
//! [`lab`] (feature `lab`: the demo, burst, latency and fault matrix) uses it, and the
//! library builds without that feature, so no daemon module can import the simulator.
//!
//! [`decide`] is the one decision step (apply an event, ask the rules) the event loop and
//! [`replay`] share; [`record`] appends every frame the sockets read to a file
//! (`run --record`), and [`replay`] feeds such a file through it offline. [`intake`] and
//! [`metrics`] listen through one bounded HTTP edge (`listen`); [`findings`] is what
//! `check` finds beyond the file. The binary's commands are thin: a file each in
//! `src/cli`, the work here.
//!
//! [`ha`] lets two or three instances share one PostgreSQL: a lease row with an epoch
//! decides which one acts, the journal's PostgreSQL backend stores every "about to
//! send" only under the current epoch (the fence), and the daemon's loop follows the
//! lease loop's role (stand by, take over).

pub mod closer;
pub mod config;
pub mod daemon;
pub mod decide;
pub mod farewell;
pub mod feed;
pub mod findings;
pub mod genesys;
pub mod ha;
pub mod ids;
pub mod intake;
pub mod journal;
#[cfg(feature = "lab")]
pub mod lab;
pub(crate) mod listen;
pub mod metrics;
pub mod outcome;
pub mod progress;
pub mod record;
pub mod replay;
pub mod rules;
pub mod state;
pub mod step;
pub mod telemetry;

/// Installs rustls's ring provider as the process default (no OpenSSL, no aws-lc).
/// Safe to call more than once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
