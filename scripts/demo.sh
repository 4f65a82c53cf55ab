#!/usr/bin/env bash
# Starts the one-host development cluster (configs/local): three MDMs that bootstrap over gossip,
# a protection domain, three SDSs and an SDC that register and heartbeat. Ctrl-C stops it all.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=./bin/pflex
export PFLEX_MDM=127.0.0.1:8001,127.0.0.1:8002,127.0.0.1:8003
export PFLEX_TOKEN=pflex-dev-token
mkdir -p data/logs
pids=()
cleanup() {
  echo; echo "stopping the cluster..."
  kill "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
}
trap cleanup EXIT INT TERM
start() { # role config log
  "$BIN" "$1" -config "$2" >"data/logs/$3.log" 2>&1 &
  pids+=($!)
}
for i in 1 2 3; do start mdm "configs/local/mdm$i.hcl" "mdm$i"; done
for _ in $(seq 1 100); do
  if "$BIN" status 2>/dev/null | grep -q '^quorum: ok'; then break; fi
  sleep 0.2
done
"$BIN" pd show pd1 >/dev/null 2>&1 || "$BIN" pd create pd1
for i in 1 2 3; do mkdir -p "data/sds$i"; start sds "configs/local/sds$i.hcl" "sds$i"; done
start sdc configs/local/sdc1.hcl sdc1
for _ in $(seq 1 50); do
  up=$("$BIN" cluster members 2>/dev/null | grep -cE '^(sds|sdc)-[0-9].* up ' || true)
  [ "$up" -ge 4 ] && break
  sleep 0.2
done
"$BIN" status || { echo "the quorum did not come up; see data/logs/"; exit 1; }
echo
"$BIN" cluster members
cat <<MSG

pflex demo: 3 MDMs, 3 SDSs and an SDC on loopback (logs in data/logs/, state in data/).
  export PFLEX_MDM=$PFLEX_MDM PFLEX_TOKEN=$PFLEX_TOKEN
  $BIN pool create pool1 -pd pd1 -capacity-gb 1024
  $BIN vol create vol1 -size-gb 8 -pool pool1
  $BIN vol map vol1 sdc-1
  $BIN cluster members          # gossip, committed state, raft role, last heartbeat
  kill \$(pgrep -f 'sds -config configs/local/sds1.hcl')   # sds-1 goes down after its grace
  curl -s -H "Authorization: Bearer $PFLEX_TOKEN" http://127.0.0.1:8002/discovery/nodes
Press Ctrl-C to stop.
MSG
wait
