#!/usr/bin/env bash
# drill-sds-kill.sh [pflex drill flags...]: SIGKILL a random SDS N times (default 10), start it
# again after 3 s (-down); the NBD IO stall of a writer to $PFLEX_NBD (the drill writes the
# first 4 KiB of that volume).
#   PFLEX_TOKEN=pflex-dev-token PFLEX_NBD=nbd://127.0.0.1:10809/vol1 ./jepsen/scripts/drill-sds-kill.sh
exec "$(dirname "$0")/drill.sh" sds-kill "$@"
