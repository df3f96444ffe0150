#!/bin/bash
# shellcheck disable=SC2034
# Guest half of tests/e2e/test-jobs.sh (runs inside the rig VM): block jobs
# and filters on live LUNs (issue 12), one boot, while fio writes with
# crc32c verify (verify_backlog) during every job:
#
#  1. stream a 3-deep chain (base.raw <- mid1 <- mid2 <- top) into the top
#     down to the base, then once more without a base (top stands alone);
#  2. commit the middle layer of base <- mid <- top (--top mid --base base);
#  3. active commit of the same LUN: ready, complete, the LUN pivots onto
#     the base and LIO's dev_config names it;
#  4. mirror a qcow2 LUN onto a loop device (raw, --existing) and pivot;
#  5. mirror to a new qcow2 and cancel: the LUN keeps serving the source;
#  6. copy-on-read over a chain with an empty top (cfgstring, live off/on);
#  7. throttle: guest/throttle.sh (the throttle filter's own rig checks,
#     run in this boot after the jobs' LUNs are closed).
# After each job: fio verify passed, qemu-img check of every image, the
# backing chain as expected, the LUN's content (read through the initiator)
# == the images (qemu-img compare); the mirror target's allocation ~ the
# source's data.  At the end, with tcmu-runner stopped, every image again.
# Outputs: report.txt, figures.txt (per job: wall time, bytes copied vs the
# layers' data, the initiator's fio IOPS during the job vs without), out/.
. "$QLUN_REPO/tests/e2e/lib.sh"
. "$QLUN_REPO/tests/e2e/lib-thin.sh"
RIG_REPORT_FILE=$RIG_SHARE/report.txt
OUT=$RIG_SHARE/out
mkdir -p "$OUT"
: >"$THIN_FIGURES"
IQN=iqn.2024-01.io.qlun:jobs
DIR=$RIG_DATA/jobs
M=$((1 << 20))
SIZE=$((64 * M))
# fio's load covers the first 16 MiB of a LUN; the layers' own data lies
# above it, so the maps of the layers say what the jobs had to copy.
LOAD=$((16 * M))
# seconds of fio during a job, and of the run without a job it is compared to
FIO_SECS=${QLUN_JOBS_FIO_SECS:-10}

HDIR=$(rig_handler_dir)
QLUNCTL=${QLUN_BUILD_DIR:-$HDIR}/qlunctl
if [ -z "$HDIR" ] || [ ! -f "$HDIR/handler_qlun.so" ] || [ ! -x "$QLUNCTL" ]; then
    rig_fail "handler_qlun.so and qlunctl found" "QLUN_HANDLER_DIR='${QLUN_HANDLER_DIR:-}' qlunctl '$QLUNCTL'"
    rig_report; exit
fi
RIG_TCMU_DEBUG=0   # -d logs every CDB: far too much under fio
if ! rig_check "target up (LIO, D-Bus, tcmu-runner with qlun)" rig_target_up "$HDIR"; then
    rig_diag "target up"; rig_report; exit
fi
ctl() { "$QLUNCTL" "$@"; }
. "$QLUN_REPO/tests/e2e/lib-jobs.sh"

# ---- the images ---------------------------------------------------------------
rm -rf "$DIR"; mkdir -p "$DIR"/{st,cm,mr,mc,cr}
# stream: base.raw <- mid1 <- mid2 <- top, each layer with its own data
jobs_data "$DIR/st/base.raw" raw "$SIZE" 1 20 24 40 44
jobs_overlay "$DIR/st/mid1.qcow2" "$DIR/st/base.raw" raw 2 22 26 48 52
jobs_overlay "$DIR/st/mid2.qcow2" "$DIR/st/mid1.qcow2" qcow2 3 28 30 56 58
jobs_overlay "$DIR/st/top.qcow2" "$DIR/st/mid2.qcow2" qcow2 4 60 61
# commit: base.qcow2 <- mid <- top
jobs_data "$DIR/cm/base.qcow2" qcow2 "$SIZE" 5 20 28
jobs_overlay "$DIR/cm/mid.qcow2" "$DIR/cm/base.qcow2" qcow2 6 24 36 44 52
jobs_overlay "$DIR/cm/top.qcow2" "$DIR/cm/mid.qcow2" qcow2 7 56 60
# mirror: a single qcow2 with data, zero clusters and holes
jobs_data "$DIR/mr/src.qcow2" qcow2 "$SIZE" 8 20 28 36 40
qemu-io -f qcow2 -c "write -z $((44 * M)) $((8 * M))" "$DIR/mr/src.qcow2" >/dev/null
jobs_data "$DIR/mc/src.qcow2" qcow2 "$SIZE" 9 24 32 48 52
# copy-on-read: base.qcow2 <- top.qcow2 (empty)
jobs_data "$DIR/cr/base.qcow2" qcow2 "$SIZE" 10 16 24 32 40 48 64
qemu-img create -q -f qcow2 -b "$DIR/cr/base.qcow2" -F qcow2 "$DIR/cr/top.qcow2"
for f in "$DIR"/*/*; do qemu-img info --backing-chain "$f" >>"$OUT/images-before.txt" 2>&1; done

# one target, five LUNs
"$RIG_MAKE_CONFIG" --image "$DIR/st/top.qcow2" --format qcow2 --name jstream --wwn qlunjst \
    --lun "image=$DIR/cm/top.qcow2,format=qcow2,name=jcommit,wwn=qlunjcm" \
    --lun "image=$DIR/mr/src.qcow2,format=qcow2,name=jmirror,wwn=qlunjmr" \
    --lun "image=$DIR/mc/src.qcow2,format=qcow2,name=jcancel,wwn=qlunjmc" \
    --lun "image=$DIR/cr/top.qcow2,format=qcow2,name=jcor,wwn=qlunjcr,opts=copy_on_read=on" \
    --target-iqn "$IQN" --initiator-iqn "$RIG_INITIATOR_IQN" \
    --chap-user "$RIG_CHAP_USER" --chap-password "$RIG_CHAP_PASS" -o "$OUT/jobs.json"
rig_check "restoreconfig: five user:qlun LUNs (one with copy_on_read=on)" \
    rig_restoreconfig "$OUT/jobs.json" >"$OUT/restore.txt" 2>&1 || { cat "$OUT/restore.txt"; rig_diag restore; }
rig_check "iSCSI login" rig_login "$IQN" || { rig_diag login; rig_report; exit; }
declare -A DEV
n=0
for l in jstream jcommit jmirror jcancel jcor; do
    DEV[$l]=$(rig_lun_dev "$IQN" $n) || { rig_fail "disk of LUN $n ($l)"; rig_diag; rig_report; exit; }
    n=$((n + 1))
done
rig_log "LUNs: $(for l in "${!DEV[@]}"; do printf '%s=%s ' "$l" "${DEV[$l]}"; done)"
"$QLUNCTL" --json events >"$OUT/events.txt" 2>&1 &
EVENTS_PID=$!

# ---- 1. stream a 3-deep chain into the top, then without a base -----------------
L=jstream; S=$DIR/st
jobs_run stream-base $L 11 "jobs_layers_data $S/mid1.qcow2 $S/mid2.qcow2" "data of mid1+mid2" -- stream --base "$S/base.raw"
jobs_after stream-base $L "$S/top.qcow2" qcow2 "top.qcow2 base.raw" "$S/top.qcow2 $S/base.raw"
jobs_run stream-nobase $L 12 "jobs_layer_data $S/base.raw raw" "data of base.raw" -- stream
jobs_after stream-nobase $L "$S/top.qcow2" qcow2 "top.qcow2" "$S/top.qcow2"
jobs_top_holds stream-nobase "$S/top.qcow2" "$(jobs_layer_data "$S/base.raw" raw)"

# ---- 2. commit the middle layer ---------------------------------------------------
L=jcommit; C=$DIR/cm
want=$(jobs_img_sha "$C/mid.qcow2")   # base as mid saw it: what base must hold after
jobs_run commit-mid $L 13 "jobs_layer_data $C/mid.qcow2" "data of mid" -- commit --top "$C/mid.qcow2" --base "$C/base.qcow2"
jobs_after commit-mid $L "$C/top.qcow2" qcow2 "top.qcow2 base.qcow2" "$C/top.qcow2 $C/base.qcow2 $C/mid.qcow2"
[ "$(jobs_img_sha "$C/base.qcow2")" = "$want" ] \
    && rig_pass "commit-mid: base.qcow2 now reads as mid.qcow2 over the old base did" \
    || rig_fail "commit-mid: base.qcow2 holds mid's data"

# ---- 3. active commit and pivot -----------------------------------------------------
jobs_run commit-active $L 14 "jobs_layer_data $C/top.qcow2" "data of top (at the start)" --pivot -- commit
jobs_after commit-active $L "$C/base.qcow2" qcow2 "base.qcow2" "$C/base.qcow2 $C/top.qcow2"
jobs_dev_config commit-active $L "$C/base.qcow2" "$C/top.qcow2"

# ---- 4. mirror to a loop device and pivot -------------------------------------------
L=jmirror; R=$DIR/mr
truncate -s "$SIZE" "$DIR/loop.img"
LOOP=$(jobs_losetup "$DIR/loop.img")
if [ -n "$LOOP" ]; then
    rig_pass "loop device $LOOP over a sparse $((SIZE / M)) MiB file"
    jobs_run mirror-loop $L 15 "jobs_layer_data $R/src.qcow2" "data of src.qcow2" --pivot -- mirror "$LOOP" --existing --format raw
    jobs_after mirror-loop $L "$LOOP" raw "$(basename "$LOOP")" "$R/src.qcow2"
    jobs_dev_config mirror-loop $L "$LOOP"
    jobs_alloc_near mirror-loop "$DIR/loop.img" "$(jobs_layer_data "$R/src.qcow2")"
    z=$(jobs_data_in "$DIR/loop.img" raw $((44 * M)) $((8 * M)))
    [ "$z" = 0 ] && rig_pass "mirror-loop: the source's zero clusters [44M,52M) are holes in the loop file" \
        || rig_fail "mirror-loop: zero clusters stay holes on the target" "$z bytes of data there"
else
    rig_fail "loop device over a sparse file" "$(cat "$OUT/losetup.txt")"
fi

# ---- 5. mirror and cancel -------------------------------------------------------------
L=jcancel; X=$DIR/mc
jobs_run mirror-cancel $L 16 "jobs_layer_data $X/src.qcow2" "data of src.qcow2" --cancel -- mirror "$X/dst.qcow2" --format qcow2
jobs_after mirror-cancel $L "$X/src.qcow2" qcow2 "src.qcow2" "$X/src.qcow2 $X/dst.qcow2"
jobs_dev_config mirror-cancel $L "$X/src.qcow2" "$X/dst.qcow2"

# ---- 6. copy-on-read ------------------------------------------------------------------
jobs_cor jcor "$DIR/cr/top.qcow2" "$DIR/cr/base.qcow2"

# ---- the jobs' events -----------------------------------------------------------------
kill "$EVENTS_PID" 2>/dev/null; wait "$EVENTS_PID" 2>/dev/null
for e in JOB_STARTED JOB_READY JOB_COMPLETED; do
    c=$(grep -c "$e" "$OUT/events.txt")
    [ "${c:-0}" -gt 0 ] && rig_pass "events: $e seen ($c)" || rig_fail "events: $e seen" "none in out/events.txt"
done

# ---- the LUNs' last content, then offline checks ---------------------------------------
for l in jstream jcommit jmirror jcancel jcor; do
    dd if="${DEV[$l]}" of="$DIR/final-$l.raw" bs=1M iflag=direct status=none
done
rig_check "logout" rig_logout "$IQN" >/dev/null

# ---- 7. throttle (its own target, same boot) -------------------------------------------
# The jobs' LUNs are closed first: the throttle checks start their own
# tcmu-runner and LIO configuration.
rig_clearconfig
rig_stop_tcmu
jobs_guest_script "$QLUN_REPO/tests/e2e/guest/throttle.sh"

jobs_offline jstream "$DIR/st/top.qcow2" qcow2 "top.qcow2" "$DIR/st/base.raw $DIR/st/mid1.qcow2 $DIR/st/mid2.qcow2"
jobs_offline jcommit "$DIR/cm/base.qcow2" qcow2 "base.qcow2" "$DIR/cm/mid.qcow2 $DIR/cm/top.qcow2"
[ -n "$LOOP" ] && jobs_offline jmirror "$LOOP" raw "$(basename "$LOOP")" "$DIR/mr/src.qcow2"
jobs_offline jcancel "$DIR/mc/src.qcow2" qcow2 "src.qcow2" "$DIR/mc/dst.qcow2"
jobs_offline jcor "$DIR/cr/top.qcow2" qcow2 "top.qcow2 base.qcow2" ""
[ -n "$LOOP" ] && losetup -d "$LOOP"
[ "$RIG_NFAIL" -gt 0 ] && rig_diag "end of run"
rig_report
