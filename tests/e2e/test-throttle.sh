#!/bin/bash
# qlun end-to-end test: the throttle filter seen from the initiator (fio
# at QD16 against limited LUNs: IOPS and bytes/s within 10 %, a group of
# two LUNs, a live change within a second).  Everything happens in the
# guest (tests/e2e/guest/throttle.sh).  The jobs test (test-jobs.sh) runs
# the same guest script in its boot; this runs it alone.
#
#   tests/e2e/test-throttle.sh
#
# Exit: 0 pass, 1 fail, 77 skip.  Env as test-raw-basic.sh.
set -u
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
. "$HERE/host-lib.sh"
e2e_begin throttle 600
QLUN_RIG_WORKDIR=$WORK "$HERE/rig.sh" --disk 2G "$HERE/guest/throttle.sh"
e2e_finish throttle $?
