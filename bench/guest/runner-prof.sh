#!/bin/bash
# Where tcmu-runner spends its CPU per I/O: qlun raw, qlun qcow2 and
# tcmu-runner's own user:qcow, in one boot (issue 10).  Runs in the VM rig:
#
#   QLUN_RIG_TIMEOUT=3000 tests/e2e/rig.sh bench/guest/runner-prof.sh
#
# One target holds three LUNs of 1 GiB, every block written beforehand (so
# the writes below overwrite in place): qlun raw, qlun qcow2 and user:qcow.
# For each worker pool size in QLUN_PROF_WORKERS (QLUN_WORKER_THREADS: only
# qlun's LUNs use it; user:qcow has tcmu-runner's one worker whatever it
# is), interleaved and repeated QLUN_PROF_REPEAT times, tcmu-runner is
# restarted with that size and each LUN gets the same fio job (4k random
# writes, direct, libaio, QLUN_PROF_RUNTIME seconds, at each queue depth of
# QLUN_PROF_QDS, default 16).  QLUN_PROF_LUNS picks LUNs (all three by
# default: qlun-raw user-qcow qlun-qcow2).  Around each run:
# tcmu-runner's CPU (user and system), page faults, and context switches of
# every thread (bench/guest/runner_counters.py), per 1000 I/Os.
#
# Then, for each pool size in QLUN_PROF_TRACE_WORKERS (default "64 1"; ""
# for none), traced runs per LUN: tcmu-runner's system calls in total and by
# name, context switches and page faults (perf stat, counting in the
# kernel), every call by name (strace -c, a short run: it stops the runner
# at each call, so only its proportions count), and a try at a CPU profile
# (perf record; it got almost no samples in the rig's guest).  perf comes
# from the host's linux-perf, strace from the host's strace; both are
# optional: without perf the traced runs are left out, without strace its
# run is.  Traced runs give counts per I/O, not speed.
#
# QLUN_PROF_QLUN_OPTS is appended to both qlun cfgstrings (";cache=none"...).
# Output in $RIG_SHARE/runner-prof: results.jsonl, table.txt, syscalls-*.txt
# (perf stat per 1000 I/Os), strace-*.txt, perf-*.txt.  Not a test: nothing
# asserts on time.
set -u
. "$QLUN_REPO/tests/e2e/lib.sh"
RIG_TCMU_DEBUG=0            # -d logs every CDB: it would measure the logging
VARIANTS=${QLUN_PROF_WORKERS:-"64 8 1"}
TRACE_VARIANTS=${QLUN_PROF_TRACE_WORKERS-"64 1"}   # "" = no traced runs
REPEAT=${QLUN_PROF_REPEAT:-2}
QDS=${QLUN_PROF_QDS:-16}
RUNTIME=${QLUN_PROF_RUNTIME:-10}
TRACE_RUNTIME=${QLUN_PROF_TRACE_RUNTIME:-8}
OPTS=${QLUN_PROF_QLUN_OPTS:-}
LUNS=${QLUN_PROF_LUNS:-"qlun-raw user-qcow qlun-qcow2"}
ALL_LUNS="qlun-raw user-qcow qlun-qcow2"
OUT=$RIG_SHARE/runner-prof
HDIR=/run/prof-handlers
TRACE_DIR=/tmp/runner-prof
IQN=iqn.2024-01.io.qlun:prof
BYTES=$((1 << 30))
COUNTERS=(/usr/bin/python3 "$QLUN_REPO/bench/guest/runner_counters.py")
mkdir -p "$OUT" "$RIG_LOGDIR" "$TRACE_DIR"
die() { echo "runner-prof.sh: $*" >&2; rig_diag; exit 1; }

rig_modprobe_target || die "LIO modules"
rig_start_dbus || die "dbus"
rig_start_iscsid || die "iscsid"
mountpoint -q /sys/kernel/tracing || mount -t tracefs nodev /sys/kernel/tracing
command -v perf >/dev/null && perf stat -e cpu-clock true >/dev/null 2>&1 && HAVE_PERF=1 || HAVE_PERF=0
rig_log "perf usable in the guest: $HAVE_PERF"

# ---- images: written through, so every write below is an overwrite ----------
raw=$RIG_DATA/p.raw q2=$RIG_DATA/p.qcow2 uq=$RIG_DATA/u.qcow2
fio --name=fill --filename="$raw" --rw=write --bs=1M --size=$BYTES --direct=1 \
    --ioengine=libaio --iodepth=4 --output=/dev/null || die "prefill"
qemu-img convert -O qcow2 -o cluster_size=64k "$raw" "$q2" || die "qcow2 prefill"
cp "$q2" "$uq" || die "copy for user:qcow"

# handler_qlun.so and tcmu-runner's own handler_qcow.so in one dir
# (--handler-path replaces the default dir); copied once, before any
# tcmu-runner maps them
mkdir -p "$HDIR"
cp "${QLUN_HANDLER_DIR:-$(rig_handler_dir)}/handler_qlun.so" \
   "$RIG_SYSTEM_HANDLER_DIR/handler_qcow.so" "$HDIR/" || die "handler dir"

# serve WORKERS: tcmu-runner (restarted) with that pool size, the target
# up, logged in; sets DEV[lun]
declare -A DEV=()
serve() {
    local v=$1
    if rig_tcmu_alive; then
        iscsiadm -m node -T "$IQN" --logout >/dev/null 2>&1
        python3 "$QLUN_REPO/bench/guest/lio-bench.py" down "$IQN" >/dev/null 2>&1
    fi
    QLUN_WORKER_THREADS=$v rig_start_tcmu "$HDIR" >/dev/null || die "tcmu-runner ($v)"
    python3 "$QLUN_REPO/bench/guest/lio-bench.py" up "$IQN" \
        "user:praw:-:$BYTES:qlun/$raw;format=raw$OPTS" \
        "user:puq:-:$BYTES:qcow/$uq" \
        "user:pq2:-:$BYTES:qlun/$q2;format=qcow2$OPTS" >"$OUT/lio-$v.txt" 2>&1 || die "target ($v)"
    rig_login "$IQN" "" "" >/dev/null || die "login ($v)"
    local i=0 l
    for l in $ALL_LUNS; do
        DEV[$l]=$(rig_lun_dev "$IQN" $i 20) || die "LUN $i ($v)"
        echo none >"/sys/block/${DEV[$l]#/dev/}/queue/scheduler" 2>/dev/null
        i=$((i + 1))
    done
}

run_fio() {  # DEV SECONDS JSON [QD]
    fio --name=j --filename="$1" --rw=randwrite --bs=4k --iodepth="${4:-16}" \
        --ioengine=libaio --direct=1 --size=$BYTES --time_based \
        --runtime="$2" --output-format=json --output="$3"
}
fio_ios() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["jobs"][0]["write"]["total_ios"])' "$1"; }
fio_iops() { python3 -c 'import json,sys; print("%.0f" % json.load(open(sys.argv[1]))["jobs"][0]["write"]["iops"])' "$1"; }

# ---- counted runs -------------------------------------------------------------
: >"$OUT/results.jsonl"
for rep in $(seq "$REPEAT"); do
    for v in $VARIANTS; do
        serve "$v"
        for qd in $QDS; do
        for l in $LUNS; do
            tag=$rep-$v-qd$qd-$l
            "${COUNTERS[@]}" snap "$RIG_TCMU_PID" "$OUT/a.json"
            run_fio "${DEV[$l]}" "$RUNTIME" "$OUT/fio-$tag.json" "$qd" || die "fio $tag"
            "${COUNTERS[@]}" snap "$RIG_TCMU_PID" "$OUT/b.json"
            "${COUNTERS[@]}" diff "$OUT/a.json" "$OUT/b.json" "$(fio_ios "$OUT/fio-$tag.json")" \
                "$rep $v qd$qd:$l $(fio_iops "$OUT/fio-$tag.json")" >>"$OUT/results.jsonl"
            rig_log "counted $tag: $(tail -1 "$OUT/results.jsonl" | cut -c1-200)"
        done
        done
    done
done

# ---- traced runs: system calls by name, and a CPU profile ----------------------
# perf stat counts in the kernel (no ring buffer): the runner's system calls,
# in total and for the calls a handler's hand-off or I/O makes.  strace -c
# names every call but stops the runner at each one: its run is short and
# only its proportions count.  perf record is tried too: in the rig's guest
# it wrote almost no sample (its ring buffer is never woken under TCG?), so
# its report may be empty.
SYSCALLS="futex write read ppoll pwritev pwritev2 pwrite64 preadv preadv2 pread64
          mmap munmap madvise mprotect brk fdatasync fsync ioctl lseek openat
          close rename newfstatat fstat clock_nanosleep sched_yield getpid gettid"
perf_events() {
    local e list=raw_syscalls:sys_enter,context-switches,cpu-migrations,page-faults,task-clock
    for e in $SYSCALLS; do
        [ -d "/sys/kernel/tracing/events/syscalls/sys_enter_$e" ] && list+=,syscalls:sys_enter_$e
    done
    echo "$list"
}

around_fio() {  # DEV SECONDS FIO_JSON OUTFILE -- COMMAND...: COMMAND on the runner around one fio run
    local dev=$1 secs=$2 json=$3 out=$4 pid; shift 5
    "$@" >"$out" 2>&1 &
    pid=$!
    sleep 3                                 # attaching to the runner's threads
    run_fio "$dev" "$secs" "$json" || die "fio (traced)"
    kill -INT "$pid"; wait "$pid"
}

per_kio() {  # perf stat -x, output, I/O count -> "event per-1000-I/Os" lines
    python3 - "$1" "$2" <<'PY'
import sys
ios = max(int(sys.argv[2]), 1)
for line in open(sys.argv[1]):
    f = line.strip().split(",")
    if len(f) < 3 or not f[0].replace(".", "").isdigit():
        continue
    print("%-34s %10.1f" % (f[2], float(f[0]) * 1000.0 / ios))
PY
}

if [ "$HAVE_PERF" = 1 ]; then
    EVENTS=$(perf_events)
    for v in $TRACE_VARIANTS; do
        serve "$v"
        for l in $LUNS; do
            tag=$v-$l
            around_fio "${DEV[$l]}" "$TRACE_RUNTIME" "$OUT/fio-stat-$tag.json" "$OUT/perfstat-$tag.csv" \
                -- perf stat -x, -e "$EVENTS" -p "$RIG_TCMU_PID"
            per_kio "$OUT/perfstat-$tag.csv" "$(fio_ios "$OUT/fio-stat-$tag.json")" >"$OUT/syscalls-$tag.txt"
            rig_log "perf stat $tag: $(tr -s ' ' <"$OUT/syscalls-$tag.txt" | tr '\n' ';')"
            if command -v strace >/dev/null; then
                around_fio "${DEV[$l]}" 5 "$OUT/fio-strace-$tag.json" "$OUT/strace-$tag.txt" \
                    -- strace -c -f -p "$RIG_TCMU_PID"
                echo "(strace run: $(fio_ios "$OUT/fio-strace-$tag.json") I/Os)" >>"$OUT/strace-$tag.txt"
            fi
            around_fio "${DEV[$l]}" "$TRACE_RUNTIME" "$OUT/fio-cpu-$tag.json" "$OUT/perf-record.log" \
                -- perf record -o "$TRACE_DIR/cpu-$tag.data" -e cpu-clock -g -a
            { echo "== $tag: $(fio_ios "$OUT/fio-cpu-$tag.json") I/Os; by thread"
              perf report -i "$TRACE_DIR/cpu-$tag.data" --pid "$RIG_TCMU_PID" --no-children --stdio --sort comm -g none 2>/dev/null | grep -v '^#' | grep . | head -8
              echo "== by symbol"
              perf report -i "$TRACE_DIR/cpu-$tag.data" --pid "$RIG_TCMU_PID" --no-children --stdio --sort dso,sym -g none 2>/dev/null | grep -v '^#' | grep . | head -45
            } >"$OUT/perf-$tag.txt"
            rm -f "$TRACE_DIR/cpu-$tag.data"
        done
    done
fi
iscsiadm -m node -T "$IQN" --logout >/dev/null 2>&1
python3 "$QLUN_REPO/bench/guest/lio-bench.py" down "$IQN" >/dev/null 2>&1
rig_stop_tcmu

python3 - "$OUT/results.jsonl" <<'PY' | tee "$OUT/table.txt"
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
if not rows:
    sys.exit(0)
cells = {}
for r in rows:
    rep, v, lun, iops = r["label"].split()
    r["iops"] = float(iops)
    cells.setdefault((v, lun), []).append(r)
keys = ["iops", "user_ms", "sys_ms", "vcs", "nvcs", "minflt", "majflt"]
print("tcmu-runner per 1000 I/Os, 4k randwrite QD16: median (min-max) of %d"
      % max(int(r["label"].split()[0]) for r in rows))
print("%-8s %-16s" % ("variant", "lun") + "".join("%19s" % k for k in keys))
for (v, lun), rs in cells.items():
    line = "%-8s %-16s" % (v, lun)
    for k in keys:
        xs = [r[k] for r in rs]
        line += "%19s" % ("%.0f (%.0f-%.0f)" % (statistics.median(xs), min(xs), max(xs)))
    print(line)
print()
print("by thread group, last repetition: threads user_ms sys_ms vcs nvcs minflt")
last = {}
for r in rows:
    rep, v, lun, _ = r["label"].split()
    last[(v, lun)] = r
for (v, lun), r in last.items():
    for g, x in sorted(r["groups"].items()):
        if x["user_ms"] + x["sys_ms"] + x["vcs"] + x["nvcs"] < 1:
            continue
        print("%-8s %-16s %-10s %3d %8.1f %8.1f %8.1f %8.1f %8.1f" % (
            v, lun, g, x["threads"], x["user_ms"], x["sys_ms"], x["vcs"], x["nvcs"], x["minflt"]))
PY
exit 0
