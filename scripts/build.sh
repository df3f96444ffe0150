#!/bin/sh
# Build qlun twice: build/ (the handler tcmu-runner loads; the e2e tests
# use it) and build-asan/ (ASan + UBSan, for unit and interop tests).
#   scripts/build.sh [--asan-only|--handler-only]
set -eu
repo=$(cd "$(dirname "$0")/.." && pwd)
jobs=$(nproc 2>/dev/null || echo 2)
what=${1:-all}
if [ "$what" != --asan-only ]; then
    cmake -S "$repo" -B "$repo/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
          -DQLUN_E2E_REQUIRED="${QLUN_E2E_REQUIRED:-OFF}" >/dev/null
    cmake --build "$repo/build" -j "$jobs"
fi
if [ "$what" != --handler-only ]; then
    cmake -S "$repo" -B "$repo/build-asan" -DCMAKE_BUILD_TYPE=Debug \
          -DQLUN_SANITIZE=ON -DQLUN_BUILD_HANDLER=OFF \
          -DQLUN_E2E_REQUIRED="${QLUN_E2E_REQUIRED:-OFF}" >/dev/null
    cmake --build "$repo/build-asan" -j "$jobs"
fi
