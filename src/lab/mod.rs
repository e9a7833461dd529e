//! The lab (feature `lab`, on by default): the daemon run against the simulator crate,
//! for the `demo`, `burst`, `latency` and `fault-matrix` commands, the tests and the
//! benches. Nothing of the daemon imports it, and it is the only part of this library
//! that sees the simulator.

pub mod burst;
pub mod demo;
pub mod latency;
pub mod matrix;
