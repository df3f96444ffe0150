#!/bin/sh
# Install everything qlun needs to build and test on Debian bookworm:
# the toolchain and libraries, qemu-img/qemu-io (the qcow2 oracle), losetup
# (package mount; tests/blockdev) and the VM rig's packages
# (scripts/install-rig-deps.sh).  Idempotent; run as root.
set -eu
here=$(cd "$(dirname "$0")" && pwd)

PKGS="build-essential cmake pkg-config zlib1g-dev libzstd-dev dpkg-dev
      qemu-utils python3 mount groff-base clang libclang-rt-14-dev"

if [ "$(id -u)" != 0 ]; then
    echo "install-deps.sh: must run as root (apt-get)" >&2
    exit 1
fi
missing=
for p in $PKGS; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null |
        grep -q '^install ok installed$' || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "install-deps.sh: installing:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends $missing
fi
"$here/install-rig-deps.sh"
