//! Memory per tracked conversation (work in progress).
fn main() {}
