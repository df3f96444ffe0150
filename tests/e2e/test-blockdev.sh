#!/bin/bash
# qlun end-to-end test: LUNs on block devices in the VM rig.
#
#   tests/e2e/test-blockdev.sh            (CTest calls it like this)
#
# rig.sh attaches only its data disk (no knob for extra virtio disks), so
# tests/e2e/guest/blockdev.sh uses loop devices over sparse files on /data as
# the "host block devices": a raw LUN on /dev/loopA (qlun//dev/loopA;format=raw)
# and a qcow2 made directly on /dev/loopB.  Linux's view, the ks3200 path
# (qemu-img convert -t none of a 1 GiB source with ~71 MiB of scattered data;
# statistics show the zero runs as WRITE SAME, not data), `qemu-img compare
# SRC /dev/sdX` over the whole LUN, QEMU's iSCSI initiator (compare, map of
# the qcow2), qemu-img check / compare of the devices after close, and the
# allocation of the files behind the loop devices.  Prints a PASS/FAIL line
# per check and the figures.
#
# Exit: 0 all checks passed; 1 a check failed; 77 skipped (handler_qlun.so
# not built, or no kernel / QEMU for the rig).
# Env: QLUN_HANDLER_DIR, QLUN_BUILD_DIR (default <repo>/build), QLUN_RIG_*
# (see rig.sh), QLUN_E2E_KEEP=1 keep the work dir.
set -u
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
. "$HERE/host-lib.sh"
e2e_need_qemu_iscsi
e2e_begin blockdev 600

QLUN_RIG_WORKDIR=$WORK "$HERE/rig.sh" --disk 8G "$HERE/guest/blockdev.sh"
GUEST_RC=$?
e2e_finish blockdev "$GUEST_RC"
