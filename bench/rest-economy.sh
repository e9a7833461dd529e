#!/usr/bin/env bash
# REST requests per closure, per bot-phase set-up, from the simulator's own request log.
# Runs the demo (simulator + daemon on loopback) once per set-up at the same rate and
# prints one table row each. Usage: bench/rest-economy.sh [conversations] [rate]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-200}
rate=${2:-10}
cargo build --release --locked --quiet
bin=target/release/genesys-closer
printf '| paths | conversations/s | matched | confirmed | failed | REST per queue closure | REST per bot-phase closure | catch-up reads |\n'
printf '|---|---|---|---|---|---|---|---|\n'
# trigger: Set-up B, the trigger calls at the start with eventTime; trigger-late: it calls
# after the bot set its intent (a fast bot); trigger-no-time: its workflow passes no eventTime.
for paths in queue "flow,trigger,flow+intake" intake trigger trigger-late trigger-no-time \
  "queue,flow,flow+intake,trigger,intake"; do
  line=$("$bin" demo --conversations "$n" --rate "$rate" --paths "$paths" 2>/dev/null | tail -n 1)
  python3 - "$paths" "$rate" "$line" <<'PY'
import json, sys
paths, rate, s = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
print(f"| {paths} | {rate} | {s['matched']} | {s['confirmed'] + s['escalated_confirmed']} | {s['failed']} "
      f"| {s['rest_per_queue_closure']} | {s['rest_per_bot_closure']} | {s['catchup_reads']} |")
PY
done
