#!/usr/bin/env bash
# rolling-restart.sh [pflex jepsen flags...]: the labels workload under the rolling-restart nemesis
# (default 120 s, 10 clients); e.g. ./jepsen/scripts/rolling-restart.sh -time 5m -workload topology
exec "$(dirname "$0")/run.sh" labels rolling-restart -time 120s "$@"
