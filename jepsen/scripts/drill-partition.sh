#!/usr/bin/env bash
# drill-partition.sh [pflex drill flags...]: isolate the MDM leader N times (default 10), heal
# after 3 s; time to a new leader and to the first acknowledged write. Without -kill-cmd the
# drill starts its own cluster in network namespaces (-backend netns: root, iproute2, iptables;
# or -backend docker). Against a running cluster (configs/compose, project -p pflex):
#   ./jepsen/scripts/drill-partition.sh -kill-cmd 'docker network disconnect pflex_pflex pflex-{id}' \
#       -start-cmd 'docker network connect --alias {id} pflex_pflex pflex-{id}'
exec "$(dirname "$0")/drill.sh" partition "$@"
