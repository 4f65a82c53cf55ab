#!/usr/bin/env bash
# matrix.sh: every workload x every nemesis, RUNS times each (make jepsen).
#   RUNS=3 TIME=45s REPORT=jepsen-report/matrix-<time> ./jepsen/scripts/matrix.sh
# Writes REPORT/summary.md (one line per run) and exits non-zero if any run was not valid.
set -uo pipefail
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-3}
TIME=${TIME:-45s}
WORKLOADS=${WORKLOADS:-"labels topology block"}
NEMESES=${NEMESES:-"leader-kill kill pause rolling-restart"}
BLOCK_NEMESES=${BLOCK_NEMESES:-"none leader-kill sds-kill"}   # the block workload's own list
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
  echo "| workload | nemesis | run | verdict | ok | fail | unknown | faults | report |"
  echo "|---|---|---|---|---|---|---|---|---|"
} >"$summary"
failed=0
for w in $WORKLOADS; do
  list=$NEMESES
  [ "$w" = block ] && list=$BLOCK_NEMESES
  for n in $list; do
    for i in $(seq 1 "$RUNS"); do
      dir="$REPORT/$w-$n-$i"
      "$BIN" jepsen -q -workload "$w" -nemesis "$n" -time "$TIME" -report "$dir" >"$dir.out" 2>&1
      rc=$?
      case $rc in 0) verdict=valid ;; 1) verdict=INVALID; failed=1 ;; *) verdict="ERROR($rc)"; failed=1 ;; esac
      line=$(grep -m1 'operations:' "$dir.out" || true)
      ok=$(sed -nE 's/.*operations: ([0-9]+) ok.*/\1/p' <<<"$line")
      fl=$(sed -nE 's/.* ([0-9]+) fail.*/\1/p' <<<"$line")
      un=$(sed -nE 's/.* ([0-9]+) unknown.*/\1/p' <<<"$line")
      faults=$(sed -nE 's/^  faults: ([0-9]+).*/\1/p' "$dir.out")
      echo "| $w | $n | $i | $verdict | ${ok:--} | ${fl:--} | ${un:--} | ${faults:--} | $dir |" >>"$summary"
      echo "$w $n #$i: $verdict"
    done
  done
done
echo
cat "$summary"
exit $failed
