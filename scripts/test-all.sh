#!/bin/sh
# Run every qlun test: unit, qcow2 interop and fuzz-style tests under
# ASan/UBSan, then the end-to-end tests in the VM rig (initiator -> LIO
# iSCSI -> TCMU -> tcmu-runner -> qlun -> image).  Installs what it needs.
# Run as root (or with sudo):
#   scripts/test-all.sh
#
# QLUN_SKIP_E2E=1 leaves out the end-to-end stage (and says so loudly).  It
# exists only for scripts/fresh-debian.sh; CI (.ci/run) unsets it, so CI
# always runs, and requires, the end-to-end tests.
set -eu
repo=$(cd "$(dirname "$0")/.." && pwd)
start=$(date +%s)
# In this run a missing rig is a failure, not a skip.
export QLUN_E2E_REQUIRED=ON
"$repo/scripts/install-deps.sh"
"$repo/scripts/build.sh"

status=0
# run_ctest ARGS...: ctest counts a skipped test (exit 77) as no failure;
# here every test must run, so a skip fails the stage too.
run_ctest() {
    log=$(mktemp)
    { ctest "$@"; echo "ctest exit status $?"; } 2>&1 | tee "$log"
    rc=0
    grep -qx "ctest exit status 0" "$log" || rc=1
    if grep -q "The following tests did not run" "$log"; then
        echo "test-all.sh: FAIL: tests skipped (a skip in this run is a failure):" >&2
        sed -n '/The following tests did not run/,/^$/p' "$log" >&2
        rc=1
    fi
    rm -f "$log"
    return $rc
}
echo "=== unit and interop tests (ASan + UBSan) ==="
run_ctest --test-dir "$repo/build-asan" --output-on-failure -j 2 || status=1
echo "=== fuzz targets (libFuzzer, ASan + UBSan), ${QLUN_FUZZ_SECONDS:-60} s each ==="
run_ctest --test-dir "$repo/build-fuzz" --output-on-failure --no-tests=error -L fuzz || status=1
if [ "${QLUN_SKIP_E2E:-0}" = 1 ]; then
    e2e="NOT RUN (QLUN_SKIP_E2E=1)"
    echo "=== end-to-end tests in the VM rig: NOT RUN ==="
    echo "test-all.sh: WARNING: QLUN_SKIP_E2E=1: the end-to-end tests were" \
         "skipped; this is NOT a full test run" >&2
else
    e2e=run
    echo "=== end-to-end tests in the VM rig ==="
    run_ctest --test-dir "$repo/build" --output-on-failure --no-tests=error -L e2e || status=1
fi
echo "test-all.sh: finished in $(( $(date +%s) - start )) s, status $status, end-to-end tests: $e2e"
exit $status
