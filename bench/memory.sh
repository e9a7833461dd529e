#!/usr/bin/env bash
# Memory of the conversation map (benches/memory.rs): bytes per open conversation at
# 100,000 (queue and bot-phase shapes), a mass eviction, one million lifecycles through
# parse -> apply -> evict, and a million conversations that never end. Each scenario
# runs in a fresh process. Prints the machine first, for bench/RESULTS.md.
#
#   bench/memory.sh                 # every scenario, full size (about 10 minutes)
#   bench/memory.sh queue 100000    # one scenario
set -euo pipefail
cd "$(dirname "$0")/.."
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(grep MemTotal /proc/meminfo | awk '{printf "%.0f GiB", $2/1048576}')"
echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with local changes)')"
cargo bench --bench memory -- "$@"
