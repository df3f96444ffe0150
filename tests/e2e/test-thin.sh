#!/bin/bash
# qlun end-to-end test: the thin LUN (qcow2 and raw) in the VM rig.
#
#   tests/e2e/test-thin.sh            (CTest calls it like this)
#
# Boots the rig (tests/e2e/rig.sh) with tests/e2e/guest/thin.sh: Linux's view
# of the thin LUN, the ks3200 path (qemu-img convert -t none of an 8 GiB
# source with ~264 MiB of scattered data onto the LUN; statistics show the
# zero runs as WRITE SAME/UNMAP), QEMU's iSCSI initiator as a second client
# (compare, map), blkdiscard / fallocate -p / mkfs.ext4 + fstrim.  Prints a
# PASS/FAIL line per check and the figures (convert time, data and image
# sizes, statistics).
#
# Exit: 0 all checks passed; 1 a check failed; 77 skipped (handler_qlun.so
# not built, or no kernel / QEMU for the rig).
# Env: QLUN_HANDLER_DIR, QLUN_BUILD_DIR (default <repo>/build), QLUN_RIG_*
# (see rig.sh), QLUN_E2E_KEEP=1 keep the work dir, QLUN_E2E_FULL_COMPARE=1
# also compare the whole 8 GiB LUNs through /dev/sdX (adds ~13 min).
set -u
export QLUN_RIG_TIMEOUT=${QLUN_RIG_TIMEOUT:-840}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
START=$(date +%s)

. "$HERE/host-lib.sh"
e2e_find_handler
e2e_need_rig
if ! ls /usr/lib/x86_64-linux-gnu/qemu/block-iscsi.so >/dev/null 2>&1; then
    echo "SKIP: QEMU's iSCSI driver missing (apt-get install qemu-block-extra)"
    exit 77
fi

e2e_workdir thin

QLUN_RIG_WORKDIR=$WORK "$HERE/rig.sh" --disk 24G "$HERE/guest/thin.sh"
GUEST_RC=$?
e2e_finish thin "$GUEST_RC"
