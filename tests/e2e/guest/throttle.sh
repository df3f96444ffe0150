#!/bin/bash
# shellcheck disable=SC2034
# Guest half of the throttle checks (issue 12, item 5; runs inside the rig
# VM; tests/e2e/test-throttle.sh runs it alone, the jobs test with the
# rest).  Two raw LUNs on one target; fio at QD16 from the initiator:
#
#  0. a short unthrottled baseline on LUN 1, so that a limit the rig cannot
#     even reach is reported as such and not as a throttle failure;
#  1. LUN 0 opened with iops=N in its cfgstring: fio randread 4k, 20 s,
#     achieves N within 10 %;
#  2. `qlunctl throttle` to M bytes/s: fio read 64k, 20 s, achieves M
#     within 10 %; LIO's dev_config now holds the new options;
#  3. both LUNs in one group (set through LUN 0, joined by LUN 1 with
#     --group alone): two fio at once, 20 s, their sum within 10 % of the
#     group's limit, neither starved;
#  4. a live change: fio with a per-second IOPS log; at ~7 s the limit
#     goes from L1 to L2; the seconds from 1 s after the change on average
#     within 10 % of L2 (each second is in the figures: single seconds
#     under TCG on a shared host dip when the machine stalls).
# Outputs: report.txt, figures.txt, out/, logs/.
. "$QLUN_REPO/tests/e2e/lib.sh"
. "$QLUN_REPO/tests/e2e/lib-thin.sh"
RIG_REPORT_FILE=$RIG_SHARE/report.txt
OUT=$RIG_SHARE/out
mkdir -p "$OUT"
: >"$THIN_FIGURES"
IQN=iqn.2024-01.io.qlun:throttle
DIR=$RIG_DATA/throttle
M=$((1 << 20))
SIZE=$((256 * M))
# Limits well below what the rig reaches: under TCG on a shared 2-core
# host a raw LUN does ~70-120 random 4k reads/s at QD16 (measured in the
# first run of this script; step 0 reports it each time), 64k reads a few
# MiB/s.  A limit the stack cannot reach would measure the machine.
IOPS=${QLUN_THROTTLE_IOPS:-40}           # step 1
BPS=${QLUN_THROTTLE_BPS:-$((2 * M))}     # step 2
GROUP_IOPS=${QLUN_THROTTLE_GROUP_IOPS:-40}
LIVE_FROM=${QLUN_THROTTLE_LIVE_FROM:-15} LIVE_TO=${QLUN_THROTTLE_LIVE_TO:-40}   # step 4

HDIR=$(rig_handler_dir)
QLUNCTL=${QLUN_BUILD_DIR:-$HDIR}/qlunctl
if [ -z "$HDIR" ] || [ ! -f "$HDIR/handler_qlun.so" ] || [ ! -x "$QLUNCTL" ]; then
    rig_fail "handler_qlun.so and qlunctl found" "QLUN_HANDLER_DIR='${QLUN_HANDLER_DIR:-}' qlunctl '$QLUNCTL'"
    rig_report; exit
fi
if ! rig_check "target up (LIO, D-Bus, tcmu-runner with qlun)" rig_target_up "$HDIR"; then
    rig_diag "target up"; rig_report; exit
fi

rm -rf "$DIR"; mkdir -p "$DIR"
head -c "$SIZE" /dev/urandom >"$DIR/t0.img"
cp "$DIR/t0.img" "$DIR/t1.img"
"$RIG_MAKE_CONFIG" --image "$DIR/t0.img" --format raw --name thr0 --wwn qlunthr0 \
    --opt "iops=$IOPS" \
    --lun "image=$DIR/t1.img,format=raw,name=thr1,wwn=qlunthr1" \
    --target-iqn "$IQN" --initiator-iqn "$RIG_INITIATOR_IQN" \
    --chap-user "$RIG_CHAP_USER" --chap-password "$RIG_CHAP_PASS" -o "$OUT/throttle.json"
rig_check "restoreconfig: two user:qlun LUNs, thr0 with iops=$IOPS" \
    rig_restoreconfig "$OUT/throttle.json" >"$OUT/restore.txt" 2>&1 || { cat "$OUT/restore.txt"; rig_diag restore; }
DEV0='' DEV1=''
rig_check "iSCSI login" rig_login "$IQN" && DEV0=$RIG_DEV
DEV1=$(rig_lun_dev "$IQN" 1 20)
[ -n "$DEV0" ] && [ -n "$DEV1" ] || { rig_diag login; rig_report; exit; }

ctl() { "$QLUNCTL" "$@"; }
# fio_run NAME DEV RW BS SECONDS [fio args]: QD16, direct, JSON output
fio_run() {
    local n=$1 dev=$2 rw=$3 bs=$4 secs=$5; shift 5
    fio --name="$n" --filename="$dev" --direct=1 --ioengine=libaio --iodepth=16 \
        --rw="$rw" --bs="$bs" --time_based --runtime="$secs" --randseed=7 \
        --output-format=json --output="$OUT/fio-$n.json" "$@"
}
# fio_get NAME EXPR: a figure from fio's JSON (r = jobs[0]['read'])
fio_get() {
    python3 -c "import json; j=json.load(open('$OUT/fio-$1.json')); r=j['jobs'][0]['read']; print($2)"
}
# within GOT WANT: |GOT - WANT| <= 10 % of WANT
within() { awk -v g="$1" -v w="$2" 'BEGIN { exit !(g >= 0.9 * w && g <= 1.1 * w) }'; }
check_rate() {   # LABEL GOT WANT UNIT
    if within "$2" "$3"; then rig_pass "$1: $2 $4 (limit $3, within 10 %)"
    else rig_fail "$1 within 10 % of $3 $4" "achieved $2 $4"; fi
}

# ---- 0. what the rig reaches without a limit ----------------------------------
fio_run base "$DEV1" randread 4k 5
BASE=$(fio_get base "round(r['iops'])")
thin_figure "unthrottled baseline (thr1, randread 4k QD16, 5 s): $BASE IOPS"
if ! awk -v b="$BASE" -v l="$IOPS" 'BEGIN { exit !(b >= 1.5 * l) }'; then
    rig_fail "the rig reaches 1.5 x the limit unthrottled" "baseline $BASE IOPS < 1.5 x $IOPS: lower QLUN_THROTTLE_IOPS"
fi

# ---- 1. IOPS from the cfgstring --------------------------------------------------
fio_run iops "$DEV0" randread 4k 20
GOT=$(fio_get iops "round(r['iops'], 1)")
check_rate "cfgstring iops=$IOPS: fio randread 4k QD16 20 s" "$GOT" "$IOPS" IOPS
thin_figure "iops=$IOPS: $GOT IOPS, latency mean $(fio_get iops "round(r['clat_ns']['mean'] / 1e6, 1)") ms"

# ---- 2. bytes/s, set live ---------------------------------------------------------
rig_check "qlunctl throttle thr0 --bps $BPS" ctl throttle thr0 --bps "$BPS"
fio_run bps "$DEV0" read 64k 20
GOT=$(fio_get bps "r['bw_bytes']")
check_rate "qlunctl throttle --bps $BPS: fio read 64k QD16 20 s" "$GOT" "$BPS" bytes/s
thin_figure "bps=$BPS: $GOT bytes/s"
cfg=$(cat /sys/kernel/config/target/core/user_*/thr0/attrib/dev_config 2>&1)
grep -q "bps=$BPS" <<<"$cfg" && ! grep -q "iops=" <<<"$cfg" &&
    rig_pass "LIO's dev_config holds the new limits: $cfg" || rig_fail "dev_config follows qlunctl throttle" "$cfg"

# ---- 3. a group of two LUNs shares its limit -------------------------------------
rig_check "qlunctl throttle thr0 --group g1 --iops $GROUP_IOPS" ctl throttle thr0 --group g1 --iops "$GROUP_IOPS"
rig_check "qlunctl throttle thr1 --group g1 (joins with the group's limits)" ctl throttle thr1 --group g1
fio_run g0 "$DEV0" randread 4k 20 &
P0=$!
fio_run g1 "$DEV1" randread 4k 20
wait "$P0"
G0=$(fio_get g0 "round(r['iops'], 1)") G1=$(fio_get g1 "round(r['iops'], 1)")
SUM=$(awk -v a="$G0" -v b="$G1" 'BEGIN { printf "%.1f", a + b }')
check_rate "group g1 (iops=$GROUP_IOPS): thr0 $G0 + thr1 $G1" "$SUM" "$GROUP_IOPS" IOPS
awk -v a="$G0" -v b="$G1" -v l="$GROUP_IOPS" 'BEGIN { exit !(a > 0.25 * l && b > 0.25 * l) }' &&
    rig_pass "both LUNs of the group get a share ($G0, $G1)" || rig_fail "group shared, none starved" "$G0 / $G1"
thin_figure "group g1 iops=$GROUP_IOPS: thr0 $G0 + thr1 $G1 = $SUM IOPS"

# ---- 4. a live change takes effect within a second -------------------------------
rig_check "qlunctl throttle thr1 (off)" ctl throttle thr1
rig_check "qlunctl throttle thr0 --iops $LIVE_FROM" ctl throttle thr0 --iops "$LIVE_FROM"
t0=$(thin_now)
fio_run live "$DEV0" randread 4k 16 --write_iops_log="$OUT/live" --log_avg_msec=1000 &
P=$!
sleep 7
CHANGE_MS=$(awk -v a="$t0" -v b="$(thin_now)" 'BEGIN { printf "%d", (b - a) * 1000 }')
rig_check "qlunctl throttle thr0 --iops $LIVE_TO (while fio runs)" ctl throttle thr0 --iops "$LIVE_TO"
wait "$P"
LOG=$(ls "$OUT"/live_iops*.log 2>/dev/null | head -1)
cp "$LOG" "$OUT/live-iops.txt" 2>/dev/null
# Each line: end of the 1 s window (ms since fio started), IOPS in it.
# fio's clock starts after t0, by its start-up time (over a second under
# TCG: the second run of this script counted a window holding the change
# as "before" with a 500 ms margin).  A window of fio time [a, b) is
# [a + d, b + d) on ours, d >= 0 unknown but below 2 s: "after" windows
# begin 1 s after the change even for d = 0; "before" windows end before
# it even for d = 2 s.
AFTER=$(awk -F, -v c="$CHANGE_MS" '$1 - 1000 >= c + 1000 { printf "%d ", $2 }' "$LOG")
BEFORE=$(awk -F, -v c="$CHANGE_MS" '$1 >= 2000 && $1 + 2000 <= c { printf "%d ", $2 }' "$LOG")
thin_figure "live change $LIVE_FROM -> $LIVE_TO IOPS at ${CHANGE_MS} ms: per second before: $BEFORE; from 1 s after: $AFTER"
mean() { awk '{ for (i = 1; i <= NF; i++) s += $i } END { if (NF) printf "%.1f", s / NF }' <<<"$1"; }
MA=$(mean "$AFTER") MB=$(mean "$BEFORE")
[ -n "$MA" ] && within "$MA" "$LIVE_TO" && rig_pass "live change: from 1 s after it, $MA IOPS (limit $LIVE_TO, within 10 %; per second: $AFTER)" \
    || rig_fail "live change within a second: within 10 % of $LIVE_TO" "from 1 s after: mean '$MA' (per second: $AFTER)"
[ -n "$MB" ] && within "$MB" "$LIVE_FROM" && rig_pass "before the change: $MB IOPS (limit $LIVE_FROM, within 10 %)" \
    || rig_fail "rate before the live change within 10 % of $LIVE_FROM" "mean '$MB' (per second: $BEFORE)"
ctl info thr0 >"$OUT/qlunctl-info.txt" 2>&1
ctl --json info thr0 >"$OUT/qlunctl-info.json" 2>&1
thin_figure "throttle counters: $(python3 -c "import json; t=json.load(open('$OUT/qlunctl-info.json'))[0]['graph']['throttle']; print('requests', t['requests'], 'delayed', t['delayed'], 'wait-us', t['wait-us'])" 2>&1)"

rig_check "logout" rig_logout "$IQN" >/dev/null
rig_clearconfig
rig_stop_tcmu
[ "$RIG_NFAIL" -gt 0 ] && rig_diag "end of run"
rig_report
