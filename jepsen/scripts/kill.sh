#!/usr/bin/env bash
# kill.sh [pflex jepsen flags...]: the labels workload under the kill nemesis
# (default 120 s, 10 clients); e.g. ./jepsen/scripts/kill.sh -time 5m -workload topology
exec "$(dirname "$0")/run.sh" labels kill -time 120s "$@"
