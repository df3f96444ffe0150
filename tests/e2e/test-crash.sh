#!/bin/bash
# qlun end-to-end test: crash, close under load, full filesystem.
#
#   tests/e2e/test-crash.sh            (CTest calls it like this)
#
# One rig boot (tests/e2e/guest/crash.sh):
#   1. kill -9 of tcmu-runner while fio writes to a raw and a qcow2 LUN (4 KiB
#      O_SYNC/FUA writes with crc32c verify state, plus 64 KiB writes with
#      fsyncs); the qcow2 as the crash left it checks clean or leaks-only;
#      tcmu-runner restarted, the LUNs serve again without repair; every FUA
#      write fio saw completed reads back (fio verify_only), as does a marker
#      flushed with SYNCHRONIZE CACHE before the kill.
#   2. a backstore deleted (targetcli) while fio writes to it: tcmu-runner
#      survives, another LUN serves, a new backstore on the image serves; the
#      qcow2 checks clean or leaks-only.
#   3. ENOSPC: qcow2 and raw LUNs on a 48 MiB ext4: writes past the free space
#      fail with DATA PROTECT, SPACE ALLOCATION FAILED WRITE PROTECT (27/07),
#      flushed data stays intact, and after space is freed the LUN takes
#      writes again.
# Prints a PASS/FAIL line per check and the figures (IOPS before the kill,
# time to serve again, qemu-img check results, the sense seen).
#
# Exit: 0 all checks passed; 1 a check failed; 77 skipped (handler_qlun.so
# not built, or no kernel / QEMU for the rig).
# Env: QLUN_HANDLER_DIR, QLUN_BUILD_DIR (default <repo>/build), QLUN_RIG_*
# (see rig.sh), QLUN_E2E_KEEP=1 keep the work dir, QLUN_E2E_TCMU_DEBUG=1
# tcmu-runner -d, QLUN_E2E_CRASH_KILL_AFTER (s of fio writing before the
# kill, default 6), QLUN_E2E_CRASH_AFTER (s of fio writing after the LUNs
# serve again, default 4).
set -u
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
. "$HERE/host-lib.sh"
e2e_begin crash 1200

QLUN_RIG_WORKDIR=$WORK "$HERE/rig.sh" --disk 4G "$HERE/guest/crash.sh"
GUEST_RC=$?
e2e_finish crash "$GUEST_RC"
