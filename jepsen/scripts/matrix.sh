#!/usr/bin/env bash
# matrix.sh: every workload x every nemesis, RUNS times each (make jepsen). Process faults
# (kill, pause, restart) run on BACKEND (local processes unless set); partitions run on each of
# PARTITION_BACKENDS (network namespaces and docker containers: root, iproute2, iptables; docker
# needs the daemon and builds pflex:local from bin/pflex when it is missing).
#   RUNS=3 TIME=45s REPORT=jepsen-report/matrix-<time> ./jepsen/scripts/matrix.sh
#   WORKLOADS=labels PARTITION_BACKENDS=netns NEMESES= RUNS=1 ./jepsen/scripts/matrix.sh
# Writes REPORT/summary.md (one line per run) and exits non-zero if any run was not valid.
set -uo pipefail
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-3}
TIME=${TIME:-45s}
WORKLOADS=${WORKLOADS:-"labels topology block"}
BACKEND=${BACKEND:-local}
NEMESES=${NEMESES-"leader-kill kill pause rolling-restart"}
BLOCK_NEMESES=${BLOCK_NEMESES-"none leader-kill sds-kill sds-pause"}   # the block workload's own list
PARTITION_NEMESES=${PARTITION_NEMESES-"partition-leader partition-majority partition-bridge"}
if [ "$(id -u)" = 0 ]; then
  PARTITION_BACKENDS=${PARTITION_BACKENDS-"netns docker"}
else
  PARTITION_BACKENDS=${PARTITION_BACKENDS-}
  [ -n "$PARTITION_BACKENDS" ] || echo "matrix: not root: no partition runs (netns and docker need root)" >&2
fi
BLOCK_PARTITION_BACKENDS=${BLOCK_PARTITION_BACKENDS-netns}
# The block workload's partitions: the MDMs' and the data path's (SDSs and the SDC; netns only).
BLOCK_PARTITION_NEMESES=${BLOCK_PARTITION_NEMESES-"$PARTITION_NEMESES partition-sds partition-sds-mdm partition-sds-peers partition-sdc-sds partition-sds-leader partition-sdc-leader"}
REPORT=${REPORT:-jepsen-report/matrix-$(date +%Y%m%d-%H%M%S)}
BIN=${PFLEX_BIN:-./bin/pflex}   # PFLEX_BIN: use this binary instead of building bin/pflex
[ -n "${PFLEX_BIN:-}" ] || make -s build || exit 2
mkdir -p "$REPORT"
summary="$REPORT/summary.md"
{
  echo "# pflex jepsen matrix $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "runs=$RUNS time=$TIME, $BIN at $(git rev-parse --short HEAD 2>/dev/null)"
  echo
  echo "| workload | backend | nemesis | run | verdict | ok | fail | unknown | faults | report |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
} >"$summary"
failed=0
rebuilt=   # the first docker run builds pflex:local from $BIN, so no stale image is tested
for w in $WORKLOADS; do
  combos=()
  list=$NEMESES pbackends=$PARTITION_BACKENDS plist=$PARTITION_NEMESES
  if [ "$w" = block ]; then
    list=$BLOCK_NEMESES
    plist=$BLOCK_PARTITION_NEMESES
    pbackends=$(for b in $PARTITION_BACKENDS; do [[ " $BLOCK_PARTITION_BACKENDS " == *" $b "* ]] && echo "$b"; done)
  fi
  for n in $list; do combos+=("$BACKEND/$n"); done
  for b in $pbackends; do
    for n in $plist; do combos+=("$b/$n"); done
  done
  for combo in "${combos[@]}"; do
    b=${combo%%/*} n=${combo#*/}
    for i in $(seq 1 "$RUNS"); do
      dir="$REPORT/$w-$b-$n-$i"
      extra=()
      if [ "$b" = docker ] && [ -z "$rebuilt" ]; then extra=(-rebuild-image); rebuilt=1; fi
      "$BIN" jepsen -q -backend "$b" -workload "$w" -nemesis "$n" -time "$TIME" -report "$dir" "${extra[@]}" >"$dir.out" 2>&1
      rc=$?
      case $rc in 0) verdict=valid ;; 1) verdict=INVALID; failed=1 ;; *) verdict="ERROR($rc)"; failed=1 ;; esac
      line=$(grep -m1 'operations:' "$dir.out" || true)
      ok=$(sed -nE 's/.*operations: ([0-9]+) ok.*/\1/p' <<<"$line")
      fl=$(sed -nE 's/.* ([0-9]+) fail.*/\1/p' <<<"$line")
      un=$(sed -nE 's/.* ([0-9]+) unknown.*/\1/p' <<<"$line")
      faults=$(sed -nE 's/^  faults: ([0-9]+).*/\1/p' "$dir.out")
      echo "| $w | $b | $n | $i | $verdict | ${ok:--} | ${fl:--} | ${un:--} | ${faults:--} | $dir |" >>"$summary"
      echo "$w $b $n #$i: $verdict"
    done
  done
done
echo
cat "$summary"
exit $failed
