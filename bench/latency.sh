#!/usr/bin/env bash
# Decision latency against the built-in simulator, with other conversation frames flowing:
# intent event leaving the simulator -> disconnect request arriving at it, and intake
# request -> disconnect request. Prints p50/p99/max for each path.
# Usage: bench/latency.sh [samples per path] [background frames per second]
set -euo pipefail
cd "$(dirname "$0")/.."
samples=${1:-200}
background=${2:-10000}
cargo build --release --locked --quiet
target/release/genesys-closer latency --samples "$samples" --background "$background" 2>/dev/null
