//! The simulator's ids the tests share, written once: `common` re-exports them, and a
//! test binary that needs no harness includes this file alone
//! (`#[path = "common/ids.rs"] mod ids;`).

/// The queue the tests' configs watch and their conversations wait in.
pub const QUEUE: &str = "8f14e45f-ceea-467a-9575-3b9d1c2e4a77";
