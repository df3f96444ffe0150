# qlun e2e — host-side helpers shared by the test-*.sh scripts.
# Source after setting HERE (this directory) and REPO (the checkout).

# Find handler_qlun.so (QLUN_HANDLER_DIR, else under QLUN_BUILD_DIR or
# <repo>/build) and export both for rig.sh; exit 77 (skip) without it.
e2e_find_handler() {
    BUILD=${QLUN_BUILD_DIR:-$REPO/build}
    if [ -z "${QLUN_HANDLER_DIR:-}" ]; then
        local h
        h=$(find "$BUILD" -name handler_qlun.so -type f 2>/dev/null | head -1)
        [ -n "$h" ] && QLUN_HANDLER_DIR=$(dirname "$(realpath "$h")")
    fi
    if [ -z "${QLUN_HANDLER_DIR:-}" ] || [ ! -f "$QLUN_HANDLER_DIR/handler_qlun.so" ]; then
        echo "SKIP: handler_qlun.so not found (build it: scripts/build.sh --handler-only, or set QLUN_HANDLER_DIR)"
        exit 77
    fi
    export QLUN_HANDLER_DIR QLUN_BUILD_DIR=$BUILD
}

# The start of every rig test: e2e_begin NAME RIG_TIMEOUT_S.  Sets the
# rig's wall-clock limit (unless QLUN_RIG_TIMEOUT is set; keep it below
# CTest's timeout so the rig reports a timeout itself), START, the handler
# (or skip), the rig (or skip) and WORK.
e2e_begin() {
    export QLUN_RIG_TIMEOUT=${QLUN_RIG_TIMEOUT:-$2}
    START=$(date +%s)
    e2e_find_handler
    e2e_need_rig
    e2e_workdir "$1"
}

# Exit 77 (skip) when QEMU's iSCSI driver (the second initiator) is missing.
e2e_need_qemu_iscsi() {
    if ! ls /usr/lib/x86_64-linux-gnu/qemu/block-iscsi.so >/dev/null 2>&1; then
        echo "SKIP: QEMU's iSCSI driver missing (apt-get install qemu-block-extra)"
        exit 77
    fi
}

# Checks made on the host after the rig ran (on what it left on its disk).
HOST_RESULTS=()
HOST_FAIL=0
hpass() { HOST_RESULTS+=("PASS  $1"); }
hfail() { HOST_RESULTS+=("FAIL  $1${2:+  ($2)}"); HOST_FAIL=$((HOST_FAIL + 1)); }

# Exit 77 (skip) when the rig cannot boot here.
e2e_need_rig() {
    if ! command -v qemu-system-x86_64 >/dev/null || ! ls /boot/vmlinuz-* >/dev/null 2>&1; then
        echo "SKIP: no qemu-system-x86_64 or /boot/vmlinuz-* (run scripts/install-rig-deps.sh)"
        exit 77
    fi
}

# WORK: a new work dir, removed at exit unless the test failed (FAILED
# not 0) or QLUN_E2E_KEEP=1.
e2e_workdir() {
    WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/qlun-e2e-$1.XXXXXX")
    trap 'if [ "${QLUN_E2E_KEEP:-0}" = 1 ] || [ "${FAILED:-1}" != 0 ]; then
              echo "work dir kept: $WORK"; else rm -rf "$WORK"; fi' EXIT
}

# Print the guest's report, the host checks and the figures, then exit: 0
# if the guest script passed and wrote a report and no host check failed,
# 1 otherwise.  $1: test name, $2: rig status.
e2e_finish() {
    local name=$1 rc=$2 pass fail
    echo
    echo "================ test-$name report ================"
    if [ -s "$WORK/report.txt" ]; then cat "$WORK/report.txt"; else echo "FAIL  guest wrote no report (rig status $rc)"; fi
    [ ${#HOST_RESULTS[@]} = 0 ] || printf '%s\n' "${HOST_RESULTS[@]}"
    echo "---------------- figures ----------------"
    cat "$WORK/figures.txt" 2>/dev/null
    fail=$(grep -c '^FAIL' "$WORK/report.txt" 2>/dev/null)
    pass=$(grep -c '^PASS' "$WORK/report.txt" 2>/dev/null)
    echo "--------------------------------------------------"
    echo "guest: ${pass:-0} passed, ${fail:-0} failed (rig status $rc); host: $HOST_FAIL failed; $(( $(date +%s) - START )) s total"
    FAILED=0
    [ "$rc" = 0 ] && [ "$HOST_FAIL" = 0 ] && [ -s "$WORK/report.txt" ] || FAILED=1
    if [ "$FAILED" != 0 ]; then
        echo "FAIL (logs: $WORK/guest.log, $WORK/console.log, $WORK/logs/tcmu-runner.log, $WORK/out/)"
        exit 1
    fi
    echo "PASS"
    exit 0
}
