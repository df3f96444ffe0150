#!/bin/bash
# shellcheck disable=SC2034
# Guest half of tests/e2e/test-blockdev.sh (runs inside the rig VM): LUNs
# on block devices.  rig.sh attaches only its one data disk (no knob for
# extra virtio disks), so the "host block devices" are loop devices over
# sparse files on /data (their discard/write-zeroes punch holes in the file,
# so the file's allocation shows what the LUN wrote).
#
#   LUN 0: raw on /dev/loopA         cfgstring qlun//dev/loopA;format=raw
#   LUN 1: qcow2 made directly on /dev/loopB (qemu-img create -f qcow2 /dev/loopB)
#
# For each: Linux's view, the ks3200 path (qemu-img convert -p -t none of a
# 1 GiB source with ~70 MiB of scattered data), statistics (zeros not
# written), `qemu-img compare SRC /dev/sdX` over the whole LUN, compare
# through QEMU's iSCSI initiator; after close qemu-img check / compare of
# the device and the allocation of the files behind the loop devices.
. "$QLUN_REPO/tests/e2e/lib.sh"
. "$QLUN_REPO/tests/e2e/lib-thin.sh"
RIG_REPORT_FILE=$RIG_SHARE/report.txt
OUT=$RIG_SHARE/out
mkdir -p "$OUT"
: >"$THIN_FIGURES"
RIG_TCMU_DEBUG=${QLUN_E2E_TCMU_DEBUG:-0}

LUN_BYTES=$((1 << 30))
IQN=iqn.2024-01.io.qlun:blockdev
SRC=$RIG_DATA/bd-src.qcow2
EXT=$RIG_SHARE/extents.txt
FR=$RIG_DATA/bd-raw.backing
FQ=$RIG_DATA/bd-qcow2.backing

HDIR=$(rig_handler_dir)
if [ -z "$HDIR" ] || [ ! -f "$HDIR/handler_qlun.so" ]; then
    rig_fail "handler_qlun.so found" "QLUN_HANDLER_DIR='${QLUN_HANDLER_DIR:-}'"; rig_report; exit
fi
if ! rig_check "target up (LIO, D-Bus, tcmu-runner with qlun)" rig_target_up "$HDIR"; then
    rig_diag "target up"; rig_report; exit
fi

t0=$(thin_now)
rig_check "source: 1 GiB qcow2 (64 KiB clusters), 12 scattered extents" \
    thin_make_source "$SRC" "$LUN_BYTES" "$EXT" 12
DATA=$(thin_py datasize "$EXT")
SRC_KIB=$(thin_alloc_kib "$SRC")
thin_figure "source: virtual $(thin_mib "$LUN_BYTES"), data $(thin_mib "$DATA") in $(wc -l <"$EXT") extents, allocated ${SRC_KIB} KiB (made in $(thin_since "$t0") s)"

modprobe loop
truncate -s "$LUN_BYTES" "$FR"
truncate -s $((LUN_BYTES + (64 << 20))) "$FQ"   # room for the qcow2 metadata
LR=$(losetup -f --show "$FR") && LQ=$(losetup -f --show "$FQ")
rig_check "loop devices over sparse files on /data ($LR, $LQ)" test -b "$LR" -a -b "$LQ"
rig_log "$LR: discard_max_bytes=$(cat /sys/block/"${LR#/dev/}"/queue/discard_max_bytes) write_zeroes_max_bytes=$(cat /sys/block/"${LR#/dev/}"/queue/write_zeroes_max_bytes)"
rig_check "qemu-img create -f qcow2 $LQ 1G (qcow2 directly on a block device)" \
    qemu-img create -q -f qcow2 "$LQ" "$LUN_BYTES"

"$RIG_MAKE_CONFIG" --image "$LR" --format raw --size "$LUN_BYTES" --name bdraw \
    --lun "image=$LQ,format=qcow2,size=$LUN_BYTES,name=bdqcow2" \
    --target-iqn "$IQN" --initiator-iqn "$RIG_INITIATOR_IQN" --initiator-iqn "$THIN_QEMU_INITIATOR" \
    --chap-user "$RIG_CHAP_USER" --chap-password "$RIG_CHAP_PASS" -o "$OUT/blockdev.json"
grep -o '"config": "[^"]*"' "$OUT/blockdev.json"
DR=; DQ=
if rig_check "restoreconfig: raw LUN on $LR, qcow2 LUN on $LQ" rig_restoreconfig "$OUT/blockdev.json" >"$OUT/restore.txt" 2>&1 &&
   rig_check "iSCSI login (CHAP), both LUNs appear" rig_login "$IQN"; then
    DR=$RIG_DEV
    DQ=$(rig_lun_dev "$IQN" 1) || rig_fail "LUN 1 appears"
else
    cat "$OUT/restore.txt"; rig_diag "restore/login"
fi
if [ -n "$DR" ] && [ -n "$DQ" ]; then
    SR=$(thin_serial "$DR"); SQ=$(thin_serial "$DQ")
    grep -h 'serving' "$RIG_TCMU_LOG" | sed 's/.*qlun: //'
    thin_linux_view bd-raw "$DR" 8
    thin_linux_view bd-qcow2 "$DQ" 128
    thin_ks3200 bd-raw "$DR" "$SRC" "$EXT" "$SR" "$LUN_BYTES"
    thin_ks3200 bd-qcow2 "$DQ" "$SRC" "$EXT" "$SQ" "$LUN_BYTES"
    thin_compare_dev bd-raw "$SRC" "$DR"
    thin_compare_dev bd-qcow2 "$SRC" "$DQ"
    thin_compare_iscsi bd-qcow2 "$SRC" "$IQN" 1
    # the raw LUN on a device: a device has no holes to report, every block is
    # mapped; QEMU's map of the qcow2 on the device against the iSCSI map:
    thin_map_compare bd-qcow2 "$IQN" 1 "$LQ" qcow2 "$LUN_BYTES"
    rig_check "logout" rig_logout "$IQN" >/dev/null
fi
rig_clearconfig
sleep 1
rig_check "tcmu-runner still running" rig_tcmu_alive
rig_stop_tcmu

rig_check "bd-qcow2: qemu-img check of the qcow2 on $LQ after close" \
    bash -c "qemu-img check -f qcow2 '$LQ' >'$OUT/bd-qcow2-check.txt' 2>&1"
rig_check "bd-qcow2: qemu-img compare SRC $LQ: identical" \
    bash -c "qemu-img compare -f qcow2 -F qcow2 '$SRC' '$LQ' >'$OUT/bd-qcow2-compare-img.txt' 2>&1"
rig_check "bd-raw: qemu-img compare SRC $LR: identical" \
    bash -c "qemu-img compare -f qcow2 -F raw '$SRC' '$LR' >'$OUT/bd-raw-compare-img.txt' 2>&1"
sync
rk=$(thin_alloc_kib "$FR"); qk=$(thin_alloc_kib "$FQ")
thin_figure "files behind the loop devices: raw ${rk} KiB, qcow2 ${qk} KiB allocated; source ${SRC_KIB} KiB"
thin_ratio_ok "$rk" "$SRC_KIB" 10 && rig_pass "bd-raw: device's backing file allocated ${rk} KiB within 10% of the source's ${SRC_KIB} KiB" \
    || rig_fail "bd-raw: allocation within 10% of the source" "${rk} KiB vs ${SRC_KIB} KiB"
thin_ratio_ok "$qk" "$SRC_KIB" 10 && rig_pass "bd-qcow2: device's backing file allocated ${qk} KiB within 10% of the source's ${SRC_KIB} KiB" \
    || rig_fail "bd-qcow2: allocation within 10% of the source" "${qk} KiB vs ${SRC_KIB} KiB"
losetup -d "$LR" "$LQ"
[ "$RIG_NFAIL" -gt 0 ] && rig_diag "end of run"
rig_report
