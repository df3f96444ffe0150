#!/bin/bash
# shellcheck disable=SC2034
# Guest half of tests/e2e/test-crash.sh (runs inside the rig VM): what a
# crash, a close under load and a full filesystem do to served LUNs.
#
#   LUN 0 crashr  raw   1 GiB sparse  /data/crash.raw
#   LUN 1 crashq  qcow2 1 GiB         /data/crash.qcow2
#   LUN 2 nospcq  qcow2 256 MiB       /small/nospc.qcow2   (/small: 48 MiB ext4
#   LUN 3 nospcr  raw   256 MiB sparse /small/nospc.raw     on a loop device)
#
# Part 1, kill -9 under load: fio on LUN 0 and LUN 1 at once — per LUN one job
#   writing O_DIRECT|O_SYNC (FUA) 4 KiB blocks with crc32c verify headers and
#   verify_state_save over [0, 256M), one 64 KiB direct-write job with an
#   fsync every 16 writes over [512M, 768M); a 64 KiB marker written and
#   flushed (sg_sync) at 960M during the run; then kill -9 tcmu-runner.
#   qemu-img check of the qcow2 as the crash left it (exit 0 or 3); restart
#   tcmu-runner (it re-opens the TCMU devices, blocks them, resets their
#   rings: the commands in flight complete BUSY and the initiator retries
#   them; the iSCSI session is never lost); a new block written and read on
#   both LUNs (time to serve again); fio finishes; fio verify_only with the
#   saved state checks every FUA write fio saw completed; the markers read
#   back.
# Part 3, ENOSPC: on each /small LUN, 4 MiB written + SYNCHRONIZE CACHE
#   (checksummed), a filler file leaves ~8 MiB free, O_DIRECT writes until
#   the initiator fails them; the sense must be DATA PROTECT, SPACE
#   ALLOCATION FAILED WRITE PROTECT (27/07) (sg_raw WRITE(10) prints it; the
#   kernel log too); the 4 MiB read back intact; SYNCHRONIZE CACHE answers
#   GOOD (no latched flush error); rm the filler; the failed range is
#   written, flushed and read back again without reopening the LUN.
# Part 2, close with I/O in flight: fio on LUN 1, its backstore deleted
#   (targetcli) mid-run; tcmu-runner still runs, LUN 0 serves, a new
#   backstore on the same image (LUN 5) serves; after clearconfig qemu-img
#   check of every qcow2 exits 0 or 3.
#
# Outputs in $RIG_SHARE: report.txt, figures.txt, out/, logs/.
. "$QLUN_REPO/tests/e2e/lib.sh"
RIG_REPORT_FILE=$RIG_SHARE/report.txt
OUT=$RIG_SHARE/out
FIG=$RIG_SHARE/figures.txt
mkdir -p "$OUT"
: >"$FIG"
RIG_TCMU_DEBUG=${QLUN_E2E_TCMU_DEBUG:-0}    # -d logs every CDB: far too much under fio

IQN=iqn.2024-01.io.qlun:crash
M=$((1 << 20))
IMGR=$RIG_DATA/crash.raw
IMGQ=$RIG_DATA/crash.qcow2
SMALL=/small
SMALL_IMG=$RIG_DATA/small.ext4
NSQ=$SMALL/nospc.qcow2
NSR=$SMALL/nospc.raw
FIODIR=$RIG_DATA/fio          # fio's verify state files (local-<job>-<n>-verify.state)
KILL_AFTER=${QLUN_E2E_CRASH_KILL_AFTER:-6}   # s of fio writing before the kill
AFTER_RESTART=${QLUN_E2E_CRASH_AFTER:-4}     # s of fio writing after the LUNs serve again
CMD_TIME_OUT=${QLUN_E2E_CRASH_TIMEOUT:-120}  # TCMU cmd_time_out and sd timeout of the crash LUNs

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}'; }
figure() { echo "$*" >>"$FIG"; rig_log "FIGURE: $*"; }
# writes completed by the initiator on DEV so far (/sys/block/sdX/stat field 5)
dev_writes() { awk '{print $5}' "/sys/block/${1#/dev/}/stat"; }
# wait_writes DEV MIN_NEW TIMEOUT_S : until DEV completed MIN_NEW more writes
wait_writes() {
    local dev=$1 n=$2 end=$((SECONDS + $3)) w0
    w0=$(dev_writes "$dev")
    while [ "$SECONDS" -lt "$end" ]; do
        [ $(( $(dev_writes "$dev") - w0 )) -ge "$n" ] && return 0
        sleep 0.2
    done
    return 1
}

# qcheck_ok FILE : qemu-img check exit 0 (clean) or 3 (leaked clusters only)
qcheck() {   # LABEL IMG OUTFILE [extra qemu-img args] -> sets QRC
    local label=$1 img=$2 out=$3; shift 3
    qemu-img check "$@" -f qcow2 "$img" >"$out" 2>&1; QRC=$?
    local what="exit $QRC"
    case $QRC in 0) what="exit 0 (clean)" ;; 3) what="exit 3 (leaks only: $(grep -o '[0-9]* leaked clusters' "$out"))" ;; esac
    figure "$label: qemu-img check $img: $what"
    if [ "$QRC" = 0 ] || [ "$QRC" = 3 ]; then
        rig_pass "$label: qemu-img check exits 0 or 3 ($what)"
    else
        rig_fail "$label: qemu-img check exits 0 or 3" "$what: $(grep -m2 -iE 'error|corrupt' "$out" | tr '\n' ' ')"
    fi
}

# serve DEV OFFSET_BYTES LABEL : a fresh 64 KiB written (O_DIRECT), flushed,
# dropped from the cache and read back
serve() {
    local dev=$1 off=$2 f=$OUT/serve-$3.bin
    head -c 65536 /dev/urandom >"$f"
    dd if="$f" of="$dev" bs=64k seek=$((off / 65536)) count=1 oflag=direct conv=notrunc status=none || return 1
    sg_sync "$dev" || return 1
    dd if="$dev" bs=64k skip=$((off / 65536)) count=1 iflag=direct status=none | cmp -s - "$f"
}

tcmu_up() { rig_start_tcmu "$HDIR" >>"$OUT/tcmu-starts.txt" 2>&1; }

HDIR=$(rig_handler_dir)
if [ -z "$HDIR" ] || [ ! -f "$HDIR/handler_qlun.so" ]; then
    rig_fail "handler_qlun.so found" "QLUN_HANDLER_DIR='${QLUN_HANDLER_DIR:-}'"; rig_report; exit
fi
if ! rig_check "target up (LIO, D-Bus, tcmu-runner with qlun)" rig_target_up "$HDIR"; then
    rig_diag "target up"; rig_report; exit
fi
# kernel messages only in dmesg (the LUN deleted under fio floods the console)
dmesg -n 1

# ---- images, the small filesystem, the target -----------------------------------
modprobe loop
truncate -s 1G "$IMGR"
qemu-img create -q -f qcow2 "$IMGQ" 1G
truncate -s $((48 * M)) "$SMALL_IMG"
mkdir -p "$SMALL" "$FIODIR"
rig_check "small filesystem: 48 MiB ext4 (4 KiB blocks, journal) on a loop device at $SMALL" \
    bash -c "mkfs.ext4 -q -F -b 4096 -m 0 '$SMALL_IMG' && mount -o loop '$SMALL_IMG' '$SMALL'"
qemu-img create -q -f qcow2 "$NSQ" 256M
truncate -s $((256 * M)) "$NSR"
"$RIG_MAKE_CONFIG" --image "$IMGR" --format raw --name crashr \
    --lun "image=$IMGQ,format=qcow2,name=crashq" \
    --lun "image=$NSQ,format=qcow2,name=nospcq" \
    --lun "image=$NSR,format=raw,name=nospcr" \
    --target-iqn "$IQN" --initiator-iqn "$RIG_INITIATOR_IQN" \
    --chap-user "$RIG_CHAP_USER" --chap-password "$RIG_CHAP_PASS" -o "$OUT/crash.json"
# The crash LUNs get TCMU cmd_time_out 120 s (default 30; settable only
# before the LUN is exported): a command left in the ring by the killed
# runner then waits for the restart's ring reset (BUSY, retried by the
# initiator) instead of expiring with an error when a restart under TCG on a
# shared host takes longer than 30 s.  The initiator's sd timeout is raised
# to match below.
python3 - "$OUT/crash.json" "$CMD_TIME_OUT" <<'PY'
import json, sys
p, t = sys.argv[1], int(sys.argv[2])
d = json.load(open(p))
for so in d["storage_objects"]:
    if so["name"] in ("crashr", "crashq"):
        so.setdefault("attributes", {})["cmd_time_out"] = t
json.dump(d, open(p, "w"), indent=2)
PY
DR=; DQ=; DNQ=; DNR=
if rig_check "restoreconfig: 4 user:qlun LUNs (raw + qcow2 on /data, qcow2 + raw on $SMALL)" \
        rig_restoreconfig "$OUT/crash.json" >"$OUT/restore.txt" 2>&1 &&
   rig_check "iSCSI login (CHAP)" rig_login "$IQN"; then
    DR=$RIG_DEV
    DQ=$(rig_lun_dev "$IQN" 1); DNQ=$(rig_lun_dev "$IQN" 2); DNR=$(rig_lun_dev "$IQN" 3)
    [ -n "$DQ" ] && [ -n "$DNQ" ] && [ -n "$DNR" ] && rig_pass "LUNs 1-3 appear ($DR $DQ $DNQ $DNR)" \
        || rig_fail "LUNs 1-3 appear" "'$DQ' '$DNQ' '$DNR'"
else
    cat "$OUT/restore.txt"; rig_diag "restore/login"
fi
if [ -z "$DR" ] || [ -z "$DQ" ] || [ -z "$DNQ" ] || [ -z "$DNR" ]; then
    rig_stop_tcmu; rig_report; exit
fi

# ==== Part 1: kill -9 under load ==================================================
for d in "$DR" "$DQ"; do
    sdisk=$(ls -d /sys/block/"${d#/dev/}"/device/scsi_disk/* | head -1)
    ct=$(cat "$sdisk/cache_type"); fua=$(cat /sys/block/"${d#/dev/}"/queue/fua)
    [ "$ct" = "write back" ] && [ "$fua" = 1 ] \
        && rig_pass "$d: write cache on and FUA honoured (cache_type '$ct', queue/fua $fua): O_SYNC writes go out as FUA" \
        || rig_fail "$d: write back cache with FUA" "cache_type '$ct', queue/fua '$fua'"
done
SD_DEFAULT=$(cat /sys/block/"${DQ#/dev/}"/device/timeout)
for d in "$DR" "$DQ"; do echo "$CMD_TIME_OUT" >/sys/block/"${d#/dev/}"/device/timeout; done
SD_TIMEOUT=$(cat /sys/block/"${DQ#/dev/}"/device/timeout)
figure "initiator: sd timeout ${SD_TIMEOUT} s (default $SD_DEFAULT), iSCSI replacement_timeout $(iscsiadm -m node -T "$IQN" -p "$RIG_PORTAL" | sed -n 's/^node.session.timeo.replacement_timeout = //p') s; TCMU cmd_time_out $(cat /sys/kernel/config/target/core/user_*/crashq/attrib/cmd_time_out 2>/dev/null) s (crashq), $(cat /sys/kernel/config/target/core/user_*/nospcq/attrib/cmd_time_out 2>/dev/null) s (default, nospcq)"

# FUA jobs first: verify.fio repeats them as jobs 0 and 1 (the state files
# are named after the job's name and index)
fua_job() {   # NAME DEV
    cat <<EOF
[$1]
filename=$2
rw=randwrite
bs=4k
offset=0
size=256M
iodepth=8
sync=1
verify=crc32c
verify_state_save=1
write_iops_log=$OUT/iops-$1
log_avg_msec=1000
EOF
}
{
    printf '[global]\nioengine=libaio\ndirect=1\nrandrepeat=1\ngroup_reporting=0\nruntime=600\n'
    fua_job fua-r "$DR"; echo do_verify=0
    fua_job fua-q "$DQ"; echo do_verify=0
    for j in load-r:"$DR" load-q:"$DQ"; do
        printf '[%s]\nfilename=%s\nrw=randwrite\nbs=64k\noffset=512M\nsize=256M\niodepth=4\nfsync=16\n' "${j%%:*}" "${j#*:}"
    done
} >"$OUT/crash.fio"
{
    printf '[global]\nioengine=libaio\ndirect=1\nrandrepeat=1\n'
    fua_job fua-r "$DR" | grep -v iops; echo "do_verify=1"; echo "verify_only=1"; echo "verify_state_load=1"
    fua_job fua-q "$DQ" | grep -v iops; echo "do_verify=1"; echo "verify_only=1"; echo "verify_state_load=1"
} >"$OUT/verify.fio"
dmesg >"$OUT/dmesg-before-kill.txt"

rm -f "$FIODIR"/*.state
(cd "$FIODIR" && exec fio --output="$OUT/fio-crash.txt" "$OUT/crash.fio") &
FIO_PID=$!
T_FIO=$(now)
# fio starts slowly under TCG: time the kill from its first writes
if wait_writes "$DR" 8 60 && wait_writes "$DQ" 8 30; then
    rig_pass "fio writes to both LUNs"
else
    rig_fail "fio writes to both LUNs" "no writes within 60 s: see out/fio-crash.txt"
fi
T_IO=$(now); wrio=$(dev_writes "$DR"); wqio=$(dev_writes "$DQ")
sleep $((KILL_AFTER / 2))
# markers: plain writes, then SYNCHRONIZE CACHE, while the load runs
head -c 65536 /dev/urandom >"$OUT/marker.bin"
mk_ok=1
for d in "$DR" "$DQ"; do
    dd if="$OUT/marker.bin" of="$d" bs=64k seek=$((960 * M / 65536)) count=1 oflag=direct conv=notrunc status=none || mk_ok=0
    sg_sync "$d" || mk_ok=0
done
[ $mk_ok = 1 ] && rig_pass "marker (64 KiB at 960M) written and SYNCHRONIZE CACHE on both LUNs during the load" \
    || rig_fail "marker written and flushed during the load"
sleep $((KILL_AFTER - KILL_AFTER / 2))
wr0=$(dev_writes "$DR"); wq0=$(dev_writes "$DQ")
sleep 1
wr1=$(dev_writes "$DR"); wq1=$(dev_writes "$DQ")
INFLIGHT="$(tr -s ' ' <"/sys/block/${DR#/dev/}/inflight") / $(tr -s ' ' <"/sys/block/${DQ#/dev/}/inflight")"
T_KILL=$(now)
OLD_PID=$RIG_TCMU_PID
kill -9 "$RIG_TCMU_PID"
wait "$RIG_TCMU_PID" 2>/dev/null
RIG_TCMU_PID=
KILL_REL=$(awk -v a="$T_FIO" -v b="$T_KILL" 'BEGIN{printf "%.1f", b-a}')
KILL_IO=$(awk -v a="$T_IO" -v b="$T_KILL" 'BEGIN{printf "%.1f", b-a}')
rig_log "tcmu-runner (pid $OLD_PID) killed with SIGKILL ${KILL_REL} s after fio started, ${KILL_IO} s after its first writes"
figure "kill -9: in the last second before the kill the initiator completed $((wr1 - wr0)) writes on the raw LUN, $((wq1 - wq0)) on the qcow2 LUN; in flight (read write) at the kill: $INFLIGHT"
kill -0 "$FIO_PID" 2>/dev/null && [ $((wr1 - wr0)) -gt 0 ] && [ $((wq1 - wq0)) -gt 0 ] \
    && rig_pass "tcmu-runner killed while fio was writing to both LUNs" \
    || rig_fail "tcmu-runner killed while fio was writing to both LUNs" "fio alive: $(kill -0 "$FIO_PID" 2>/dev/null && echo yes || echo no), writes in the last second: $((wr1 - wr0)) / $((wq1 - wq0))"
# the image as the crash left it (nothing has it open now)
qcheck "kill -9: crash.qcow2 as the crash left it" "$IMGQ" "$OUT/check-crash-state.txt"
T_RESTART=$(now)
if rig_check "tcmu-runner restarted after kill -9 (re-opens the 4 TCMU devices)" tcmu_up; then
    UP_S=$(since "$T_RESTART")
    ok=1
    serve "$DR" $((1000 * M)) r1 || ok=0
    serve "$DQ" $((1000 * M)) q1 || ok=0
    SERVE_S=$(since "$T_KILL"); SERVE_R=$(since "$T_RESTART")
    [ $ok = 1 ] && rig_pass "both LUNs serve again without repair: a new 64 KiB written, SYNCHRONIZE CACHE, read back" \
        || rig_fail "both LUNs serve again after the restart" "see dmesg / tcmu-runner log"
    figure "kill -9: tcmu-runner up ${UP_S} s after the restart command; a new write+flush+read served on both LUNs ${SERVE_R} s after the restart command, ${SERVE_S} s after the kill (incl. the qemu-img check in between)"
else
    rig_diag "restart"
fi
grep -E 'open|serving|reset|ring' "$RIG_TCMU_LOG" | grep -v DEBUG | tail -n 12 >"$OUT/tcmu-restart-lines.txt"
# fio goes on (its commands in flight were failed BUSY by the ring reset and
# retried): let it write a few seconds more, then stop it (SIGINT: it saves
# its verify state)
if kill -0 "$FIO_PID" 2>/dev/null && wait_writes "$DR" 8 60 && wait_writes "$DQ" 8 30 && kill -0 "$FIO_PID" 2>/dev/null; then
    rig_pass "fio writes on to both LUNs after the restart (the commands in flight at the kill were retried)"
    sleep "$AFTER_RESTART"
else
    rig_fail "fio writes on to both LUNs after the restart" "fio alive: $(kill -0 "$FIO_PID" 2>/dev/null && echo yes || echo no); see out/fio-crash.txt, out/dmesg-kill.txt"
fi
kill -INT "$FIO_PID" 2>/dev/null
for _ in $(seq 60); do kill -0 "$FIO_PID" 2>/dev/null || break; sleep 1; done
kill -0 "$FIO_PID" 2>/dev/null && { rig_log "fio still running 60 s after SIGINT: SIGKILL"; kill -KILL "$FIO_PID"; }
wait "$FIO_PID"; FIO_RC=$?
FIO_S=$(since "$T_FIO")
dmesg >"$OUT/dmesg-after-kill.txt"
diff "$OUT/dmesg-before-kill.txt" "$OUT/dmesg-after-kill.txt" | sed -n 's/^> //p' >"$OUT/dmesg-kill.txt"
ferr=$(grep -o 'err=[ 0-9]*' "$OUT/fio-crash.txt" | tr -d ' ' | sort | uniq -c | tr -s ' ' | tr '\n' ' ')
figure "kill -9: fio stopped (SIGINT) after ${FIO_S} s, exit $FIO_RC; per-job error status: $ferr"
[ "$(grep -c 'err= 0' "$OUT/fio-crash.txt")" = 4 ] && rig_pass "fio saw no I/O error across the kill and restart (4 jobs err=0)" \
    || rig_fail "fio saw no I/O error across the kill and restart" "$ferr; $(grep -m1 'io_u error' "$OUT/fio-crash.txt")"
figure "kill -9: initiator kernel log meanwhile: $(grep -ciE 'abort|reset|timing out|timed out' "$OUT/dmesg-kill.txt") abort/reset/timeout lines, $(grep -ci 'error' "$OUT/dmesg-kill.txt") error lines (out/dmesg-kill.txt)"
# IOPS before the kill: per-second averages from fio's iops logs
for j in fua-r fua-q; do
    lg=$(ls "$OUT"/iops-"$j"_iops.*.log 2>/dev/null | head -1)
    # log times count from fio's job start: the kill came KILL_IO s after
    # the first non-zero sample
    read -r n avg < <(awk -F, -v k="$KILL_IO" '$2 > 0 && t0 == "" { t0 = $1 }
        t0 != "" && $1 - t0 <= (k - 1) * 1000 { s += $2; n++ } END { printf "%d %.0f\n", n, n ? s/n : 0 }' "$lg" 2>/dev/null)
    figure "kill -9: fio job $j (4 KiB O_SYNC = FUA writes, iodepth 8): ${avg:-?} IOPS before the kill (mean of ${n:-0} one-second samples)"
done
figure "kill -9: all writes (FUA job + 64 KiB fsync job) completed by the initiator in the ${KILL_IO} s before the kill: raw LUN $(awk -v n=$((wr1 - wrio)) -v t="$KILL_IO" 'BEGIN{printf "%.0f", n/t}') IOPS, qcow2 LUN $(awk -v n=$((wq1 - wqio)) -v t="$KILL_IO" 'BEGIN{printf "%.0f", n/t}') IOPS"
grep -E '^ *(write|WRITE):' "$OUT/fio-crash.txt" | head -8 >"$OUT/fio-crash-summary.txt"
states=$(ls "$FIODIR"/*fua-*verify.state 2>/dev/null | wc -l)
[ "$states" = 2 ] && rig_pass "fio saved its verify state for both FUA jobs" \
    || rig_fail "fio saved its verify state for both FUA jobs" "$states state files in $FIODIR"
(cd "$FIODIR" && fio --output="$OUT/fio-verify.txt" "$OUT/verify.fio"); VRC=$?
vread=$(grep -E '^ *read:' "$OUT/fio-verify.txt" | sed 's/.*(\([^)]*\)\/.*/\1/' | tr '\n' ' ')
figure "kill -9: fio verify_only (verify_state_load) of the FUA regions: exit $VRC, read $vread"
if [ "$VRC" = 0 ] && ! grep -q 'verify:' "$OUT/fio-verify.txt" && [ "$(grep -cE '^ *read:' "$OUT/fio-verify.txt")" = 2 ]; then
    rig_pass "every FUA write fio saw completed reads back (crc32c verify of both FUA regions, raw and qcow2: $vread)"
else
    rig_fail "every FUA write fio saw completed reads back" "fio exit $VRC: $(grep -m3 -E 'verify:|err=' "$OUT/fio-verify.txt" | tr '\n' ' ')"
fi
mk_ok=1
for d in "$DR" "$DQ"; do
    dd if="$d" bs=64k skip=$((960 * M / 65536)) count=1 iflag=direct status=none | cmp -s - "$OUT/marker.bin" || mk_ok=0
done
[ $mk_ok = 1 ] && rig_pass "the markers flushed before the kill read back on both LUNs" \
    || rig_fail "the markers flushed before the kill read back"

# ==== Part 3: ENOSPC ================================================================
# nospc_case LABEL DEV IMG
nospc_case() {
    local L=$1 dev=$2 img=$3 free filler=$SMALL/filler rc lba sense
    head -c $((4 * M)) /dev/urandom >"$OUT/$L-keep.bin"
    if dd if="$OUT/$L-keep.bin" of="$dev" bs=1M count=4 oflag=direct conv=notrunc status=none && sg_sync "$dev"; then
        rig_pass "$L: 4 MiB written at 0 and SYNCHRONIZE CACHE"
    else
        rig_fail "$L: 4 MiB written at 0 and flushed"
    fi
    sync -f "$SMALL"
    free=$(df -B1 --output=avail "$SMALL" | tail -1)
    if [ "$free" -gt $((10 * M)) ]; then
        fallocate -l $((free - 8 * M)) "$filler"
    fi
    sync -f "$SMALL"
    free=$(df -B1 --output=avail "$SMALL" | tail -1)
    figure "$L: $SMALL has $((free / 1024)) KiB free after the filler; image $(du -k "$img" | cut -f1) KiB allocated; LUN $(( $(rig_dev_bytes "$dev") / M )) MiB"
    dmesg >"$OUT/$L-dmesg-0.txt"
    dd if=/dev/urandom of="$dev" bs=1M seek=16 count=200 oflag=direct conv=notrunc >"$OUT/$L-fill.txt" 2>&1; rc=$?
    dmesg >"$OUT/$L-dmesg-1.txt"
    diff "$OUT/$L-dmesg-0.txt" "$OUT/$L-dmesg-1.txt" | sed -n 's/^> //p' >"$OUT/$L-dmesg.txt"
    figure "$L: dd oflag=direct from 16 MiB: exit $rc: $(grep -E 'No space|error|copied' "$OUT/$L-fill.txt" | tr '\n' ' ')"
    [ $rc != 0 ] && grep -q 'No space left on device' "$OUT/$L-fill.txt" \
        && rig_pass "$L: writes past the free space fail with ENOSPC at the initiator (dd: No space left on device)" \
        || rig_fail "$L: writes past the free space fail with ENOSPC at the initiator" "dd exit $rc: $(tail -2 "$OUT/$L-fill.txt" | tr '\n' ' ')"
    figure "$L: kernel log: $(grep -iE 'sense key|add. sense|critical space' "$OUT/$L-dmesg.txt" | sed 's/^\[[^]]*\] //' | sort | uniq -c | head -4 | tr -s ' ' | tr '\n' ';')"
    grep -q 'Space allocation failed write protect' "$OUT/$L-dmesg.txt" && grep -q 'Data Protect' "$OUT/$L-dmesg.txt" \
        && rig_pass "$L: kernel log: Sense Key : Data Protect, Add. Sense: Space allocation failed write protect" \
        || rig_fail "$L: kernel log shows Data Protect / Space allocation failed write protect" "see out/$L-dmesg.txt"
    # the exact sense of one more WRITE (10) of 64 KiB at an unwritten LBA (200 MiB)
    lba=$((200 * M / 512))
    # shellcheck disable=SC2046  # the LBA's four CDB bytes as separate words
    sg_raw -v -s 65536 -i "$OUT/$L-keep.bin" "$dev" 2a 00 $(printf '%02x %02x %02x %02x' $((lba >> 24 & 255)) $((lba >> 16 & 255)) $((lba >> 8 & 255)) $((lba & 255))) 00 00 80 00 \
        >"$OUT/$L-sg_raw.txt" 2>&1; rc=$?
    sense=$(grep -iE 'sense key|Data protect|space allocation' "$OUT/$L-sg_raw.txt" | head -2 | tr -s ' ' | tr '\n' ' ')
    figure "$L: sg_raw WRITE(10) 64 KiB at LBA $lba: exit $rc: $sense"
    grep -qi 'Data protect' "$OUT/$L-sg_raw.txt" && grep -qi 'Space allocation failed write protect' "$OUT/$L-sg_raw.txt" \
        && rig_pass "$L: WRITE(10) on the full filesystem: CHECK CONDITION, DATA PROTECT, SPACE ALLOCATION FAILED WRITE PROTECT (27/07)" \
        || rig_fail "$L: WRITE(10) sense is DATA PROTECT 27/07" "sg_raw exit $rc: $(tail -3 "$OUT/$L-sg_raw.txt" | tr '\n' ' ')"
    echo 3 >/proc/sys/vm/drop_caches
    dd if="$dev" bs=1M count=4 iflag=direct status=none | cmp -s - "$OUT/$L-keep.bin" \
        && rig_pass "$L: the 4 MiB flushed before the filesystem filled read back intact" \
        || rig_fail "$L: the flushed 4 MiB read back intact"
    sg_sync "$dev" >"$OUT/$L-sync-full.txt" 2>&1; rc=$?
    figure "$L: SYNCHRONIZE CACHE while the filesystem is full: exit $rc $(head -c 200 "$OUT/$L-sync-full.txt")"
    [ $rc = 0 ] && rig_pass "$L: SYNCHRONIZE CACHE after the failed writes answers GOOD (ENOSPC came from the write, no flush error latched)" \
        || rig_fail "$L: SYNCHRONIZE CACHE after the failed writes answers GOOD" "sg_sync exit $rc"
    rm -f "$filler"; sync -f "$SMALL"
    figure "$L: filler removed: $(( $(df -B1 --output=avail "$SMALL" | tail -1) / 1024 )) KiB free"
    head -c $((8 * M)) /dev/urandom >"$OUT/$L-after.bin"
    if dd if="$OUT/$L-after.bin" of="$dev" bs=1M seek=16 count=8 oflag=direct conv=notrunc status=none 2>"$OUT/$L-after.txt" &&
       sg_sync "$dev" 2>>"$OUT/$L-after.txt" &&
       dd if="$dev" bs=1M skip=16 count=8 iflag=direct status=none | cmp -s - "$OUT/$L-after.bin"; then
        rig_pass "$L: after freeing space the LUN is writable again without a reopen (8 MiB where the writes failed: written, flushed, read back)"
        NOSPC_REOPEN=no
    else
        rig_fail "$L: after freeing space the LUN is writable again without a reopen" "$(head -c 200 "$OUT/$L-after.txt")"
        NOSPC_REOPEN=yes
    fi
    dd if="$dev" bs=1M count=4 iflag=direct status=none | cmp -s - "$OUT/$L-keep.bin" \
        && rig_pass "$L: the first 4 MiB still intact at the end" || rig_fail "$L: the first 4 MiB still intact at the end"
    grep -iE "$(basename "$img")|ENOSPC|No space|error" "$RIG_TCMU_LOG" | grep -v DEBUG | tail -n 5 >"$OUT/$L-tcmu.txt"
}
nospc_case nospc-qcow2 "$DNQ" "$NSQ"
nospc_case nospc-raw "$DNR" "$NSR"
grep -q 'delayed block allocation failed' "$OUT"/nospc-*-dmesg.txt \
    && figure "ENOSPC: ext4 reported a failed delayed allocation (writeback ENOSPC): see out/nospc-*-dmesg.txt"

# ==== Part 2: close with I/O in flight ================================================
dmesg >"$OUT/dmesg-before-close.txt"
(exec fio --name=close-q --filename="$DQ" --ioengine=libaio --direct=1 --rw=randwrite --bs=64k \
    --offset=256M --size=256M --iodepth=16 --time_based=1 --runtime=600 --output="$OUT/fio-close.txt") &
FIO_PID=$!
wait_writes "$DQ" 8 60 || rig_log "no writes from fio on $DQ within 60 s"
sleep 2
t0=$(now)
targetcli /backstores/user:qlun delete crashq >"$OUT/delete.txt" 2>&1; rc=$?
DEL_S=$(since "$t0")
[ $rc = 0 ] && ! ls -d /sys/kernel/config/target/core/user_*/crashq >/dev/null 2>&1 \
    && rig_pass "backstore crashq deleted while fio wrote to it (${DEL_S} s)" \
    || rig_fail "backstore crashq deleted while fio wrote to it" "targetcli exit $rc: $(tail -2 "$OUT/delete.txt")"
# fio (time based) runs until the LUN fails its writes
end=$((SECONDS + 60))
while kill -0 "$FIO_PID" 2>/dev/null && [ "$SECONDS" -lt "$end" ]; do sleep 0.5; done
alive=no
kill -0 "$FIO_PID" 2>/dev/null && { alive=yes; kill -KILL "$FIO_PID"; rig_log "fio on the deleted LUN killed after 60 s"; }
wait "$FIO_PID"; rc=$?
ferr=$(grep -m1 -o 'err=[^:]*:[^)]*)' "$OUT/fio-close.txt")
figure "close in flight: backstore deleted ~2 s into fio's writes (targetcli ${DEL_S} s); fio exit $rc: $ferr"
[ "$alive" = no ] && [ "$rc" != 0 ] && grep -q 'err= *5' "$OUT/fio-close.txt" \
    && rig_pass "fio was writing when the backstore went away: its writes failed (EIO) instead of hanging" \
    || rig_fail "fio was writing when the backstore went away and got EIO" "fio exit $rc, still running after 60 s: $alive; $ferr"
sleep 1
rig_check "tcmu-runner still running after the backstore was deleted under I/O" rig_tcmu_alive
rig_check "LUN 0 (raw) still serves: 64 KiB written, flushed, read back" serve "$DR" $((1010 * M)) r2
t0=$(now)
printf '%s\n' "/backstores/user:qlun create name=crashq2 size=1G cfgstring=$IMGQ;format=qcow2 hw_max_sectors=1024" \
    "/iscsi/$IQN/tpg1/luns create /backstores/user:qlun/crashq2 lun=5" | targetcli >"$OUT/recreate.txt" 2>&1
iscsiadm -m session -R >/dev/null 2>&1
DQ2=$(rig_lun_dev "$IQN" 5 20)
if [ -n "$DQ2" ]; then
    rig_pass "a new backstore on crash.qcow2 (LUN 5, $DQ2) appears ($(since "$t0") s)"
    rig_check "the re-opened crash.qcow2 serves: 64 KiB written, flushed, read back" serve "$DQ2" $((1020 * M)) q2
    dd if="$DQ2" bs=64k skip=$((960 * M / 65536)) count=1 iflag=direct status=none | cmp -s - "$OUT/marker.bin" \
        && rig_pass "the qcow2 marker still reads back after the close under I/O" \
        || rig_fail "the qcow2 marker still reads back after the close under I/O"
else
    rig_fail "a new backstore on crash.qcow2 (LUN 5) appears" "$(tail -3 "$OUT/recreate.txt" | tr '\n' ' ')"
fi
dmesg >"$OUT/dmesg-after-close.txt"
diff "$OUT/dmesg-before-close.txt" "$OUT/dmesg-after-close.txt" | sed -n 's/^> //p' >"$OUT/dmesg-close.txt"

# ==== close everything, check the images ==============================================
rig_logout "$IQN" >/dev/null 2>&1
rig_clearconfig
sleep 1
rig_check "tcmu-runner still running at the end" rig_tcmu_alive
rig_stop_tcmu
qcheck "end: crash.qcow2 (after kill -9, close in flight, reopen)" "$IMGQ" "$OUT/check-end.txt"
qcheck "end: nospc.qcow2 (after ENOSPC)" "$NSQ" "$OUT/check-nospc.txt"
qemu-img check -f raw "$IMGR" >"$OUT/check-raw.txt" 2>&1
figure "end: qemu-img check -f raw crash.raw: exit $? ($(tail -1 "$OUT/check-raw.txt"))"
umount "$SMALL"
[ "$RIG_NFAIL" -gt 0 ] && rig_diag "end of run"
rig_report
