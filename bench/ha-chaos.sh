#!/usr/bin/env bash
# The group's fault scenarios (tests/ha_group.rs) on the real PostgreSQL and the built-in
# simulator, as a table: scenario, matched, confirmed, lost, duplicate disconnects,
# duplicate farewells, stale-epoch requests (acting on a conversation under an epoch
# after its lease was lost), takeover time (the fault to the lease taken).
#
#   bash bench/ha-chaos.sh [ROUNDS]       # default 1 round of every scenario
#
# Needs PostgreSQL on 127.0.0.1:5432 (trust, database `test`) or GENESYS_CLOSER_TEST_PG
# (`bash .ci/run` starts a throwaway one where none runs). Scenarios so far: SIGTERM
# hand-over and every connection terminated (in-process daemons), SIGKILL and
# SIGSTOP-past-the-lease (daemon processes); lease_ttl is 3 s in the process scenarios.
# Not yet: traffic black-holed, the database restarted, PgBouncer, three instances, ten minutes of mixed
# faults (see README, "Two or three instances").
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-1}
out=$(mktemp)
for _ in $(seq 1 "$rounds"); do
  cargo nextest run --locked --test ha_group --no-capture 2>&1 | grep '^CHAOS|' >>"$out" || {
    echo "error: the group scenarios failed; run: cargo nextest run --test ha_group --no-capture" >&2
    exit 1
  }
done
echo "| scenario | matched | confirmed | lost | duplicate disconnects | duplicate farewells | stale-epoch requests | takeover ms |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
sort "$out" | awk -F'|' '{ printf "| %s | %s | %s | %s | %s | %s | %s | %s |\n", $2, $3, $4, $5, $6, $7, $8, $9 }'
rm -f "$out"
