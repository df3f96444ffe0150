#!/bin/bash
# The command model's measurement (issue 10): how many of tcmu-runner's
# worker threads a qlun LUN should have.  Runs in the VM rig, one boot:
#
#   tests/e2e/rig.sh bench/guest/workers.sh        (or bench/workers.sh)
#
# For each pool size in QLUN_BENCH_WORKERS (QLUN_WORKER_THREADS; 0 = every
# command inline on tcmu-runner's cmdproc thread), interleaved, repeated:
# tcmu-runner restarted with that size, a raw and a prefilled qcow2 LUN
# exported and logged in (queue depth 128), the same fio jobs on each.
# Prints IOPS (median of the repetitions, and each) and tcmu-runner's CPU
# milliseconds per 1000 I/Os.  Not a test: nothing asserts on time.
set -u
. "$QLUN_REPO/tests/e2e/lib.sh"
# cpu_ticks PID, CLK_TCK, and RIG_TCMU_DEBUG=0 (-d would measure the logging)
. "$QLUN_REPO/bench/guest/stack-lib.sh"
VARIANTS=${QLUN_BENCH_WORKERS:-"0 1 2 4 16 64"}
REPEAT=${QLUN_BENCH_REPEAT:-2}
RUNTIME=${QLUN_BENCH_RUNTIME:-5}
JOBS=${QLUN_BENCH_JOBS:-"randread:16 randwrite:16 randwrite:1 randread:1"}
OUT=$RIG_SHARE/workers
mkdir -p "$OUT" "$RIG_LOGDIR"
IQN=iqn.2024-01.io.qlun:workers
die() { echo "workers.sh: $*" >&2; rig_diag; exit 1; }

rig_modprobe_target || die "LIO modules"
rig_start_dbus || die "dbus"
raw=$RIG_DATA/w.raw q=$RIG_DATA/w.qcow2
fio --name=fill --filename="$raw" --rw=write --bs=1M --size=1G --direct=1 \
    --ioengine=libaio --iodepth=4 --output=/dev/null || die "prefill"
qemu-img convert -O qcow2 "$raw" "$q" || die "qcow2 prefill"
"$RIG_MAKE_CONFIG" --image "$raw" --name wraw --lun "image=$q,format=qcow2,name=wq2" \
    --target-iqn "$IQN" -o "$OUT/config.json" || die "make-config"

serve() {  # serve N: tcmu-runner with N workers, both LUNs logged in
    # targetcli asks D-Bus for tcmu-runner, and D-Bus would start the
    # system's own: clear the configuration only while ours runs.
    if rig_tcmu_alive; then
        iscsiadm -m node -T "$IQN" --logout >/dev/null 2>&1
        rig_clearconfig
    fi
    QLUN_WORKER_THREADS=$1 rig_start_tcmu >/dev/null || die "tcmu-runner ($1)"
    tr '\0' '\n' <"/proc/$RIG_TCMU_PID/environ" | grep -qx "QLUN_WORKER_THREADS=$1" \
        || die "QLUN_WORKER_THREADS=$1 not in tcmu-runner's environment"
    rig_restoreconfig "$OUT/config.json" >/dev/null || die "restoreconfig ($1)"
    rig_login "$IQN" >/dev/null || die "login ($1)"
    DEV_RAW=$RIG_DEV
    DEV_Q2=$(rig_lun_dev "$IQN" 1 20) || die "LUN 1"
}

: >"$OUT/results.txt"
for rep in $(seq "$REPEAT"); do
    for n in $VARIANTS; do
        serve "$n"
        for lun in raw qcow2; do
            dev=$DEV_RAW; [ $lun = qcow2 ] && dev=$DEV_Q2
            for job in $JOBS; do
                rw=${job%%:*} qd=${job#*:}
                c0=$(cpu_ticks "$RIG_TCMU_PID")
                fio --name=j --filename="$dev" --rw="$rw" --bs=4k --iodepth="$qd" \
                    --ioengine=libaio --direct=1 --size=1G --time_based \
                    --runtime="$RUNTIME" --output-format=json \
                    --output="$OUT/fio-$rep-$n-$lun-$rw-$qd.json" || die "fio"
                c1=$(cpu_ticks "$RIG_TCMU_PID")
                python3 - "$OUT/fio-$rep-$n-$lun-$rw-$qd.json" "$rep" "$n" "$lun" "$rw-qd$qd" \
                    "$((c1 - c0))" "$CLK_TCK" >>"$OUT/results.txt" <<'PY'
import json, sys
f, rep, n, lun, job, ticks, hz = sys.argv[1:]
j = json.load(open(f))["jobs"][0]
side = j["read"] if j["read"]["total_ios"] else j["write"]
ios = side["total_ios"]
print(rep, n, lun, job, "%.1f" % side["iops"],
      "%.1f" % (int(ticks) * 1000.0 / int(hz) / max(ios, 1) * 1000))
PY
                rig_log "rep $rep workers $n $lun $rw qd$qd: $(tail -1 "$OUT/results.txt")"
            done
        done
    done
done
iscsiadm -m node -T "$IQN" --logout >/dev/null 2>&1
rig_clearconfig
rig_stop_tcmu

python3 - "$OUT/results.txt" "$VARIANTS" <<'PY' | tee "$OUT/table.txt"
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
variants = sys.argv[2].split()
cells = {}
for rep, n, lun, job, iops, cpu in rows:
    cells.setdefault((lun, job, n), []).append((float(iops), float(cpu)))
print("IOPS (median of %d; each) and tcmu-runner CPU ms per 1000 I/Os, by worker threads"
      % max(int(r[0]) for r in rows))
print("%-6s %-14s" % ("lun", "job") + "".join("%22s" % ("workers=" + v) for v in variants))
for lun in ("raw", "qcow2"):
    for job in sorted({k[1] for k in cells if k[0] == lun}, key=lambda s: (s.split("-")[0], -int(s.split("qd")[1]))):
        line = "%-6s %-14s" % (lun, job)
        for v in variants:
            c = cells.get((lun, job, v), [])
            if not c:
                line += "%22s" % "-"
                continue
            iops = statistics.median(x[0] for x in c)
            cpu = statistics.median(x[1] for x in c)
            line += "%22s" % ("%.0f (%s) %.0fms" % (iops, "/".join("%.0f" % x[0] for x in c), cpu))
        print(line)
PY
exit 0
