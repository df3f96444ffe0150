#!/bin/bash
# qlun end-to-end test: changes to a served qcow2 LUN through the
# management socket (qlunctl) while the initiator writes: three external
# snapshots, internal snapshots, an online resize, bad requests, and a
# tcmu-runner restart on the newest overlay.  Everything happens in the
# guest (tests/e2e/guest/live.sh), which checks the images with qemu-img.
#
#   tests/e2e/test-live.sh            (CTest calls it like this)
#
# Exit: 0 pass, 1 fail, 77 skip.  Env as test-raw-basic.sh.
set -u
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
. "$HERE/host-lib.sh"
e2e_begin live 780
QLUN_RIG_WORKDIR=$WORK "$HERE/rig.sh" --disk 2G "$HERE/guest/live.sh"
e2e_finish live $?
