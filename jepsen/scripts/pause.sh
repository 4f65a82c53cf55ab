#!/usr/bin/env bash
# pause.sh [pflex jepsen flags...]: the labels workload under the pause nemesis
# (default 120 s, 10 clients); e.g. ./jepsen/scripts/pause.sh -time 5m -workload topology
exec "$(dirname "$0")/run.sh" labels pause -time 120s "$@"
