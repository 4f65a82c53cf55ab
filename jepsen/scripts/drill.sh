#!/usr/bin/env bash
# drill.sh FAULT [pflex drill flags...]: repeat FAULT (leader-kill, sds-kill, partition) against
# the running cluster at $PFLEX_MDM (default: the one-host layout of configs/local, `make demo`)
# and print each repetition and median / p99 / worst of: time to new leader, time to the first
# acknowledged write, NBD IO stall (with -nbd or $PFLEX_NBD). Defaults: -n $N (10).
#   PFLEX_TOKEN=pflex-dev-token ./jepsen/scripts/drill.sh leader-kill -n 20
# Local processes are found in /proc by their config; for containers pass -kill-cmd/-start-cmd,
# e.g. -kill-cmd 'docker kill pflex-{id}' -start-cmd 'docker start pflex-{id}'.
set -euo pipefail
cd "$(dirname "$0")/../.."
fault=${1:?usage: drill.sh leader-kill|sds-kill|partition [flags]}
shift
BIN=${PFLEX_BIN:-./bin/pflex}   # PFLEX_BIN: use this binary instead of building bin/pflex
[ -n "${PFLEX_BIN:-}" ] || make -s build
args=(-n "${N:-10}")
if [ -n "${PFLEX_NBD:-}" ]; then args+=(-nbd "$PFLEX_NBD"); fi
exec "$BIN" drill "$fault" "${args[@]}" "$@"
