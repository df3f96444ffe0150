#!/bin/bash
# qlun end-to-end test: the Debian package, the native demo, and a reboot.
#
#   tests/e2e/test-package.sh            (CTest calls it like this)
#
# Host: builds qlun_<version>_amd64.deb with scripts/build-deb.sh (lintian
# must report no error).  Guest (tests/e2e/guest/package.sh, one boot):
#  1. dpkg -i the package; tcmu-runner started as a system would (no
#     --handler-path) offers a user:qlun backstore in targetcli;
#  2. tests/e2e/demo-native.sh, the README's main job on a host with LIO,
#     with the packaged handler: it reports, and leaves another target, the
#     running tcmu-runner and the saved configuration as they were;
#  3. reboot: raw and qcow2 LUNs written through the initiator,
#     `targetcli saveconfig`, target cleared and tcmu-runner stopped, then
#     started again as at boot (tcmu-runner, `targetctl restore`): after a
#     new login both LUNs have their data, size and serial.
#
# Exit: 0 pass; 1 fail; 77 skipped (no rig).
set -u
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
. "$HERE/host-lib.sh"
e2e_begin package 900

if ! "$REPO/scripts/build-deb.sh" "$WORK/deb" >"$WORK/build-deb.txt" 2>&1; then
    cat "$WORK/build-deb.txt"
    echo "FAIL  scripts/build-deb.sh (log: $WORK/deb/build.log)"
    FAILED=1
    exit 1
fi
sed -n '/^package:/p; /^lintian:/,$p' "$WORK/build-deb.txt" >"$WORK/figures.txt"
QLUN_RIG_WORKDIR=$WORK "$HERE/rig.sh" --disk 16G "$HERE/guest/package.sh"
GUEST_RC=$?
e2e_finish package "$GUEST_RC"
