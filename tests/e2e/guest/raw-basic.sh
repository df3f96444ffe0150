#!/bin/bash
# Guest half of tests/e2e/test-raw-basic.sh (runs inside the rig VM).
#
# Inputs in the share ($RIG_SHARE): pattern.bin (LUN 0 contents), patches.txt
# ("OFFSET LENGTH FILE" unaligned buffered writes), expected.bin (pattern with
# the patches applied).  Outputs: report.txt, out/*.txt, logs/.
#
# Phase A: 64 MiB raw image -> user:qlun LUN over iSCSI with CHAP; identity,
#          whole-LUN direct write, unaligned buffered writes, direct read-back,
#          VPD/READ CAPACITY, logout, backing file compare.
# Phase B: 8 GiB LUN on a sparse raw file: size and last-block I/O.
# Phase C: LUN size > image size must be refused; tcmu-runner survives.
. "$QLUN_REPO/tests/e2e/lib.sh"
RIG_REPORT_FILE=$RIG_SHARE/report.txt
OUT=$RIG_SHARE/out
mkdir -p "$OUT"

HDIR=$(rig_handler_dir)
if [ -z "$HDIR" ] || [ ! -f "$HDIR/handler_qlun.so" ]; then
    rig_fail "handler_qlun.so found" "QLUN_HANDLER_DIR='${QLUN_HANDLER_DIR:-}' build=${QLUN_BUILD_DIR:-}"
    rig_report; exit
fi
rig_log "handler: $HDIR/handler_qlun.so"
if ! rig_check "target up (LIO modules, D-Bus, tcmu-runner with qlun)" rig_target_up "$HDIR"; then
    rig_diag "target up"; rig_report; exit
fi

tcmu_log_mark() { wc -l <"$RIG_TCMU_LOG" 2>/dev/null || echo 0; }
tcmu_log_since() { tail -n +"$(( $1 + 1 ))" "$RIG_TCMU_LOG" 2>/dev/null; }

# ============================ Phase A ========================================
IQN_A=iqn.2024-01.io.qlun:raw-basic
IMG_A=$RIG_DATA/raw-basic.img
SIZE_A=$(stat -c %s "$RIG_SHARE/pattern.bin")
truncate -s "$SIZE_A" "$IMG_A"
"$RIG_MAKE_CONFIG" --image "$IMG_A" --size "$SIZE_A" --format raw --name qlun0 \
    --target-iqn "$IQN_A" --initiator-iqn "$RIG_INITIATOR_IQN" \
    --chap-user "$RIG_CHAP_USER" --chap-password "$RIG_CHAP_PASS" -o "$OUT/raw-basic.json"
rig_check "A: targetcli restoreconfig (user:qlun, 64 MiB raw)" rig_restoreconfig "$OUT/raw-basic.json" \
    || rig_diag restoreconfig
targetcli ls >"$OUT/targetcli-ls.txt" 2>&1
cat "$OUT/targetcli-ls.txt"
rig_check "A: targetcli ls shows user:qlun backstore qlun0 activated" \
    bash -c "grep -q 'o- user:qlun' '$OUT/targetcli-ls.txt' && grep -E 'o- qlun0 ' '$OUT/targetcli-ls.txt' | grep -q activated"

# CHAP is enforced: a wrong password must not log in
rig_start_iscsid
iscsiadm -m discovery -t sendtargets -p "$RIG_PORTAL" >/dev/null 2>&1
if timeout 60 bash -c "iscsiadm -m node -T '$IQN_A' -p '$RIG_PORTAL' -o update -n node.session.auth.authmethod -v CHAP &&
    iscsiadm -m node -T '$IQN_A' -p '$RIG_PORTAL' -o update -n node.session.auth.username -v '$RIG_CHAP_USER' &&
    iscsiadm -m node -T '$IQN_A' -p '$RIG_PORTAL' -o update -n node.session.auth.password -v wrong-password-123 &&
    iscsiadm -m node -T '$IQN_A' -p '$RIG_PORTAL' --login" >"$OUT/chap-negative.txt" 2>&1; then
    rig_fail "A: login with a wrong CHAP password is refused"; rig_logout "$IQN_A"
else
    rig_pass "A: login with a wrong CHAP password is refused"
fi

DEV=
if rig_check "A: iSCSI discovery + CHAP login, LUN 0 appears" rig_login "$IQN_A"; then
    DEV=$RIG_DEV
else
    rig_diag login
fi

if [ -n "$DEV" ]; then
    sd=${DEV#/dev/}
    vendor=$(sed 's/ *$//' /sys/block/$sd/device/vendor)
    model=$(sed 's/ *$//' /sys/block/$sd/device/model)
    sg_inq "$DEV" >"$OUT/sg_inq.txt" 2>&1
    sg_vpd -p sn "$DEV" >"$OUT/sg_vpd_sn.txt" 2>&1
    serial_vpd=$(sed -n 's/^ *Unit serial number: *//p' "$OUT/sg_vpd_sn.txt" | sed 's/ *$//')
    serial_inq=$(sed -n 's/^ *Unit serial number: *//p' "$OUT/sg_inq.txt" | sed 's/ *$//')
    serial_sysfs=
    [ -r /sys/block/$sd/device/vpd_pg80 ] && serial_sysfs=$(tail -c +5 /sys/block/$sd/device/vpd_pg80 | tr -d '\0' | sed 's/ *$//')
    rig_log "initiator view: $DEV vendor='$vendor' model='$model' serial(vpd)='$serial_vpd' serial(sg_inq)='$serial_inq' serial(sysfs)='$serial_sysfs'"
    [ "$vendor" = QLUN ] && rig_pass "A: vendor is QLUN" || rig_fail "A: vendor is QLUN" "got '$vendor'"
    case "$model" in qlun*) rig_pass "A: product starts with qlun ($model)" ;;
                     *) rig_fail "A: product starts with qlun" "got '$model'" ;; esac
    if [ -n "$serial_vpd" ] && { [ -z "$serial_sysfs" ] || [ "$serial_sysfs" = "$serial_vpd" ]; } &&
       { [ -z "$serial_inq" ] || [ "$serial_inq" = "$serial_vpd" ]; }; then
        rig_pass "A: unit serial non-empty and consistent (sg_vpd -p sn = sysfs vpd_pg80 = sg_inq)"
    else
        rig_fail "A: unit serial non-empty and consistent" "vpd='$serial_vpd' sysfs='$serial_sysfs' inq='$serial_inq'"
    fi
    bytes=$(rig_dev_bytes "$DEV")
    [ "$bytes" = "$SIZE_A" ] && rig_pass "A: LUN size $bytes bytes" || rig_fail "A: LUN size" "got $bytes want $SIZE_A"

    t0=$(date +%s.%N)
    rig_check "A: write the whole LUN (dd bs=1M oflag=direct)" \
        dd if="$RIG_SHARE/pattern.bin" of="$DEV" bs=1M oflag=direct conv=fsync status=none
    t1=$(date +%s.%N)
    rig_log "direct write of $SIZE_A bytes: $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}') s"
    ok=1
    while read -r off len file; do
        [ -n "$off" ] || continue
        dd if="$RIG_SHARE/$file" of="$DEV" bs="$len" count=1 seek="$off" oflag=seek_bytes conv=notrunc status=none || ok=0
    done <"$RIG_SHARE/patches.txt"
    sync; blockdev --flushbufs "$DEV" || ok=0
    [ $ok = 1 ] && rig_pass "A: unaligned buffered writes ($(grep -c . "$RIG_SHARE/patches.txt")) + flush" \
                || rig_fail "A: unaligned buffered writes + flush"
    echo 3 >/proc/sys/vm/drop_caches
    rig_check "A: direct read-back of the whole LUN equals expected" \
        bash -c "dd if='$DEV' bs=1M iflag=direct status=none | cmp - '$RIG_SHARE/expected.bin'"
    # the TCMU data area is recycled between commands: bytes past the INQUIRY
    # data the handler produced must be zero, not stale data of earlier I/O
    rm -f "$OUT/inquiry-260.bin"
    if sg_raw -r 260 -o "$OUT/inquiry-260.bin" "$DEV" 12 00 00 01 04 00 >"$OUT/inquiry-260.log" 2>&1 &&
       [ "$(stat -c %s "$OUT/inquiry-260.bin" 2>/dev/null || echo 0)" -ge 36 ]; then
        got=$(stat -c %s "$OUT/inquiry-260.bin")
        addl=$(od -An -tu1 -j4 -N1 "$OUT/inquiry-260.bin" | tr -d ' ')
        junk=$(tail -c +$((addl + 6)) "$OUT/inquiry-260.bin" | tr -d '\0' | wc -c)
        od -Ax -tx1 -v "$OUT/inquiry-260.bin" >"$OUT/inquiry-260.txt"
        if [ "$junk" = 0 ]; then
            rig_pass "A: INQUIRY(260): no stale bytes past the additional length ($got bytes, additional length $addl)"
        else
            rig_fail "A: INQUIRY(260): no stale bytes past the additional length" \
                "$junk non-zero bytes after byte $((addl + 5)) of $got; see out/inquiry-260.txt"
        fi
    else
        rig_fail "A: INQUIRY(260) via sg_raw" "$(tail -1 "$OUT/inquiry-260.log")"
    fi
    rig_check "A: sg_vpd -p bl" bash -c "sg_vpd -p bl '$DEV' >'$OUT/sg_vpd_bl.txt' 2>&1"
    rig_check "A: sg_vpd -p lbpv" bash -c "sg_vpd -p lbpv '$DEV' >'$OUT/sg_vpd_lbpv.txt' 2>&1"
    rig_check "A: sg_readcap -l" bash -c "sg_readcap -l '$DEV' >'$OUT/sg_readcap.txt' 2>&1"
    for f in sg_vpd_bl sg_vpd_lbpv sg_readcap; do echo "--- $f"; cat "$OUT/$f.txt"; done
    for f in /sys/block/$sd/device/scsi_disk/*/{provisioning_mode,zeroing_mode}; do
        echo "$(basename "$f"): $(cat "$f" 2>/dev/null)"
    done
    rig_check "A: logout" rig_logout "$IQN_A"
fi
rig_clearconfig
rig_check "A: tcmu-runner still running after phase A" rig_tcmu_alive
sync
rig_check "A: backing image file (guest view) equals expected" cmp "$IMG_A" "$RIG_SHARE/expected.bin"

# ============================ Phase B ========================================
IQN_B=iqn.2024-01.io.qlun:big
IMG_B=$RIG_DATA/big-sparse.img
SIZE_B=$((8 << 30))
truncate -s "$SIZE_B" "$IMG_B"
"$RIG_MAKE_CONFIG" --image "$IMG_B" --name big --target-iqn "$IQN_B" -o "$OUT/big.json"
rig_check "B: restoreconfig 8 GiB LUN on a sparse raw file" rig_restoreconfig "$OUT/big.json" || rig_diag "B restore"
if rig_check "B: login" rig_login "$IQN_B"; then
    DEV=$RIG_DEV
    bytes=$(rig_dev_bytes "$DEV")
    [ "$bytes" = "$SIZE_B" ] && rig_pass "B: /sys/block size*512 == 8 GiB" || rig_fail "B: size == 8 GiB" "got $bytes"
    head -c 4096 /dev/urandom >/tmp/last.bin
    last=$(( SIZE_B / 4096 - 1 ))
    rig_check "B: write the last 4 KiB (direct)" \
        dd if=/tmp/last.bin of="$DEV" bs=4096 seek=$last count=1 oflag=direct status=none
    rig_check "B: read back the last 4 KiB (direct)" \
        bash -c "dd if='$DEV' bs=4096 skip=$last count=1 iflag=direct status=none | cmp - /tmp/last.bin"
    rig_check "B: reading past the end fails cleanly" \
        bash -c "! dd if='$DEV' bs=4096 skip=$((last + 1)) count=1 iflag=direct status=none 2>/dev/null | grep -q ."
    # thin provisioning: 4 MiB written at 1 GiB allocates, discarding it deallocates
    sdB=${DEV#/dev/}
    echo "B: provisioning_mode=$(cat /sys/block/$sdB/device/scsi_disk/*/provisioning_mode 2>/dev/null)" \
         "discard_max_bytes=$(cat /sys/block/$sdB/queue/discard_max_bytes)"
    head -c 4194304 /dev/urandom >/tmp/mid.bin
    a0=$(du -k "$IMG_B" | cut -f1)
    dd if=/tmp/mid.bin of="$DEV" bs=1M seek=1024 oflag=direct conv=fsync status=none
    a1=$(du -k "$IMG_B" | cut -f1)
    [ $((a1 - a0)) -ge 4096 ] && rig_pass "B: 4 MiB write allocates in the backing file (+$((a1 - a0)) KiB)" \
                              || rig_fail "B: 4 MiB write allocates" "${a0} -> ${a1} KiB"
    if [ "$(cat /sys/block/$sdB/queue/discard_max_bytes)" -gt 0 ]; then
        rig_check "B: blkdiscard 4 MiB at 1 GiB" blkdiscard -o $((1 << 30)) -l 4194304 "$DEV"
        rig_check "B: discarded range reads back as zeroes" \
            bash -c "dd if='$DEV' bs=1M skip=1024 count=4 iflag=direct status=none | cmp -s - <(head -c 4194304 /dev/zero)"
        a2=$(du -k "$IMG_B" | cut -f1)
        [ $((a1 - a2)) -ge 4096 ] && rig_pass "B: discard deallocates in the backing file (-$((a1 - a2)) KiB)" \
                                  || rig_fail "B: discard deallocates in the backing file" "${a1} -> ${a2} KiB"
    else
        rig_fail "B: LUN offers discard (provisioning_mode unmap)" "discard_max_bytes=0"
    fi
    rig_check "B: logout" rig_logout "$IQN_B"
    rig_clearconfig
    rig_check "B: backing file has the last 4 KiB" \
        bash -c "dd if='$IMG_B' bs=4096 skip=$last count=1 status=none | cmp - /tmp/last.bin"
    alloc=$(du -k "$IMG_B" | cut -f1)
    rig_log "B: big-sparse.img apparent $SIZE_B bytes, allocated ${alloc} KiB"
    [ "$alloc" -lt 65536 ] && rig_pass "B: backing file stays sparse (${alloc} KiB allocated)" \
                           || rig_fail "B: backing file stays sparse" "${alloc} KiB allocated"
else
    rig_diag "B login"
    rig_clearconfig
fi
rm -f "$IMG_B"

# ============================ Phase C ========================================
IQN_C=iqn.2024-01.io.qlun:oversize
IMG_C=$RIG_DATA/small.img
truncate -s 64M "$IMG_C"
"$RIG_MAKE_CONFIG" --image "$IMG_C" --size 128M --name oversize --target-iqn "$IQN_C" -o "$OUT/oversize.json"
mark=$(tcmu_log_mark)
rig_restoreconfig "$OUT/oversize.json" >"$OUT/oversize-restore.txt" 2>&1; rc=$?
cat "$OUT/oversize-restore.txt"
sleep 1
enabled=no
for d in /sys/kernel/config/target/core/user_*/oversize; do
    [ -e "$d/enable" ] && [ "$(cat "$d/enable")" = 1 ] && enabled=yes
done
[ "$rc" != 0 ] && [ $enabled = no ] && rig_pass "C: LUN larger than its image is refused (backstore not enabled)" \
    || rig_fail "C: LUN larger than its image is refused" "restoreconfig rc=$rc enabled=$enabled"
# an initiator must not see a LUN either
if RIG_LUN_TIMEOUT=5 rig_login "$IQN_C" >/dev/null 2>&1; then
    rig_fail "C: initiator finds no LUN" "LUN $RIG_DEV attached"
else
    rig_pass "C: initiator finds no LUN"
fi
rig_logout "$IQN_C" >/dev/null 2>&1
tcmu_log_since "$mark" >"$OUT/oversize-tcmu.log"
echo "--- tcmu-runner log lines for the oversize attempt:"; grep -v ' DEBUG' "$OUT/oversize-tcmu.log" | head -20
if grep -iE 'qlun' "$OUT/oversize-tcmu.log" | grep -qiE 'size|small|larger|exceed|beyond'; then
    rig_pass "C: tcmu-runner log has qlun's size error line"
else
    rig_fail "C: tcmu-runner log has qlun's size error line" "see out/oversize-tcmu.log"
fi
rig_check "C: tcmu-runner still running after the refusal" rig_tcmu_alive
rig_clearconfig
rm -f "$IMG_C"

rig_stop_tcmu
[ "$RIG_NFAIL" -gt 0 ] && rig_diag "end of run"
# keep a copy of tcmu-runner's log next to the report
rig_report
