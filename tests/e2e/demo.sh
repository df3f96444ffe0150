#!/bin/bash
# qlun demo: export an image as a qlun iSCSI LUN and attach it end to end.
#
#   tests/e2e/demo.sh [--format raw|qcow2] [--size SIZE]
#
# With the kernel target (LIO: target_core_user + iscsi_target_mod) it runs
# natively (tests/e2e/demo-native.sh: what it touches and gives back is
# listed there; --restart-tcmu and --port go to it).  When the running
# kernel has none (the usual case on these machines), the same native demo
# runs inside the VM rig (tests/e2e/rig.sh, Debian's kernel under QEMU/TCG).
# Env: QLUN_HANDLER_DIR / QLUN_BUILD_DIR (where handler_qlun.so is), QLUN_RIG_*.
set -u
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
FMT=raw SIZE=1G
while [ $# -gt 0 ]; do
    case "$1" in
        --format) FMT=$2; shift 2 ;;
        --size) SIZE=$2; shift 2 ;;
        --restart-tcmu|--port) break ;;     # for the native path
        -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "demo.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
BUILD=${QLUN_BUILD_DIR:-$REPO/build}
if [ -z "${QLUN_HANDLER_DIR:-}" ]; then
    h=$(find "$BUILD" -name handler_qlun.so -type f 2>/dev/null | head -1)
    [ -n "$h" ] && QLUN_HANDLER_DIR=$(dirname "$(realpath "$h")")
fi
if [ -z "${QLUN_HANDLER_DIR:-}" ]; then
    echo "demo.sh: handler_qlun.so not built; run: cmake -S $REPO -B $BUILD && cmake --build $BUILD" >&2
    exit 1
fi
export QLUN_HANDLER_DIR QLUN_BUILD_DIR=$BUILD

if [ -d /sys/kernel/config/target ] ||
   { modprobe -n target_core_user 2>/dev/null && modprobe -n iscsi_target_mod 2>/dev/null; }; then
    echo "demo.sh: the running kernel ($(uname -r)) has LIO and TCMU: running natively"
    exec "$HERE/demo-native.sh" --format "$FMT" --size "$SIZE" "$@"
fi
echo "demo.sh: native LIO not detected on the running kernel ($(uname -r)); using the VM rig"
WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/qlun-demo.XXXXXX")
rc=1
trap 'if [ "$rc" = 0 ] && [ "${QLUN_RIG_KEEP:-0}" != 1 ]; then rm -rf "$WORK"; else echo "demo.sh: work dir kept: $WORK"; fi' EXIT
echo "demo.sh: booting the rig (console log: $WORK/console.log) ..."
# Inside the rig the kernel has LIO: the demo runs its native path there.
QLUN_DEMO_DIR=/data QLUN_DEMO_REPORT=/rig/demo-report.txt QLUN_RIG_QUIET=1 QLUN_RIG_WORKDIR=$WORK \
    "$HERE/rig.sh" --disk 16G "$HERE/demo-native.sh" --format "$FMT" --size "$SIZE"
rc=$?
if [ -s "$WORK/demo-report.txt" ]; then cat "$WORK/demo-report.txt"; else echo "demo.sh: the guest produced no report"; fi
if [ $rc != 0 ]; then
    echo "--- guest log (last 30 lines)"; tail -n 30 "$WORK/guest.log" 2>/dev/null
fi
[ $rc = 0 ] && echo "demo.sh: OK" || echo "demo.sh: FAILED (status $rc)"
exit $rc
