#!/bin/sh
# Run one libFuzzer target of qlun for a bounded time (CTest's fuzz/<name>
# tests, and long runs by hand).
#
#   tests/fuzz/run-fuzz.sh FUZZER NAME SECONDS [libFuzzer options...]
#
# NAME is cfgstring, scsi or qcow2.  First replays the committed
# reproducers in tests/fuzz/regress/NAME/ (each must run clean), then
# fuzzes for SECONDS with one process, starting from the working corpus
# (<fuzzer's directory>/corpus/NAME, kept between runs, made on first use)
# and the seeds: committed (tests/fuzz/seeds/NAME) or generated now by
# make-seeds.py.  A crash, leak, timeout or broken invariant fails the run;
# the input is saved in <fuzzer's directory>/artifacts/.  Exit status is
# the fuzzer's, 1 for any finding (libFuzzer's own default, 77, is CTest's
# "skipped": a crash would pass as a skip), or 77 for qcow2 without qemu-img.
set -eu
fuzzer=${1:?usage: run-fuzz.sh FUZZER NAME SECONDS [options]}
name=${2:?usage: run-fuzz.sh FUZZER NAME SECONDS [options]}
seconds=${3:?usage: run-fuzz.sh FUZZER NAME SECONDS [options]}
shift 3
src=$(cd "$(dirname "$0")" && pwd)
out=$(cd "$(dirname "$fuzzer")" && pwd)
corpus=$out/corpus/$name
seeds=$out/seeds/$name
artifacts=$out/artifacts
mkdir -p "$corpus" "$artifacts"

# Private scratch space for fuzz_qcow2's image files, removed whatever
# happens (on tmpfs when there is one: the engine flushes a lot).
base=/dev/shm
[ -d "$base" ] && [ -w "$base" ] || base=${TMPDIR:-/tmp}
scratch=$(mktemp -d "$base/qlun-fuzz.XXXXXX")
trap 'rm -rf "$scratch"' EXIT INT TERM
export QLUN_FUZZ_TMPDIR="$scratch"

# Like the qcow2 engine tests: without qemu-img/qemu-io, skip (77).
if [ "$name" = qcow2 ] &&
   ! { command -v qemu-img && command -v qemu-io; } >/dev/null; then
    echo "SKIP: qemu-img/qemu-io not installed (they make the qcow2 seeds)"
    exit 77
fi
case $name in
cfgstring) seeds=$src/seeds/cfgstring ;;
scsi|qcow2) python3 "$src/make-seeds.py" "$name" "$seeds" ;;
*) echo "run-fuzz.sh: unknown target $name" >&2; exit 2 ;;
esac

# Per target: largest input, and a dictionary if there is one.
case $name in
cfgstring) max_len=4700 ;;
scsi) max_len=8192 ;;
qcow2) max_len=524288 ;;
esac
dict=
[ -f "$src/$name.dict" ] && dict=-dict=$src/$name.dict

if [ -d "$src/regress/$name" ]; then
    n=$(find "$src/regress/$name" -type f | wc -l)
    if [ "$n" -gt 0 ]; then
        echo "run-fuzz.sh: replaying $n reproducer(s) in regress/$name"
        # shellcheck disable=SC2046
        "$fuzzer" -error_exitcode=1 $(find "$src/regress/$name" -type f | sort)
    fi
fi

echo "run-fuzz.sh: fuzzing $name for $seconds s (corpus $corpus)"
# shellcheck disable=SC2086
"$fuzzer" -error_exitcode=1 -max_total_time="$seconds" -max_len="$max_len" -timeout=30 \
    -rss_limit_mb=2560 -print_final_stats=1 $dict \
    -artifact_prefix="$artifacts/$name-" "$@" "$corpus" "$seeds"
