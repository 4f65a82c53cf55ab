#!/usr/bin/env bash
# leader-kill.sh [pflex jepsen flags...]: the labels workload under the leader-kill nemesis
# (default 120 s, 10 clients); e.g. ./jepsen/scripts/leader-kill.sh -time 5m -workload topology
exec "$(dirname "$0")/run.sh" labels leader-kill -time 120s "$@"
