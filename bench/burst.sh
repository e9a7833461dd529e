#!/usr/bin/env bash
# A burst of matching conversations, all created at once, against the simulator with the
# org's rate limit on (Genesys's default: 300 requests per 60 s) and the daemon at its
# default budget (requests_per_minute = 240). Prints a table: conversations, confirmed,
# failed, 429s the simulator answered (total, and after the first), wall time, REST
# requests per closure, and how long closes waited behind the budget. Progress lines go
# to stderr. At 240 a minute, 1,000 closes (one PATCH each) take over four minutes.
# Exits non-zero unless every conversation was confirmed, once.
# Usage: bench/burst.sh [conversations] [sim limit per 60 s, 0: none] [requests_per_minute]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000}
limit=${2:-300}
rpm=${3:-240}
cargo build --release --locked --quiet
target/release/genesys-closer burst --conversations "$n" --sim-limit "$limit" \
  --requests-per-minute "$rpm"
