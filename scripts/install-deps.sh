#!/bin/sh
# Install everything qlun needs to build and test on Debian bookworm:
# the toolchain and libraries (GLib and json-glib: the management socket
# and qlunctl), qemu-img/qemu-io (the qcow2 oracle), jq (the unit tests
# read qemu-img's JSON with it; the e2e job tests too), losetup
# (package mount; tests/blockdev) and the VM rig's packages
# (scripts/install-rig-deps.sh).  Idempotent; run as root.
set -eu
here=$(cd "$(dirname "$0")" && pwd)

PKGS="build-essential cmake pkg-config zlib1g-dev libzstd-dev dpkg-dev
      libglib2.0-dev libjson-glib-dev
      qemu-utils python3 mount groff-base clang libclang-rt-14-dev jq"

# shellcheck disable=SC2086
"$(dirname "$0")/apt-install.sh" install-deps.sh $PKGS
"$here/install-rig-deps.sh"
