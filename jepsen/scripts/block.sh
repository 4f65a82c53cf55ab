#!/usr/bin/env bash
# block.sh [NEMESES] [pflex jepsen flags...]: the block workload (4 KiB registers through the SDC's
# NBD export) under NEMESES (default leader-kill,sds-kill), 120 s, 10 clients, 8 blocks.
n=${1:-leader-kill,sds-kill}
shift || true
exec "$(dirname "$0")/run.sh" block "$n" -time 120s -keys 8 "$@"
