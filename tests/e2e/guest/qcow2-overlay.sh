#!/bin/bash
# shellcheck disable=SC2034
# Guest half of tests/e2e/test-qcow2-overlay.sh (runs inside the rig VM):
# a qcow2 overlay on a raw base (relative backing name) served as a user:qlun
# LUN; writes through iSCSI land in the overlay, untouched ranges show the
# backing data, UNMAP / WRITE SAME ranges read zero (LBPRZ=1) instead of the
# backing data; the overlay passes qemu-img check and equals the expected
# image; the base is never written.
#
# Inputs in $RIG_SHARE: base.raw, expected.raw, ops.txt lines
#   direct OFFSET LENGTH FILE | buffered OFFSET LENGTH FILE |
#   discard OFFSET LENGTH | punch OFFSET LENGTH | untouched OFFSET LENGTH
# Outputs: report.txt, figures.txt, out/, logs/.  /data/ov/ keeps the images
# for the host's own checks (debugfs dump after power-off).
. "$QLUN_REPO/tests/e2e/lib.sh"
. "$QLUN_REPO/tests/e2e/lib-thin.sh"
RIG_REPORT_FILE=$RIG_SHARE/report.txt
OUT=$RIG_SHARE/out
mkdir -p "$OUT"
: >"$THIN_FIGURES"
RIG_TCMU_DEBUG=${QLUN_E2E_TCMU_DEBUG:-0}
IQN=iqn.2024-01.io.qlun:overlay
DIR=$RIG_DATA/ov
OV=$DIR/overlay.qcow2
S=$RIG_SHARE

HDIR=$(rig_handler_dir)
if [ -z "$HDIR" ] || [ ! -f "$HDIR/handler_qlun.so" ]; then
    rig_fail "handler_qlun.so found" "QLUN_HANDLER_DIR='${QLUN_HANDLER_DIR:-}'"; rig_report; exit
fi
if ! rig_check "target up (LIO, D-Bus, tcmu-runner with qlun)" rig_target_up "$HDIR"; then
    rig_diag "target up"; rig_report; exit
fi

SIZE=$(stat -c %s "$S/base.raw")
mkdir -p "$DIR"
cp "$S/base.raw" "$DIR/base.raw"
rig_check "qemu-img create -f qcow2 -F raw -b base.raw overlay.qcow2 (relative backing name, on /data)" \
    bash -c "cd '$DIR' && qemu-img create -q -f qcow2 -F raw -b base.raw overlay.qcow2 $SIZE"
qemu-img info "$OV" >"$OUT/info-before.txt" 2>&1
"$RIG_MAKE_CONFIG" --image "$OV" --format qcow2 --name ov0 --target-iqn "$IQN" \
    --initiator-iqn "$RIG_INITIATOR_IQN" --chap-user "$RIG_CHAP_USER" --chap-password "$RIG_CHAP_PASS" \
    -o "$OUT/overlay.json"
grep -o '"config": "[^"]*"' "$OUT/overlay.json"
rig_check "restoreconfig: user:qlun with cfgstring qlun/$OV (format qcow2 by default in make-config: explicit)" \
    rig_restoreconfig "$OUT/overlay.json" >"$OUT/restore.txt" 2>&1 || { cat "$OUT/restore.txt"; rig_diag restore; }

DEV=
rig_check "iSCSI login (CHAP)" rig_login "$IQN" && DEV=$RIG_DEV
if [ -n "$DEV" ]; then
    SERIAL=$(thin_serial "$DEV")
    [ "$(rig_dev_bytes "$DEV")" = "$SIZE" ] && rig_pass "LUN size = overlay virtual size ($SIZE)" \
        || rig_fail "LUN size = overlay virtual size" "got $(rig_dev_bytes "$DEV")"
    rig_check "before any write the LUN reads as the backing file (whole LUN, O_DIRECT)" \
        bash -c "dd if='$DEV' bs=1M iflag=direct status=none | cmp - '$S/base.raw'"
    thin_stats_snap "$SERIAL" "$OUT/stats-0.json"
    nd=0; nb=0; ok=1
    while read -r kind off len file; do
        case "$kind" in
            direct) dd if="$S/$file" of="$DEV" bs=512 seek=$((off / 512)) count=$((len / 512)) \
                        oflag=direct conv=notrunc status=none || ok=0; nd=$((nd + 1)) ;;
            buffered) dd if="$S/$file" of="$DEV" bs="$len" count=1 seek="$off" oflag=seek_bytes \
                        conv=notrunc status=none || ok=0; nb=$((nb + 1)) ;;
        esac
    done <"$S/ops.txt"
    sync; blockdev --flushbufs "$DEV" || ok=0
    [ $ok = 1 ] && rig_pass "writes: $nd O_DIRECT (sector-aligned, partial clusters) + $nb buffered unaligned, flushed" \
        || rig_fail "writes through the initiator"
    while read -r kind off len _; do
        case "$kind" in
            discard) rig_check "blkdiscard -o $off -l $len (UNMAP over backed clusters)" blkdiscard -o "$off" -l "$len" "$DEV" ;;
            punch) rig_check "fallocate -p -o $off -l $len (WRITE SAME 16 + UNMAP, partial clusters)" fallocate -p -o "$off" -l "$len" "$DEV" ;;
        esac
    done <"$S/ops.txt"
    thin_stats_snap "$SERIAL" "$OUT/stats-1.json"
    read -r w z u um ws e < <(thin_py deltas "$OUT/stats-0.json" "$OUT/stats-1.json" bytes_written bytes_zeroed \
        bytes_unmapped cmd:UNMAP "cmd:WRITE SAME (16)" errors)
    thin_figure "statistics delta: bytes_written=$w bytes_zeroed=$z bytes_unmapped=$u UNMAP=$um WRITE SAME(16)=$ws errors=$e"
    [ "$um" -gt 0 ] && [ "$ws" -gt 0 ] && [ "$e" = 0 ] \
        && rig_pass "statistics: UNMAP +$um, WRITE SAME (16) +$ws, no errors" \
        || rig_fail "statistics: UNMAP and WRITE SAME counted, no errors" "UNMAP +$um WS16 +$ws errors +$e"
    echo 3 >/proc/sys/vm/drop_caches
    if dd if="$DEV" bs=1M iflag=direct status=none >"$RIG_DATA/readback.bin" && cmp "$RIG_DATA/readback.bin" "$S/expected.raw" >"$OUT/readback-cmp.txt" 2>&1; then
        rig_pass "read-back of the whole LUN through the initiator == expected (writes + zeroed ranges + backing elsewhere)"
    else
        rig_fail "read-back == expected" "$(head -1 "$OUT/readback-cmp.txt")"
        # which kind of range differs?
        cmp -l "$RIG_DATA/readback.bin" "$S/expected.raw" 2>/dev/null | head -3 >>"$OUT/readback-cmp.txt"
    fi
    rm -f "$RIG_DATA/readback.bin"
    rig_check "logout" rig_logout "$IQN" >/dev/null
fi
rig_clearconfig
sleep 1
rig_check "tcmu-runner still running" rig_tcmu_alive

rig_check "qemu-img check overlay.qcow2 exits 0" bash -c "qemu-img check '$OV' >'$OUT/check.txt' 2>&1"
cat "$OUT/check.txt"
rig_check "qemu-img compare overlay.qcow2 expected.raw: identical" \
    bash -c "qemu-img compare -F raw '$OV' '$S/expected.raw' >'$OUT/compare.txt' 2>&1"
cat "$OUT/compare.txt"
rig_check "the base image was not written (cmp with the original)" cmp "$DIR/base.raw" "$S/base.raw"
qemu-img info --output=json "$OV" >"$OUT/info-after.json" 2>&1
bf=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d.get("backing-filename",""), d.get("backing-filename-format",""))' "$OUT/info-after.json")
[ "$bf" = "base.raw raw" ] && rig_pass "overlay header still names backing 'base.raw' (raw), relative" \
    || rig_fail "overlay header backing name unchanged" "got '$bf'"
# allocation: only clusters touched by the writes/zeroing are in the overlay;
# the untouched ranges still come from the backing file
qemu-img map --output=json "$OV" >"$OUT/map.json"
read -r top untouched_bad < <(python3 - "$OUT/map.json" "$S/ops.txt" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
top = sum(e["length"] for e in m if e["depth"] == 0)
bad = 0
for line in open(sys.argv[2]):
    p = line.split()
    if p[0] != "untouched":
        continue
    a, b = int(p[1]), int(p[1]) + int(p[2])
    for e in m:
        s, t = e["start"], e["start"] + e["length"]
        if s < b and t > a and e["depth"] != 1:
            bad += min(b, t) - max(a, s)
print(top, bad)
PY
)
limit=$(cat "$S/touched-bytes.txt")
thin_figure "overlay layer holds $top bytes (clusters touched by the writes and zeroing: $limit bytes); overlay file $(thin_alloc_kib "$OV") KiB"
[ -n "$top" ] && [ "$top" -gt 0 ] && [ "$top" -le "$limit" ] \
    && rig_pass "overlay allocates only touched clusters ($top <= $limit bytes)" \
    || rig_fail "overlay allocates only touched clusters" "top layer $top bytes, touched $limit"
[ "${untouched_bad:-1}" = 0 ] && rig_pass "untouched ranges are still served from the backing file (map depth 1)" \
    || rig_fail "untouched ranges are still served from the backing file" "$untouched_bad bytes not at depth 1"
rig_stop_tcmu
[ "$RIG_NFAIL" -gt 0 ] && rig_diag "end of run"
rig_report
