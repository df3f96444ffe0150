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
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
. "$HERE/host-lib.sh"
e2e_need_qemu_iscsi
e2e_begin thin 840

QLUN_RIG_WORKDIR=$WORK "$HERE/rig.sh" --disk 24G "$HERE/guest/thin.sh"
GUEST_RC=$?
e2e_finish thin "$GUEST_RC"
