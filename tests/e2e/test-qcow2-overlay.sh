#!/bin/bash
# qlun end-to-end test: a qcow2 overlay on a raw base served as a LUN.
#
#   tests/e2e/test-qcow2-overlay.sh            (CTest calls it like this)
#
# Host side: a pseudo-random 64 MiB raw base, a list of operations (O_DIRECT
# sector-aligned writes, buffered unaligned writes, a blkdiscard and a
# fallocate -p range, ranges left untouched) and the expected image.  The
# guest (tests/e2e/guest/qcow2-overlay.sh) makes overlay.qcow2 on /data with
# the relative backing name base.raw, exports it as user:qlun, applies the
# operations through iSCSI, reads the LUN back, and after logout runs
# qemu-img check / compare.  After power-off the host dumps both files from
# the rig disk (debugfs) and checks them again with its own qemu-img.
#
# Exit: 0 pass, 1 fail, 77 skip.  Env as test-raw-basic.sh.
set -u
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
. "$HERE/host-lib.sh"
e2e_begin overlay 600

# ---- inputs -------------------------------------------------------------------
M=$((1 << 20))
SIZE=$((64 * M))
CL=65536
head -c "$SIZE" /dev/urandom >"$WORK/base.raw"
cp "$WORK/base.raw" "$WORK/expected.raw"
: >"$WORK/ops.txt"
TOUCHED=$WORK/touched.txt      # first/last byte of every changed range
: >"$TOUCHED"
n=0
write_op() {   # KIND OFFSET LENGTH
    n=$((n + 1))
    head -c "$3" /dev/urandom >"$WORK/w$n.bin"
    echo "$1 $2 $3 w$n.bin" >>"$WORK/ops.txt"
    dd if="$WORK/w$n.bin" of="$WORK/expected.raw" bs="$3" count=1 seek="$2" oflag=seek_bytes \
       conv=notrunc status=none
    echo "$2 $3" >>"$TOUCHED"
}
zero_op() {    # KIND OFFSET LENGTH
    echo "$1 $2 $3" >>"$WORK/ops.txt"
    dd if=/dev/zero of="$WORK/expected.raw" bs="$3" count=1 seek="$2" oflag=seek_bytes \
       conv=notrunc status=none
    echo "$2 $3" >>"$TOUCHED"
}
# O_DIRECT, sector aligned: whole clusters, a partial cluster (COW from the
# backing file on both sides), a range crossing a cluster boundary
write_op direct $((1 * M)) $((1 * M))
write_op direct $((2 * M + 512)) 1536
write_op direct $((4 * M - CL + 512)) 131072
write_op direct $((20 * M + 4096)) 4096
# buffered, unaligned (the page cache turns them into 4 KiB read-modify-writes)
write_op buffered 0 1
write_op buffered 12345 777
write_op buffered $((CL - 1)) 3
write_op buffered $((8 * M + 1)) 100000
write_op buffered $((12 * M + CL - 7)) $((2 * CL + 13))
write_op buffered $((SIZE - 1)) 1
# zeroing over backed clusters: must read zero (LBPRZ=1), not the backing data
zero_op discard $((16 * M)) $((1 * M))
zero_op punch $((24 * M + 1536)) 200704
# a write into a zeroed range afterwards is not needed; ranges left untouched:
echo "untouched $((32 * M)) $((28 * M))" >>"$WORK/ops.txt"
echo "untouched $((21 * M)) $((2 * M))" >>"$WORK/ops.txt"
# bytes of the clusters touched: the most the overlay layer may hold
awk -v cl=$CL '{ a = int($1 / cl); b = int(($1 + $2 - 1) / cl); for (c = a; c <= b; c++) t[c] = 1 }
               END { n = 0; for (c in t) n++; print n * cl }' "$TOUCHED" >"$WORK/touched-bytes.txt"

# ---- guest run ----------------------------------------------------------------
QLUN_RIG_WORKDIR=$WORK "$HERE/rig.sh" --disk 4G "$HERE/guest/qcow2-overlay.sh"
GUEST_RC=$?

# ---- host checks on the files the VM left on its disk ---------------------------
mkdir -p "$WORK/dump"
if debugfs -R "dump /ov/overlay.qcow2 $WORK/dump/overlay.qcow2" "$WORK/data.img" >/dev/null 2>&1 &&
   debugfs -R "dump /ov/base.raw $WORK/dump/base.raw" "$WORK/data.img" >/dev/null 2>&1 &&
   [ -s "$WORK/dump/overlay.qcow2" ]; then
    if qemu-img check "$WORK/dump/overlay.qcow2" >"$WORK/host-check.txt" 2>&1; then
        hpass "host: qemu-img check of overlay.qcow2 (dumped from the rig disk)"
    else
        hfail "host: qemu-img check of overlay.qcow2" "$(tail -1 "$WORK/host-check.txt")"
    fi
    # the relative backing name resolves next to the dumped overlay
    if qemu-img compare -F raw "$WORK/dump/overlay.qcow2" "$WORK/expected.raw" >"$WORK/host-compare.txt" 2>&1; then
        hpass "host: qemu-img compare overlay.qcow2 (backing dump/base.raw) expected.raw: identical"
    else
        hfail "host: qemu-img compare overlay expected" "$(tail -1 "$WORK/host-compare.txt")"
    fi
    cmp -s "$WORK/dump/base.raw" "$WORK/base.raw" && hpass "host: base.raw on the rig disk unchanged" \
        || hfail "host: base.raw unchanged"
else
    hfail "host: overlay.qcow2 and base.raw dumped from the rig disk" "debugfs failed"
fi
rm -rf "$WORK/dump" "$WORK/data.img"

e2e_finish qcow2-overlay "$GUEST_RC"
