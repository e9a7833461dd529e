#!/usr/bin/env bash
# The group's fault scenarios on real PostgreSQL and the built-in simulator, as a table:
# scenario, matched, confirmed, lost, duplicate disconnects, duplicate farewells,
# stale-epoch requests (acting on a conversation under an epoch after its lease was
# lost), takeover time (the fault, SIGTERM included, to the lease taken; "kept its
# lease": the time to the leader's next renew).
#
#   bash bench/ha-chaos.sh [--long] [ROUNDS]   # default 1 round of every scenario
#
# tests/ha_group.rs: two instances, 25+25 queue conversations (SIGTERM hand-over and
# every connection terminated in-process; SIGKILL and SIGSTOP past the lease as
# processes). tests/ha_chaos.rs: three daemon processes, CONVERSATIONS matching
# conversations (default here 500; queue, flow-discovered and intake-only bot-phase
# ones) and a third as many that match no rule, intake calls round-robin over the
# three; the leader SIGKILLed mid-close, SIGSTOPped 25 s, its connections terminated,
# its database traffic black-holed, SIGTERM, the database restarted (a cluster of the
# test's own), PgBouncer in transaction mode. --long adds ten minutes
# (GENESYS_CLOSER_CHAOS_MINUTES) of random faults of all these kinds.
#
# A failing scenario still prints its row (the invariants are checked after it): the
# script exits 1 after the table, naming the failures. The whole output (with each
# scenario's details: farewells, the busiest minute per instance, 429s, intake calls per
# instance; and what broke) is kept in HA_CHAOS_LOG when set.
#
# Needs PostgreSQL on 127.0.0.1:5432 (trust, database `test`) or GENESYS_CLOSER_TEST_PG,
# Debian's PostgreSQL server binaries and pgbouncer (`bash .ci/run` installs them and
# starts a throwaway server where none runs).
set -euo pipefail
cd "$(dirname "$0")/.."
long=false
if [ "${1:-}" = "--long" ]; then
  long=true
  shift
fi
rounds=${1:-1}
export GENESYS_CLOSER_CHAOS_CONVERSATIONS=${GENESYS_CLOSER_CHAOS_CONVERSATIONS:-500}
filter='not test(ten_minutes)'
if [ "$long" = true ]; then filter='all()'; fi
out=$(mktemp)
log=${HA_CHAOS_LOG:-$(mktemp)}
: >"$log"
keep_log=${HA_CHAOS_LOG:+yes}
failed=()
for _ in $(seq 1 "$rounds"); do
  # One test at a time: the takeover times are measured, not only the invariants.
  if ! cargo nextest run --locked --test ha_group --test ha_chaos --run-ignored all \
    --test-threads 1 --no-fail-fast --no-capture -E "$filter" >>"$log" 2>&1; then
    mapfile -t f < <(grep -E '^\s+FAIL \[' "$log" | sed -E 's/.* (genesys-closer::[^ ]+ [^ ]+).*/\1/' | sort -u)
    if [ "${#f[@]}" -eq 0 ]; then
      tail -n 40 "$log" >&2
      echo "error: the scenarios did not run" >&2
      exit 1
    fi
    failed+=("${f[@]}")
  fi
done
grep '^CHAOS|' "$log" >>"$out" || true
echo "| scenario | matched | confirmed | lost | duplicate disconnects | duplicate farewells | stale-epoch requests | takeover ms |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
sort "$out" | awk -F'|' '{ printf "| %s | %s | %s | %s | %s | %s | %s | %s |\n", $2, $3, $4, $5, $6, $7, $8, $9 }'
rm -f "$out"
if [ "${#failed[@]}" -gt 0 ]; then
  echo >&2
  echo "error: failed (invariants or targets; details: cargo nextest run --test ha_chaos --run-ignored all --no-capture <name>):" >&2
  printf '  %s\n' "${failed[@]}" | sort -u >&2
  [ -n "$keep_log" ] || rm -f "$log"
  exit 1
fi
[ -n "$keep_log" ] || rm -f "$log"
