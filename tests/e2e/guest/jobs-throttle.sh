# shellcheck shell=bash disable=SC2034
# The throttle filter's rig checks, sourced by guest/jobs.sh when the
# throttle's own guest/throttle.sh is not in the tree (same boot; needs
# lib.sh, lib-thin.sh, OUT, RIG_DATA, ctl and a running tcmu-runner):
#  - fio 4k randread at QD16 for 20 s on a LUN with iops= in its
#    cfgstring achieves that rate within +-10 %;
#  - `qlunctl throttle` to a bytes/s limit: fio 64k writes at QD16 for
#    20 s achieve it within +-10 %;
#  - two LUNs in one throttle group (throttle_group=): fio on both at once
#    together achieve the group's rate within +-10 %;
#  - a live change of the limit while fio runs: the second after the
#    change already runs at the new rate (within 10 %).
THR_IQN=iqn.2024-01.io.qlun:throttle
THR_DIR=$RIG_DATA/throttle
THR_IOPS=${QLUN_THR_IOPS:-40}
THR_BPS=${QLUN_THR_BPS:-$((2 << 20))}
THR_GROUP_IOPS=${QLUN_THR_GROUP_IOPS:-40}

# thr_within GOT WANT: |GOT-WANT| <= 10 % of WANT
thr_within() { awk -v g="$1" -v w="$2" 'BEGIN{d=g-w; if(d<0)d=-d; exit !(d*10 <= w)}'; }
thr_fio() {   # NAME SECS RW BS DEV [DEV...]: one fio job per DEV, JSON to out/
    local n=$1 secs=$2 rw=$3 bs=$4 d args=()
    shift 4
    for d in "$@"; do args+=(--name="$n-$(basename "$d")" --filename="$d"); done
    fio --direct=1 --ioengine=libaio --iodepth=16 --rw="$rw" --bs="$bs" --time_based \
        --runtime="$secs" --write_iops_log="$OUT/iops-$n" --log_avg_msec=1000 \
        --output-format=json --output="$OUT/fio-$n.json" "${args[@]}"
}
thr_sum() { jq "[.jobs[].$2] | add" "$OUT/fio-$1.json" 2>/dev/null; }

jobs_throttle() {
    rm -rf "$THR_DIR"; mkdir -p "$THR_DIR"
    local i
    for i in 0 1 2; do truncate -s $((64 << 20)) "$THR_DIR/t$i.raw"; done
    "$RIG_MAKE_CONFIG" --image "$THR_DIR/t0.raw" --name thr0 --wwn qlunthr0 --opt "iops=$THR_IOPS" \
        --lun "image=$THR_DIR/t1.raw,name=thr1,wwn=qlunthr1,opts=iops=$THR_GROUP_IOPS;throttle_group=g1" \
        --lun "image=$THR_DIR/t2.raw,name=thr2,wwn=qlunthr2,opts=iops=$THR_GROUP_IOPS;throttle_group=g1" \
        --target-iqn "$THR_IQN" --initiator-iqn "$RIG_INITIATOR_IQN" \
        --chap-user "$RIG_CHAP_USER" --chap-password "$RIG_CHAP_PASS" -o "$OUT/throttle.json"
    rig_check "throttle: restoreconfig: thr0 (iops=$THR_IOPS), thr1+thr2 (group g1, iops=$THR_GROUP_IOPS)" \
        rig_restoreconfig "$OUT/throttle.json" >"$OUT/restore-throttle.txt" 2>&1 || return
    rig_check "throttle: iSCSI login" rig_login "$THR_IQN" >/dev/null || return
    local d0 d1 d2 got
    d0=$(rig_lun_dev "$THR_IQN" 0); d1=$(rig_lun_dev "$THR_IQN" 1); d2=$(rig_lun_dev "$THR_IQN" 2)

    thr_fio iops 20 randread 4k "$d0"
    got=$(thr_sum iops read.iops)
    thr_within "$got" "$THR_IOPS" && rig_pass "throttle: iops=$THR_IOPS (cfgstring): fio QD16 randread 20 s: $got IOPS" \
        || rig_fail "throttle: iops=$THR_IOPS within 10 %" "fio: $got IOPS"
    thin_figure "throttle: iops=$THR_IOPS: fio 4k randread QD16 20 s: $got IOPS"

    rig_check "throttle: qlunctl throttle thr0 --iops 0 --bps $THR_BPS" ctl throttle thr0 --iops 0 --bps "$THR_BPS"
    thr_fio bps 20 randwrite 64k "$d0"
    got=$(thr_sum bps write.bw_bytes)
    thr_within "$got" "$THR_BPS" && rig_pass "throttle: bps=$THR_BPS (live): fio QD16 64k writes 20 s: $got B/s" \
        || rig_fail "throttle: bps=$THR_BPS within 10 %" "fio: $got B/s"
    thin_figure "throttle: bps=$THR_BPS: fio 64k randwrite QD16 20 s: $got B/s"

    thr_fio group 20 randread 4k "$d1" "$d2"
    got=$(thr_sum group read.iops)
    thr_within "$got" "$THR_GROUP_IOPS" && rig_pass "throttle: group g1 (iops=$THR_GROUP_IOPS) shared by two LUNs: fio on both: $got IOPS together" \
        || rig_fail "throttle: group g1 shares iops=$THR_GROUP_IOPS within 10 %" "fio: $got IOPS ($(jq -c '[.jobs[].read.iops]' "$OUT/fio-group.json"))"
    thin_figure "throttle: group g1 iops=$THR_GROUP_IOPS: fio on thr1 and thr2: $(jq -c '[.jobs[].read.iops]' "$OUT/fio-group.json")"

    # live change: LOW IOPS, then HIGH at ~8 s; the seconds from the one
    # after the change on must run at HIGH
    local low=$((THR_IOPS / 2)) high=$THR_IOPS
    ctl throttle thr0 --bps 0 --iops "$low" >"$OUT/throttle-live.txt" 2>&1
    local t0 tc ms
    t0=$(thin_now)
    thr_fio live 16 randread 4k "$d0" &
    local fpid=$!
    sleep 8
    tc=$(thin_now)
    rig_check "throttle: live qlunctl throttle thr0 --iops $high under fio" ctl throttle thr0 --iops "$high"
    wait "$fpid"
    ms=$(awk -v a="$t0" -v b="$tc" 'BEGIN{printf "%.0f", (b - a) * 1000}')
    # fio's clock starts a little after t0: count from 1 s after the change
    got=$(awk -F', *' -v c="$ms" '$1 - 1000 >= c + 1000 { s += $2; n++ } END { if (n) printf "%.0f", s / n; else print 0 }' \
        "$OUT/iops-live_iops.1.log")
    local before
    before=$(awk -F', *' -v c="$ms" '$1 <= c - 500 && $1 > 2000 { s += $2; n++ } END { if (n) printf "%.0f", s / n; else print 0 }' \
        "$OUT/iops-live_iops.1.log")
    thr_within "$before" "$low" && thr_within "$got" "$high" \
        && rig_pass "throttle: live change $low -> $high IOPS: $before before, $got from the second after the change" \
        || rig_fail "throttle: live change takes effect within a second" "$before IOPS before (want $low), $got after (want $high)"
    thin_figure "throttle: live $low -> $high IOPS: per-second IOPS $(awk -F', *' '{printf "%s ", $2}' "$OUT/iops-live_iops.1.log")(change at $((ms / 1000)).$((ms % 1000 / 100)) s)"
    rig_check "throttle: logout" rig_logout "$THR_IQN" >/dev/null
}
jobs_throttle
