#!/usr/bin/env bash
# Starts the one-host development cluster (configs/local) and stops it on Ctrl-C.
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
for i in 1 2 3; do
  "$BIN" mdm -config "configs/local/mdm$i.hcl" >"data/logs/mdm$i.log" 2>&1 &
  pids+=($!)
done
for _ in $(seq 1 100); do
  if "$BIN" status 2>/dev/null | grep -q '^quorum: ok'; then break; fi
  sleep 0.2
done
"$BIN" status || { echo "the quorum did not come up; see data/logs/"; exit 1; }
cat <<MSG

pflex demo: three MDMs on loopback (logs in data/logs/, state in data/mdmN/).
  export PFLEX_MDM=$PFLEX_MDM PFLEX_TOKEN=$PFLEX_TOKEN
  $BIN pd create pd1
  $BIN pool create pool1 -pd pd1 -capacity-gb 1024
  $BIN vol create vol1 -size-gb 8 -pool pool1
  curl -s -H "Authorization: Bearer $PFLEX_TOKEN" http://127.0.0.1:8002/vol/list
  $BIN status
Press Ctrl-C to stop.
MSG
wait
