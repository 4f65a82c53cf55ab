#!/usr/bin/env bash
# partition.sh [pflex jepsen flags...]: the labels workload while the MDM leader is cut off from
# the others (partition-leader), each MDM in its own network namespace (needs root, iproute2,
# iptables); default 120 s. Other partitions: -nemesis partition-majority|partition-bridge;
# containers instead of namespaces: -backend docker.
exec "$(dirname "$0")/run.sh" labels partition-leader -backend netns -time 120s "$@"
