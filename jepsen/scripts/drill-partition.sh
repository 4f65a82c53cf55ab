#!/usr/bin/env bash
# drill-partition.sh [pflex drill flags...]: isolate the MDM leader N times (default 10) with
# -kill-cmd and reconnect it with -start-cmd ({id} is the node id). Local processes share one
# loopback, so this needs containers; with configs/compose (project -p pflex):
#   ./jepsen/scripts/drill-partition.sh -kill-cmd 'docker network disconnect pflex_pflex pflex-{id}' \
#       -start-cmd 'docker network connect --alias {id} pflex_pflex pflex-{id}'
exec "$(dirname "$0")/drill.sh" partition "$@"
