#!/usr/bin/env bash
# The stream's fault matrix: one scenario per fault, each against a fresh simulator with
# ten conversations a second arriving (queue and bot-phase paths), the fault one second
# in: single-channel, REST and frame faults, then the windows in which every socket is
# blind at once (an outage, a kill and restart on the same state, every socket refused,
# stalled, unsubscribed or gone). Prints a markdown table; exits non-zero if a row lost a
# conversation or closed one twice. Usage: bench/fault-matrix.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --quiet
target/release/genesys-closer fault-matrix 2>/dev/null
