#!/usr/bin/env bash
# The intake endpoint under load: authenticated POST /v1/intents with distinct conversation
# ids and an intent no rule matches (each answered `no_rule`: auth, body, event loop, state,
# rules and the journal's intake record, without a close), measured with wrk (Debian
# package `wrk`). Prints wrk's latency distribution and requests per second.
# The daemon runs on one core (CPU 0) and wrk and the simulator on another (CPU 1), with
# taskset, when the machine has two or more; INTAKE_PIN=0 turns that off.
# Usage: bench/intake-load.sh [seconds] [connections]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
conns=${2:-16}
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)" >&2; exit 1; }
cargo build --release --locked --quiet
bin=target/release/genesys-closer
on_daemon=()
on_load=()
if [ "${INTAKE_PIN:-1}" != 0 ] && command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  on_daemon=(taskset -c 0)
  on_load=(taskset -c 1)
  echo "daemon on CPU 0; wrk and the simulator on CPU 1"
fi
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
sim_port=18911
intake_port=18912
"${on_load[@]}" $bin sim --listen 127.0.0.1:$sim_port --rate 0 >"$work/sim.log" 2>&1 &
cat >"$work/config.toml" <<TOML
[genesys]
api_url = "http://127.0.0.1:$sim_port"
login_url = "http://127.0.0.1:$sim_port"
client_id = "5e1f0c1e-51a0-4c1e-8e57-0000000c11e7"
requests_per_minute = 100000
[stream]
queues = ["8f14e45f-ceea-467a-9575-3b9d1c2e4a77"]
[intake]
enabled = true
listen = "127.0.0.1:$intake_port"
max_connections = 1024
[daemon]
state_dir = "$work/state"
[log]
format = "json"
level = "warn"
[[rule]]
name = "goodbye"
intents = ["Goodbye"]
TOML
token=intake-load-credential-0123456789
sleep 1
GENESYSCLOUD_OAUTHCLIENT_SECRET=sim-secret GENESYS_CLOSER_INTAKE_TOKEN=$token \
  "${on_daemon[@]}" $bin run --config "$work/config.toml" >"$work/daemon.log" 2>&1 &
for _ in $(seq 100); do
  code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$intake_port/v1/intents" || true)
  [ "$code" = 401 ] && break
  sleep 0.1
done
cat >"$work/intake.lua" <<LUA
local n = 0
local tid = 0
setup = function(thread) thread:set("tid", tid); tid = tid + 1 end
request = function()
  n = n + 1
  local id = string.format("%08x-0000-4000-8000-%012x", tid, n)
  local body = '{"conversationId":"' .. id .. '","intent":"TalkToAgent"}'
  return wrk.format("POST", "/v1/intents",
    {["Authorization"] = "Bearer $token", ["Content-Type"] = "application/json"}, body)
end
LUA
"${on_load[@]}" wrk -t1 -c"$conns" -d"${secs}s" --latency -s "$work/intake.lua" "http://127.0.0.1:$intake_port/v1/intents"
grep -c '"level":"ERROR"' "$work/daemon.log" | sed 's/^/daemon error lines: /' || true
# Every answered call must be in the journal: stop the daemon (it drains the writer),
# then count the intake records: at least wrk's request count (calls still in flight when
# wrk stopped are answered and journalled too, but wrk does not count them).
pkill -TERM -f "$bin run --config $work/config.toml" || true
for _ in $(seq 100); do pgrep -f "$bin run --config $work/config.toml" >/dev/null || break; sleep 0.1; done
$bin history --state-dir "$work/state" --since 1h --json | grep -c '"kind":"intake"' | sed 's/^/intake calls journalled: /' || true
