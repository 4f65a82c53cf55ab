#!/usr/bin/env bash
# run.sh WORKLOAD NEMESES [pflex jepsen flags...]: one chaos run with the repository's pflex,
# built into bin/pflex first. Reports go to jepsen-report/ unless -report is given.
set -euo pipefail
cd "$(dirname "$0")/../.."
workload=${1:?usage: run.sh WORKLOAD NEMESES [flags]}
nemesis=${2:?usage: run.sh WORKLOAD NEMESES [flags]}
shift 2
BIN=${PFLEX_BIN:-./bin/pflex}   # PFLEX_BIN: use this binary instead of building bin/pflex
[ -n "${PFLEX_BIN:-}" ] || make -s build
exec "$BIN" jepsen -workload "$workload" -nemesis "$nemesis" "$@"
