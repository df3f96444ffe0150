#!/bin/sh
# Install everything the qlun e2e VM rig (tests/e2e/rig.sh) and its tests
# need on a Debian bookworm machine.  Idempotent; run as root.
#
#   scripts/install-rig-deps.sh
#
# The rig boots Debian's own kernel (linux-image-amd64: /boot/vmlinuz-* with
# LIO, TCMU and iscsi modules) under QEMU/TCG with the host's userspace as
# the guest root, so the target and initiator tools are installed on the HOST.
# bench/stack-bench.sh also needs fio, qemu-utils (qemu-nbd, qemu-io,
# qemu-img), mount (losetup) and the kernel's nbd and loop modules (in
# linux-image-amd64).
set -eu

PKGS="
  qemu-system-x86 qemu-utils
  linux-image-amd64 kmod
  busybox-static cpio gzip xz-utils zstd file
  e2fsprogs util-linux mount iproute2 procps sysvinit-utils coreutils mawk
  tcmu-runner targetcli-fb python3-rtslib-fb python3-dbus python3-gi
  dbus dbus-bin dbus-daemon
  open-iscsi sg3-utils fio libiscsi-bin qemu-block-extra
  jq
"

# shellcheck disable=SC2086
"$(dirname "$0")/apt-install.sh" install-rig-deps.sh $PKGS

# Debian's kernel image is only readable by root; that is fine for the rig
# (it runs as root), but say so if there is no bootable kernel at all.
found=
for k in /boot/vmlinuz-*; do
    [ -e "$k" ] || continue
    v=${k#/boot/vmlinuz-}
    if ls /lib/modules/"$v"/kernel/drivers/target/target_core_user.ko* >/dev/null 2>&1; then
        found=$v
    fi
done
if [ -z "$found" ]; then
    echo "install-rig-deps.sh: WARNING: no /boot/vmlinuz-<ver> with /lib/modules/<ver>/.../target_core_user.ko" >&2
    exit 1
fi
echo "install-rig-deps.sh: rig kernel: $found"
