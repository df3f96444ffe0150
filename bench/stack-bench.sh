#!/bin/bash
# qlun whole-stack benchmark: the same fio jobs on every backstore, through
# LIO + iSCSI (127.0.0.1) in the VM rig, one table.
#
#   bench/stack-bench.sh [OPTIONS]            (as root; one command)
#
# Boots tests/e2e/rig.sh with bench/guest/stack-bench.sh.  In the guest:
# D-Bus, tcmu-runner (qlun's handler_qlun.so and tcmu-runner's own
# handler_qcow.so side by side), iscsid; one iSCSI target with one LUN per
# backstore, logged in once; fio (direct=1, libaio) on the initiator's
# /dev/sdX.  Jobs that change what an image is (allocating write, blkdiscard,
# convert) get a fresh image of the backstore on a second target.
#
# Backstores (all images on the rig's /data ext4, LUNs of --lun-size):
#   qlun-qcow2          user:qlun, qcow2 with every cluster allocated
#                       (preallocation=falloc) and the random-job region
#                       written with data
#   qlun-qcow2-empty    user:qlun, a new sparse qcow2
#   qlun-qcow2-overlay  user:qlun, an empty qcow2 over a raw base (prefilled)
#   qlun-qcow2-xl2      user:qlun, like qlun-qcow2 with extended_l2=on
#   qlun-raw            user:qlun, a raw file (fallocated, prefilled)
#   fileio              LIO fileio (buffered) on a raw file, emulate_tpu/tpws=1
#   block-loop          LIO iblock on a loop device (direct I/O) over a raw file
#   user-qcow           user:qcow, tcmu-runner's own qcow2 handler
#   qemu-nbd            qemu-nbd --cache=none --aio=native --discard=unmap -f qcow2 on
#                       /dev/nbd0, LIO iblock on /dev/nbd0
# qlun runs with its default cfgstring (cache=writeback); extra options:
# QLUN_BENCH_QLUN_OPTS=";cache=none" (appended to every qlun cfgstring).
#
# Jobs (4k random ones over the first --rand-size of the LUN):
#   randread-4k-qd{1,16,64} randwrite-4k-qd{1,16,64} randrw-4k-qd{1,16,64}
#                        (randrw: 70 % reads; its latency is the reads')
#   alloc-randwrite-4k-qd16   4k random writes over the whole LUN of a fresh
#                        empty image (sparse qcow2 / sparse raw file)
#   seqwrite-64k seqread-64k (QD16)  seqwrite-1m seqread-1m (QD8)
#   flush-fsync          a 4k writer with fsync=1 beside a 4k random reader
#                        (both QD1): the figure is the reader's p99 latency
#   flush-nofsync        the same, the writer without fsync, for comparison
#   blkdiscard-z blkdiscard   of the whole LUN, seconds
#   convert              qemu-img convert -t none -O raw -n of a qcow2 source
#                        (LUN-sized, ~107 MiB in 15 scattered extents) onto
#                        the LUN (the ks3200 case), seconds
# Per cell: the figure (IOPS, MiB/s or s), p50/p99 latency, the CPU seconds
# of the serving process (tcmu-runner; qemu-nbd for qemu-nbd) per 100k I/Os
# or per GiB.  Each repetition runs every job on every backstore before the
# next job (interleaved); the table gives the median and the min-max spread,
# and each qlun figure's ratio to fileio's and to qemu-nbd's.
#
# Options:
#   --quick            backstores qlun-qcow2,qlun-raw,fileio,user-qcow,qemu-nbd;
#                      jobs randread-4k-qd16,randwrite-4k-qd16,randwrite-4k-qd1,
#                      alloc-randwrite-4k-qd16,seqwrite-1m,convert; runtime 5 s,
#                      1 repetition, --rand-size 256M  (~15-20 min under TCG)
#   --runtime S        seconds per fio job (default 10)
#   --repeat N         repetitions (default 3)
#   --backstores a,b   a subset, in this order
#   --jobs a,b         a subset, in this order
#   --lun-size SIZE    LUN / image size (default 4G)
#   --rand-size SIZE   region of the 4k random jobs, prefilled (default 1G)
#   --out DIR          work dir (results kept there; default a new
#                      /var/tmp/qlun-stack-bench.XXXXXX)
#   -h, --help
# The full default run (9 backstores, 19 jobs, 3 repetitions) takes ~4 h
# under TCG; the script prints its estimate before it starts.
#
# Environment: QLUN_BENCH_TCMU_ENV="K=V ..." is tcmu-runner's extra
# environment in the guest (to compare variants of the handler);
# QLUN_HANDLER_DIR / QLUN_BUILD_DIR pick the handler (default build/);
# QLUN_RIG_* as for tests/e2e/rig.sh.
#
# Output: the table on stdout, and in the work dir bench/table.txt,
# bench/table.json, bench/results.jsonl (every cell), bench/raw/ (fio JSON),
# guest.log.  Exit 0: every cell ran; non-zero with a message otherwise (a
# backstore that cannot be set up stops the run).  Not a test: nothing
# asserts on time; not part of CI.
set -u
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
GUEST=$HERE/guest/stack-bench.sh

die() { echo "stack-bench.sh: $1" >&2; exit "${2:-1}"; }

OUT=
ARGS=()
while [ $# -gt 0 ]; do
    case "$1" in
        -h|--help) sed -n '2,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        --out) OUT=$2; shift 2 ;;
        --quick) ARGS+=("$1"); shift ;;
        --runtime|--repeat|--backstores|--jobs|--lun-size|--rand-size)
            [ $# -ge 2 ] || die "$1 needs a value" 2
            ARGS+=("$1" "$2"); shift 2 ;;
        *) die "unknown option '$1' (see --help)" 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || die "run as root (the rig boots a VM with the host's / shared)"

# validate the options and get the estimate before a VM is booted
PLAN=$(bash "$GUEST" --check "${ARGS[@]}") || exit 2
echo "$PLAN" | grep -v '^ESTIMATE_SECS='
EST=$(echo "$PLAN" | sed -n 's/^ESTIMATE_SECS=//p')
NBS=$(echo "$PLAN" | sed -n 's/^stack-bench: \([0-9]*\) backstores.*/\1/p')
LUN=$(echo "$PLAN" | sed -n 's/.*LUNs \([0-9]*\)G.*/\1/p')

. "$REPO/tests/e2e/host-lib.sh"
e2e_find_handler            # exits 77 with a message when handler_qlun.so is missing
command -v qemu-system-x86_64 >/dev/null && ls /boot/vmlinuz-* >/dev/null 2>&1 \
    || die "no qemu-system-x86_64 or /boot/vmlinuz-* (run scripts/install-rig-deps.sh)"
for t in fio qemu-nbd qemu-img qemu-io blkdiscard losetup; do
    command -v "$t" >/dev/null || die "$t missing (run scripts/install-rig-deps.sh)"
done

if [ -z "$OUT" ]; then
    OUT=$(mktemp -d "${TMPDIR:-/var/tmp}/qlun-stack-bench.XXXXXX") || die "mktemp failed"
fi
mkdir -p "$OUT" || die "cannot create $OUT"
# every main image, the scratch image and an overlay's base, the convert
# source, room for the filesystem (the host file stays sparse)
DISK=$(( (NBS + 3) * ${LUN:-4} + 4 ))G
# a stuck guest must not hang the caller forever: twice the estimate
export QLUN_RIG_TIMEOUT=${QLUN_RIG_TIMEOUT:-$((EST * 2 + 600))}
export QLUN_RIG_QUIET=${QLUN_RIG_QUIET:-0}
echo "stack-bench.sh: work dir $OUT, rig disk $DISK, VM time limit ${QLUN_RIG_TIMEOUT} s"
echo "stack-bench.sh: started $(date -u +%FT%TZ)"
QLUN_RIG_WORKDIR=$OUT "$REPO/tests/e2e/rig.sh" --disk "$DISK" "$GUEST" "${ARGS[@]}"
RC=$?
rm -f "$OUT/data.img"       # tens of GiB of images; the results stay
echo "stack-bench.sh: finished $(date -u +%FT%TZ), guest status $RC"
if [ -s "$OUT/bench/table.txt" ]; then
    echo
    cat "$OUT/bench/table.txt"
    echo "(also $OUT/bench/table.txt, table.json, results.jsonl)"
fi
[ "$RC" = 0 ] || die "FAILED (guest status $RC): see $OUT/guest.log and $OUT/logs/" "$RC"
