#!/usr/bin/env bash
# drill-leader-kill.sh [pflex drill flags...]: SIGKILL the MDM leader N times (default 10),
# start it again after 3 s; time to new leader, to the first acknowledged write, NBD IO stall.
#   PFLEX_TOKEN=pflex-dev-token PFLEX_NBD=nbd://127.0.0.1:10809/vol1 ./jepsen/scripts/drill-leader-kill.sh
exec "$(dirname "$0")/drill.sh" leader-kill "$@"
