#!/bin/bash
# Guest half of bench/stack-bench.sh: the whole-stack benchmark, run inside
# the rig VM (tests/e2e/rig.sh).  Also run on the HOST with --check to
# validate the options and print the estimate before a VM is booted.
#
#   stack-bench.sh [--check] [--quick] [--runtime S] [--repeat N]
#                  [--backstores a,b] [--jobs a,b] [--lun-size SIZE]
#                  [--rand-size SIZE]
#
# Every backstore gets a LUN_SIZE image on the rig's /data ext4, exported as
# one LUN of one iSCSI target on 127.0.0.1 and logged in once (the "main"
# target): the fio jobs run on those /dev/sdX one after the other, with
# nothing else in flight.  Jobs that change what an image IS (the allocating
# write, blkdiscard, the convert) run on a fresh image of the same backstore,
# exported by a second, short-lived "scratch" target, so the main images
# keep their state across repetitions.
#
# Outputs in $RIG_SHARE/bench: results.jsonl (one line per cell and
# repetition), table.txt + table.json (bench/stack-report.py), raw/ (fio's
# JSON output and command logs).  Exit 0: every cell ran; 1: a cell failed
# (shown as ERROR in the table); 2: bad options; 3: set-up failed.

ALL_BACKSTORES=(qlun-qcow2 qlun-qcow2-empty qlun-qcow2-overlay qlun-qcow2-xl2 qlun-raw
                fileio block-loop user-qcow qemu-nbd)
ALL_JOBS=(randread-4k-qd1 randread-4k-qd16 randread-4k-qd64
          randwrite-4k-qd1 randwrite-4k-qd16 randwrite-4k-qd64
          randrw-4k-qd1 randrw-4k-qd16 randrw-4k-qd64
          alloc-randwrite-4k-qd16 seqwrite-64k seqwrite-1m seqread-64k seqread-1m
          flush-fsync flush-nofsync blkdiscard-z blkdiscard convert)
QUICK_BACKSTORES=(qlun-qcow2 qlun-raw fileio user-qcow qemu-nbd)
QUICK_JOBS=(randread-4k-qd16 randwrite-4k-qd16 randwrite-4k-qd1 alloc-randwrite-4k-qd16
            seqwrite-1m convert)

bench_die() { echo "stack-bench: $*" >&2; exit "${BENCH_DIE_RC:-3}"; }

# bytes of "4G", "512M", "1048576"
size_bytes() {
    local s=${1^^} m=1
    case "$s" in
        *K) m=1024; s=${s%K} ;; *M) m=$((1 << 20)); s=${s%M} ;;
        *G) m=$((1 << 30)); s=${s%G} ;; *T) m=$((1 << 40)); s=${s%T} ;;
    esac
    [[ "$s" =~ ^[0-9]+$ ]] || return 1
    echo $((s * m))
}

in_list() { local x=$1; shift; local y; for y in "$@"; do [ "$x" = "$y" ] && return 0; done; return 1; }

parse_args() {
    CHECK=0; RUNTIME=; REPEAT=; BACKSTORES=(); JOBS=(); QUICK=0
    LUN_SIZE=4G; RAND_SIZE=
    local bs='' jobs=''
    while [ $# -gt 0 ]; do
        case "$1" in
            --check) CHECK=1; shift ;;
            --quick) QUICK=1; shift ;;
            --runtime) RUNTIME=$2; shift 2 ;;
            --repeat) REPEAT=$2; shift 2 ;;
            --backstores) bs=$2; shift 2 ;;
            --jobs) jobs=$2; shift 2 ;;
            --lun-size) LUN_SIZE=$2; shift 2 ;;
            --rand-size) RAND_SIZE=$2; shift 2 ;;
            *) BENCH_DIE_RC=2 bench_die "unknown option '$1' (see bench/stack-bench.sh --help)" ;;
        esac
    done
    if [ "$QUICK" = 1 ]; then
        : "${RUNTIME:=5}" "${REPEAT:=1}" "${RAND_SIZE:=256M}"
        BACKSTORES=("${QUICK_BACKSTORES[@]}"); JOBS=("${QUICK_JOBS[@]}")
    else
        : "${RUNTIME:=10}" "${REPEAT:=3}" "${RAND_SIZE:=1G}"
        BACKSTORES=("${ALL_BACKSTORES[@]}"); JOBS=("${ALL_JOBS[@]}")
    fi
    [ -n "$bs" ] && IFS=, read -r -a BACKSTORES <<<"$bs"
    [ -n "$jobs" ] && IFS=, read -r -a JOBS <<<"$jobs"
    local x
    for x in "${BACKSTORES[@]}"; do
        in_list "$x" "${ALL_BACKSTORES[@]}" || BENCH_DIE_RC=2 bench_die "unknown backstore '$x' (known: ${ALL_BACKSTORES[*]})"
    done
    for x in "${JOBS[@]}"; do
        in_list "$x" "${ALL_JOBS[@]}" || BENCH_DIE_RC=2 bench_die "unknown job '$x' (known: ${ALL_JOBS[*]})"
    done
    [[ "$RUNTIME" =~ ^[1-9][0-9]*$ ]] || BENCH_DIE_RC=2 bench_die "--runtime wants whole seconds"
    [[ "$REPEAT" =~ ^[1-9][0-9]*$ ]] || BENCH_DIE_RC=2 bench_die "--repeat wants a count"
    LUN_BYTES=$(size_bytes "$LUN_SIZE") && RAND_BYTES=$(size_bytes "$RAND_SIZE") \
        || BENCH_DIE_RC=2 bench_die "bad --lun-size/--rand-size"
    [ $((LUN_BYTES % (1 << 20))) = 0 ] && [ "$RAND_BYTES" -le $((LUN_BYTES / 2)) ] && [ $((RAND_BYTES % (64 << 20))) = 0 ] \
        || BENCH_DIE_RC=2 bench_die "--lun-size must be whole MiB, --rand-size a multiple of 64M and at most half of it"
}

# a job that needs a fresh image of the backstore (scratch target)
is_scratch_job() { case "$1" in alloc-*|blkdiscard*|convert) return 0 ;; esac; return 1; }

# Rough wall-clock seconds under TCG on a busy 2-core host (seen in the
# --quick run: a fio cell costs its runtime + ~8 s of fio and bookkeeping; a
# fresh scratch image, target, login and logout ~10 s more; blkdiscard and
# convert of 4 GiB 8-50 s, but ~330 s where the zeroes are written as data
# (qemu-nbd); prefilling writes ~40 MB/s).
estimate_secs() {
    local nbs=${#BACKSTORES[@]} j work=0
    for j in "${JOBS[@]}"; do
        case "$j" in
            alloc-*) work=$((work + RUNTIME + 18)) ;;
            blkdiscard*|convert) work=$((work + 18 + 60 * LUN_BYTES / (4 << 30))) ;;
            *) work=$((work + RUNTIME + 8)) ;;
        esac
    done
    echo $((90 + nbs * (8 + RAND_BYTES / 40000000) + REPEAT * nbs * work))
}

describe_plan() {
    local est
    est=$(estimate_secs)
    echo "stack-bench: ${#BACKSTORES[@]} backstores (${BACKSTORES[*]})"
    echo "stack-bench: ${#JOBS[@]} jobs (${JOBS[*]})"
    echo "stack-bench: runtime ${RUNTIME} s per fio job, ${REPEAT} repetition(s), LUNs $LUN_SIZE, random jobs over the first $RAND_SIZE"
    echo "stack-bench: estimated wall time under TCG: ~$((est / 60)) min ($est s)"
}

parse_args "$@"
if [ "$CHECK" = 1 ]; then
    describe_plan
    echo "ESTIMATE_SECS=$(estimate_secs)"
    exit 0
fi

# ============================ in the VM from here on ============================
. "$QLUN_REPO/tests/e2e/lib.sh"
. "$QLUN_REPO/tests/e2e/lib-thin.sh"
. "$QLUN_REPO/bench/guest/stack-lib.sh"
describe_plan
bench_main
