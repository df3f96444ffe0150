#!/bin/sh
# Run every qlun test: unit, qcow2 interop and fuzz-style tests under
# ASan/UBSan, then the end-to-end tests in the VM rig (initiator -> LIO
# iSCSI -> TCMU -> tcmu-runner -> qlun -> image).  Installs what it needs.
#   sudo scripts/test-all.sh
set -eu
repo=$(cd "$(dirname "$0")/.." && pwd)
start=$(date +%s)
# In this run a missing rig is a failure, not a skip.
export QLUN_E2E_REQUIRED=ON
"$repo/scripts/install-deps.sh"
"$repo/scripts/build.sh"

status=0
echo "=== unit and interop tests (ASan + UBSan) ==="
ctest --test-dir "$repo/build-asan" --output-on-failure -j 2 || status=1
echo "=== fuzz targets (libFuzzer, ASan + UBSan), ${QLUN_FUZZ_SECONDS:-60} s each ==="
ctest --test-dir "$repo/build-fuzz" --output-on-failure --no-tests=error -L fuzz || status=1
echo "=== end-to-end tests in the VM rig ==="
ctest --test-dir "$repo/build" --output-on-failure --no-tests=error -L e2e || status=1
echo "test-all.sh: finished in $(( $(date +%s) - start )) s, status $status"
exit $status
