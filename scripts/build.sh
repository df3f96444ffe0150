#!/bin/sh
# Build qlun three times: build/ (the handler tcmu-runner loads; the e2e
# tests use it), build-asan/ (ASan + UBSan, for unit and interop tests) and
# build-fuzz/ (clang: the libFuzzer targets of tests/fuzz, ASan + UBSan).
#   scripts/build.sh [--asan-only|--handler-only|--fuzz-only]
# QLUN_FUZZ_SECONDS (default 60) is how long CTest runs each fuzz target.
set -eu
repo=$(cd "$(dirname "$0")/.." && pwd)
jobs=$(nproc 2>/dev/null || echo 2)
what=${1:-all}
if [ "$what" = all ] || [ "$what" = --handler-only ]; then
    cmake -S "$repo" -B "$repo/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
          -DQLUN_E2E_REQUIRED="${QLUN_E2E_REQUIRED:-OFF}" >/dev/null
    cmake --build "$repo/build" -j "$jobs"
fi
if [ "$what" = all ] || [ "$what" = --asan-only ]; then
    cmake -S "$repo" -B "$repo/build-asan" -DCMAKE_BUILD_TYPE=Debug \
          -DQLUN_SANITIZE=ON -DQLUN_BUILD_HANDLER=OFF \
          -DQLUN_E2E_REQUIRED="${QLUN_E2E_REQUIRED:-OFF}" >/dev/null
    cmake --build "$repo/build-asan" -j "$jobs"
fi
if [ "$what" = all ] || [ "$what" = --fuzz-only ]; then
    CC=clang cmake -S "$repo" -B "$repo/build-fuzz" -DCMAKE_BUILD_TYPE=Debug \
          -DQLUN_FUZZ=ON -DQLUN_BUILD_HANDLER=OFF \
          -DQLUN_FUZZ_SECONDS="${QLUN_FUZZ_SECONDS:-60}" >/dev/null
    cmake --build "$repo/build-fuzz" -j "$jobs"
fi
