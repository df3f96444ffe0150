#!/bin/bash
# shellcheck disable=SC2034
# Guest half of tests/e2e/test-thin.sh (runs inside the rig VM): the thin
# LUN, for a qcow2 LUN and a raw LUN served together (LUN 0, LUN 1).
#
# Phase 1: Linux's view of the thin LUN (sysfs, VPD B0/B2, READ CAPACITY 16);
#          the ks3200 path: qemu-img convert -p -t none -O raw of an 8 GiB
#          qcow2 source (~264 MiB of data between zero runs) onto each LUN,
#          statistics (zero runs arrive as WRITE SAME/UNMAP), read-back through
#          the Linux initiator, qemu-img compare and qemu-img map through QEMU's
#          own iSCSI initiator (second client, own ACL).
#          Close; qemu-img check / compare / allocated size of the LUN images.
# Phase 2: blkdiscard, fallocate -p on the device, mkfs.ext4 + fstrim: the
#          statistics count UNMAP / WRITE SAME, the ranges read zero, the data
#          around them is intact; close; qemu-img check again.
#
# Outputs in $RIG_SHARE: report.txt, figures.txt, extents.txt, out/, logs/.
# Env: QLUN_E2E_FULL_COMPARE=1 also runs `qemu-img compare SRC /dev/sdX` over
# the whole 8 GiB LUN (reads all of it through the initiator: ~6-7 min per
# LUN under TCG).
. "$QLUN_REPO/tests/e2e/lib.sh"
. "$QLUN_REPO/tests/e2e/lib-thin.sh"
RIG_REPORT_FILE=$RIG_SHARE/report.txt
OUT=$RIG_SHARE/out
mkdir -p "$OUT"
: >"$THIN_FIGURES"
RIG_TCMU_DEBUG=${QLUN_E2E_TCMU_DEBUG:-0}    # -d logs every CDB: far too much here

LUN_BYTES=$((8 << 30))
IQN=iqn.2024-01.io.qlun:thin
SRC=$RIG_DATA/src.qcow2
EXT=$RIG_SHARE/extents.txt
IMGQ=$RIG_DATA/thin-lun.qcow2
IMGR=$RIG_DATA/thin-lun.raw

HDIR=$(rig_handler_dir)
if [ -z "$HDIR" ] || [ ! -f "$HDIR/handler_qlun.so" ]; then
    rig_fail "handler_qlun.so found" "QLUN_HANDLER_DIR='${QLUN_HANDLER_DIR:-}'"
    rig_report; exit
fi
if ! rig_check "target up (LIO, D-Bus, tcmu-runner with qlun)" rig_target_up "$HDIR"; then
    rig_diag "target up"; rig_report; exit
fi

# ---- the source image and the two LUN images ----------------------------------
t0=$(thin_now)
rig_check "source: 8 GiB qcow2 (64 KiB clusters), 40 scattered extents written with qemu-io" \
    thin_make_source "$SRC" "$LUN_BYTES" "$EXT" 40
DATA=$(thin_py datasize "$EXT")
SRC_KIB=$(thin_alloc_kib "$SRC")
thin_figure "source: virtual $(thin_mib "$LUN_BYTES"), data $(thin_mib "$DATA") in $(wc -l <"$EXT") extents, allocated ${SRC_KIB} KiB (made in $(thin_since "$t0") s)"
qemu-img create -q -f qcow2 "$IMGQ" 9G
truncate -s "$LUN_BYTES" "$IMGR"

"$RIG_MAKE_CONFIG" --image "$IMGQ" --format qcow2 --size "$LUN_BYTES" --name thinq \
    --lun "image=$IMGR,format=raw,size=$LUN_BYTES,name=thinr" \
    --target-iqn "$IQN" --initiator-iqn "$RIG_INITIATOR_IQN" --initiator-iqn "$THIN_QEMU_INITIATOR" \
    --chap-user "$RIG_CHAP_USER" --chap-password "$RIG_CHAP_PASS" -o "$OUT/thin.json"

login_both() {
    DQ=; DR=
    rig_check "$1: restoreconfig (LUN 0 qcow2 9G image/8G LUN, LUN 1 sparse raw 8G)" \
        rig_restoreconfig "$OUT/thin.json" >"$OUT/restore-$1.txt" 2>&1 || { rig_diag "$1 restore"; return 1; }
    if ! rig_check "$1: iSCSI login (CHAP), both LUNs appear" rig_login "$IQN"; then
        rig_diag "$1 login"; return 1
    fi
    DQ=$RIG_DEV
    DR=$(rig_lun_dev "$IQN" 1) || { rig_fail "$1: LUN 1 appears"; return 1; }
    SQ=$(thin_serial "$DQ"); SR=$(thin_serial "$DR")
    rig_log "qcow2 LUN $DQ serial $SQ; raw LUN $DR serial $SR"
    thin_figure "$1: unit serial seen by the initiator (VPD 80h): qcow2 $SQ, raw $SR;" \
        "LIO's configfs vpd_unit_serial: $(cat /sys/kernel/config/target/core/user_*/thinq/wwn/vpd_unit_serial 2>/dev/null | tr '\n' ' ')," \
        "$(cat /sys/kernel/config/target/core/user_*/thinr/wwn/vpd_unit_serial 2>/dev/null | tr '\n' ' ')"
    [ -n "$SQ" ] && [ -n "$SR" ] && [ "$SQ" != "$SR" ]
}
logout_close() {
    rig_check "$1: logout" rig_logout "$IQN" >/dev/null
    rig_clearconfig
    sleep 1
}

# ================================ phase 1 ======================================
if login_both P1; then
    thin_linux_view qcow2 "$DQ" 128        # 64 KiB cluster / 512-byte blocks
    thin_linux_view raw "$DR" 8            # 4 KiB filesystem block
    thin_ks3200 qcow2 "$DQ" "$SRC" "$EXT" "$SQ" "$LUN_BYTES"
    thin_ks3200 raw "$DR" "$SRC" "$EXT" "$SR" "$LUN_BYTES"
    thin_compare_iscsi qcow2 "$SRC" "$IQN" 0
    thin_compare_iscsi raw "$SRC" "$IQN" 1
    thin_map_compare qcow2 "$IQN" 0 "$IMGQ" qcow2 "$LUN_BYTES"
    thin_map_compare raw "$IQN" 1 "$IMGR" raw "$LUN_BYTES"
    logout_close P1
    e=$(thin_stat "/run/qlun/$SQ.json" errors); e2=$(thin_stat "/run/qlun/$SR.json" errors)
    [ "$e" = 0 ] && [ "$e2" = 0 ] && rig_pass "P1: statistics at close: errors 0 on both LUNs" \
        || rig_fail "P1: statistics at close: errors 0" "qcow2 $e raw $e2"
    cp "/run/qlun/$SQ.json" "$OUT/qcow2-stats-close1.json"; cp "/run/qlun/$SR.json" "$OUT/raw-stats-close1.json"

    rig_check "qcow2: qemu-img check of the LUN image after close" \
        bash -c "qemu-img check '$IMGQ' >'$OUT/qcow2-check1.txt' 2>&1"
    rig_check "qcow2: qemu-img compare SRC LUN image: identical" \
        bash -c "qemu-img compare '$SRC' '$IMGQ' >'$OUT/qcow2-compare-img.txt' 2>&1"
    rig_check "raw: qemu-img compare SRC LUN image: identical" \
        bash -c "qemu-img compare -f qcow2 -F raw '$SRC' '$IMGR' >'$OUT/raw-compare-img.txt' 2>&1"
    qk=$(thin_alloc_kib "$IMGQ"); rk=$(thin_alloc_kib "$IMGR")
    qds=$(qemu-img info --output=json "$IMGQ" | python3 -c 'import json,sys; print(json.load(sys.stdin)["actual-size"])')
    thin_figure "LUN images after the convert: qcow2 ${qk} KiB (qemu-img info actual-size $qds), raw ${rk} KiB; source ${SRC_KIB} KiB"
    thin_ratio_ok "$qk" "$SRC_KIB" 10 && rig_pass "qcow2: LUN image allocated ${qk} KiB within 10% of the source's ${SRC_KIB} KiB" \
        || rig_fail "qcow2: LUN image allocated within 10% of the source" "${qk} KiB vs ${SRC_KIB} KiB"
    thin_ratio_ok "$rk" "$SRC_KIB" 10 && rig_pass "raw: LUN image allocated ${rk} KiB within 10% of the source's ${SRC_KIB} KiB" \
        || rig_fail "raw: LUN image allocated within 10% of the source" "${rk} KiB vs ${SRC_KIB} KiB"
else
    rig_clearconfig
fi

# ================================ phase 2 ======================================
# first two extents of >= 8 MiB: A gets a 3 MiB blkdiscard over its tail and
# the zero run after it (1 MiB aligned), B a fallocate -p of an unaligned
# 300.5 KiB in its middle (partial 4 KiB blocks, partial clusters)
read -r AO AL < <(awk '$2 >= 8388608 {print $1, $2}' "$EXT" | sed -n 1p)
read -r BO BL < <(awk '$2 >= 8388608 {print $1, $2}' "$EXT" | sed -n 2p)
R1O=$(( (AO + AL) / 1048576 * 1048576 - 1048576 )); R1L=$((3 << 20))
R2O=$((BO + (1 << 20) + 1536)); R2L=$((300 * 1024 + 512))
# read-back windows: both extents with 1 MiB either side, and the discarded range
WIN=("$((AO - 1048576)):$((AL + 2097152))" "$((BO - 1048576)):$((BL + 2097152))" "$R1O:$R1L")

discard_tests() {
    local L=$1 dev=$2 serial=$3 img=$4 s0=$OUT/$1-p2-0.json s1=$OUT/$1-p2-1.json s2=$OUT/$1-p2-2.json
    local a0 a1 d rc
    thin_stats_snap "$serial" "$s0"
    a0=$(thin_alloc_kib "$img")
    rig_check "$L: blkdiscard -o $R1O -l $R1L (tail of a data extent + zero run)" blkdiscard -o "$R1O" -l "$R1L" "$dev"
    # qcow2 gives freed clusters back to the host at the next metadata sync:
    # SYNCHRONIZE CACHE
    sg_sync "$dev" || rig_fail "$L: sg_sync (SYNCHRONIZE CACHE)"
    thin_stats_snap "$serial" "$s1"
    a1=$(thin_alloc_kib "$img")
    d=$(thin_delta "$s0" "$s1" cmd:UNMAP)
    [ "$d" -gt 0 ] && [ "$(thin_delta "$s0" "$s1" bytes_unmapped)" -ge "$R1L" ] \
        && rig_pass "$L: blkdiscard: UNMAP +$d, bytes_unmapped +$(thin_delta "$s0" "$s1" bytes_unmapped)" \
        || rig_fail "$L: blkdiscard shows as UNMAP in the statistics" "UNMAP +$d bytes_unmapped +$(thin_delta "$s0" "$s1" bytes_unmapped)"
    thin_figure "$L: blkdiscard 3 MiB (of which $(( (AO + AL - R1O) / 1024 )) KiB data) + SYNCHRONIZE CACHE: image allocated ${a0} -> ${a1} KiB"
    # the data part of the range, [R1O, end of A), must be given back (90 %)
    [ $(( (a0 - a1) * 1024 * 10 )) -ge $(( (AO + AL - R1O) * 9 )) ] \
        && rig_pass "$L: blkdiscard releases the data's space in the image (-$((a0 - a1)) KiB)" \
        || rig_fail "$L: blkdiscard releases the data's space in the image" "${a0} -> ${a1} KiB, data in range $(( (AO + AL - R1O) / 1024 )) KiB"
    rig_check "$L: fallocate -p -o $R2O -l $R2L on the device" fallocate -p -o "$R2O" -l "$R2L" "$dev"
    thin_stats_snap "$serial" "$s2"
    d=$(thin_delta "$s1" "$s2" "cmd:WRITE SAME (16)")
    [ "$d" -gt 0 ] && [ "$(thin_delta "$s1" "$s2" bytes_zeroed)" -ge "$R2L" ] \
        && rig_pass "$L: fallocate -p: WRITE SAME (16) +$d, bytes_zeroed +$(thin_delta "$s1" "$s2" bytes_zeroed)" \
        || rig_fail "$L: fallocate -p shows as WRITE SAME in the statistics" \
                    "WS16 +$d bytes_zeroed +$(thin_delta "$s1" "$s2" bytes_zeroed) bytes_written +$(thin_delta "$s1" "$s2" bytes_written)"
    thin_py verify "$dev" "$EXT" --zero "$R1O:$R1L" --zero "$R2O:$R2L" "${WIN[@]}" >"$OUT/$L-p2-verify.txt" 2>&1; rc=$?
    [ $rc = 0 ] && rig_pass "$L: discarded/punched ranges read zero, data around them intact" \
        || rig_fail "$L: discarded/punched ranges read zero, data around them intact" "$(tail -1 "$OUT/$L-p2-verify.txt")"
}

fstrim_test() {
    local L=$1 dev=$2 serial=$3 img=$4 mnt=/mnt/thin-$1 s0=$OUT/$1-fs-0.json s1=$OUT/$1-fs-1.json
    local t0 a0 a1 trimmed d sum0 sum1
    mkdir -p "$mnt"
    t0=$(thin_now)
    rig_check "$L: mkfs.ext4 on the LUN" mkfs.ext4 -q -F "$dev" || return
    thin_figure "$L: mkfs.ext4 of the 8 GiB LUN: $(thin_since "$t0") s"
    rig_check "$L: mount the ext4" mount -o noatime "$dev" "$mnt" || return
    head -c 4194304 /dev/urandom >"$mnt/keep.bin"
    for i in 1 2 3 4; do head -c 8388608 /dev/urandom >"$mnt/junk$i.bin"; done
    sync
    sum0=$(md5sum <"$mnt/keep.bin")
    rm -f "$mnt"/junk*.bin
    sync
    thin_stats_snap "$serial" "$s0"
    a0=$(thin_alloc_kib "$img")
    fstrim -v "$mnt" >"$OUT/$L-fstrim.txt" 2>&1
    rc=$?
    trimmed=$(sed -n 's/.*(\([0-9]*\) bytes) trimmed.*/\1/p' "$OUT/$L-fstrim.txt")
    [ $rc = 0 ] && [ "${trimmed:-0}" -ge $((32 << 20)) ] && rig_pass "$L: fstrim -v: $(cat "$OUT/$L-fstrim.txt")" \
        || rig_fail "$L: fstrim -v trims >= 32 MiB" "exit $rc: $(cat "$OUT/$L-fstrim.txt")"
    sg_sync "$dev"
    thin_stats_snap "$serial" "$s1"
    a1=$(thin_alloc_kib "$img")
    d=$(thin_delta "$s0" "$s1" cmd:UNMAP)
    [ "$d" -gt 0 ] && [ "$(thin_delta "$s0" "$s1" bytes_unmapped)" -ge $((32 << 20)) ] \
        && rig_pass "$L: fstrim: UNMAP +$d, bytes_unmapped +$(thin_mib "$(thin_delta "$s0" "$s1" bytes_unmapped)")" \
        || rig_fail "$L: fstrim shows as UNMAP in the statistics" "UNMAP +$d bytes_unmapped +$(thin_delta "$s0" "$s1" bytes_unmapped)"
    thin_figure "$L: fstrim after deleting 32 MiB: image allocated ${a0} -> ${a1} KiB"
    [ $((a0 - a1)) -ge 16384 ] && rig_pass "$L: fstrim releases the deleted files' space in the image (-$((a0 - a1)) KiB)" \
        || rig_fail "$L: fstrim releases the deleted files' space in the image" "${a0} -> ${a1} KiB"
    umount "$mnt"
    blockdev --flushbufs "$dev"
    mount -o noatime,ro "$dev" "$mnt" && sum1=$(md5sum <"$mnt/keep.bin") && umount "$mnt"
    [ "$sum0" = "${sum1:-}" ] && rig_pass "$L: kept file intact after fstrim (remount, md5)" \
        || rig_fail "$L: kept file intact after fstrim" "md5 $sum0 vs ${sum1:-unreadable}"
    rig_check "$L: e2fsck -fn of the ext4 through the LUN" bash -c "e2fsck -fn '$dev' >'$OUT/$L-e2fsck.txt' 2>&1"
}

if [ -n "$AO" ] && [ -n "$BO" ] && login_both P2; then
    discard_tests qcow2 "$DQ" "$SQ" "$IMGQ"
    discard_tests raw "$DR" "$SR" "$IMGR"
    fstrim_test qcow2 "$DQ" "$SQ" "$IMGQ"
    fstrim_test raw "$DR" "$SR" "$IMGR"
    logout_close P2
    cp "/run/qlun/$SQ.json" "$OUT/qcow2-stats-close2.json"; cp "/run/qlun/$SR.json" "$OUT/raw-stats-close2.json"
    thin_figure "P2 statistics at close: qcow2 $(cat "/run/qlun/$SQ.json")"
    thin_figure "P2 statistics at close: raw $(cat "/run/qlun/$SR.json")"
    rig_check "qcow2: qemu-img check of the LUN image after phase 2" \
        bash -c "qemu-img check '$IMGQ' >'$OUT/qcow2-check2.txt' 2>&1"
    rig_check "raw: e2fsck -fn of the raw LUN image file" bash -c "e2fsck -fn '$IMGR' >'$OUT/raw-e2fsck-img.txt' 2>&1"
    thin_figure "after phase 2: qcow2 image $(thin_alloc_kib "$IMGQ") KiB, raw image $(thin_alloc_kib "$IMGR") KiB"
else
    rig_fail "P2: set-up" "extents A='$AO' B='$BO' or login failed"
    rig_clearconfig
fi

rig_check "tcmu-runner still running" rig_tcmu_alive
rig_stop_tcmu
[ "$RIG_NFAIL" -gt 0 ] && rig_diag "end of run"
rig_report
