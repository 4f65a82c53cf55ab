#!/usr/bin/env bash
# Starts the one-host development cluster (configs/local): three MDMs that bootstrap over gossip,
# three SDSs with sparse file devices and an SDC, then a pool and a thin volume vol1 mapped to the
# SDC and exported over NBD. Ctrl-C stops it all.
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
"$BIN" pool show pool1 >/dev/null 2>&1 || "$BIN" pool create pool1 -pd pd1 -capacity-gb 200
"$BIN" vol show vol1 >/dev/null 2>&1 || "$BIN" vol create vol1 -size-gb 8 -pool pool1
"$BIN" vol show vol1 2>/dev/null | grep -q sdc-1 || "$BIN" vol map vol1 sdc-1
URI=nbd://127.0.0.1:10809/vol1
UNIX_URI="nbd+unix:///vol1?socket=$PWD/data/sdc1/nbd.sock"
for _ in $(seq 1 50); do
  if command -v nbdinfo >/dev/null && nbdinfo "$URI" >/dev/null 2>&1; then break; fi
  sleep 0.2
done
echo
"$BIN" cluster members
cat <<MSG

pflex demo: 3 MDMs, 3 SDSs (sparse file devices under data/sdsN/) and an SDC on loopback.
Thin volume vol1 (8 GB, pool1) is mapped to sdc-1 and exported over NBD:

  $URI
  $UNIX_URI   (the same export on the SDC's Unix socket, for clients on this host)

MDMs: $PFLEX_MDM   (logs in data/logs/)
  export PFLEX_MDM=$PFLEX_MDM PFLEX_TOKEN=$PFLEX_TOKEN
  nbdinfo $URI
  qemu-io -f raw $URI -c 'write -P 0xab 0 4M' -c 'read -P 0xab 0 4M'
  nbdcopy disk.img $URI            # and back: nbdcopy $URI copy.img
  fio --name=t --ioengine=nbd --uri=$URI --rw=randrw --bs=4k --iodepth=16 --size=256m --verify=crc32c
  curl -s -X POST http://127.0.0.1:8301/vol/1/io/read -d '{"offset_bytes":0,"length_bytes":16}'
  $BIN status; $BIN cluster members
  curl -s -H "Authorization: Bearer $PFLEX_TOKEN" 'http://127.0.0.1:8001/token/ledger?volume_id=1'
Press Ctrl-C to stop.
MSG
wait
