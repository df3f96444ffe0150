#!/bin/bash
# qlun end-to-end test: raw image served as a user:qlun LUN over iSCSI.
#
#   tests/e2e/test-raw-basic.sh            (CTest calls it like this)
#
# Host side: makes a pseudo-random 64 MiB pattern plus a few unaligned
# patches and the expected result, boots the rig (tests/e2e/rig.sh) with
# tests/e2e/guest/raw-basic.sh, then checks the backing image file itself by
# dumping it with debugfs from the rig's ext4 data disk after the VM is off.
#
# Exit: 0 all checks passed; 1 a check failed; 77 skipped (handler_qlun.so
# not built, or no bootable kernel / QEMU: run scripts/install-rig-deps.sh).
# Env: QLUN_HANDLER_DIR, QLUN_BUILD_DIR (default <repo>/build), QLUN_RIG_*
# (see rig.sh), QLUN_E2E_KEEP=1 keep the work dir, QLUN_E2E_PATTERN_MB (64).
set -u
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
. "$HERE/host-lib.sh"
e2e_begin raw 600

# ---- inputs -------------------------------------------------------------------
MB=${QLUN_E2E_PATTERN_MB:-64}
SIZE=$((MB << 20))
head -c "$SIZE" /dev/urandom >"$WORK/pattern.bin"
cp "$WORK/pattern.bin" "$WORK/expected.bin"
: >"$WORK/patches.txt"
n=0
# OFFSET LENGTH: odd offsets/lengths, crossing sector, 4 KiB and 1 MiB
# boundaries, touching the first and the very last byte of the LUN
for spec in "1 1" "511 2" "12345 777" "1048575 4097" "$((SIZE / 2 + 3)) 65539" \
            "$((SIZE - 513)) 513" "0 1" "$((SIZE - 1)) 1"; do
    set -- $spec
    n=$((n + 1))
    head -c "$2" /dev/urandom >"$WORK/patch$n.bin"
    echo "$1 $2 patch$n.bin" >>"$WORK/patches.txt"
    dd if="$WORK/patch$n.bin" of="$WORK/expected.bin" bs="$2" count=1 seek="$1" \
       oflag=seek_bytes conv=notrunc status=none
done

# ---- guest run ----------------------------------------------------------------
QLUN_RIG_WORKDIR=$WORK "$HERE/rig.sh" --disk 16G "$HERE/guest/raw-basic.sh"
GUEST_RC=$?

# ---- host checks on the backing image (VM is off, ext4 unmounted) --------------
if debugfs -R "dump /raw-basic.img $WORK/image-from-disk.bin" "$WORK/data.img" >/dev/null 2>&1 &&
   [ -s "$WORK/image-from-disk.bin" ]; then
    if cmp "$WORK/image-from-disk.bin" "$WORK/expected.bin"; then
        hpass "host: backing image (debugfs dump from the rig disk) == pattern + unaligned writes"
    else
        hfail "host: backing image == expected" "$(cmp "$WORK/image-from-disk.bin" "$WORK/expected.bin" 2>&1 | head -1)"
    fi
else
    hfail "host: backing image dumped from the rig disk" "debugfs could not dump /raw-basic.img"
fi
rm -f "$WORK/image-from-disk.bin"

# ---- report ---------------------------------------------------------------------
e2e_finish raw-basic "$GUEST_RC"
