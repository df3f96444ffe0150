#!/bin/bash
# qlun end-to-end VM rig.
#
#   tests/e2e/rig.sh [--disk SIZE] [--timeout SECS] GUEST_SCRIPT [ARGS...]
#
# Boots Debian's kernel (from /boot, modules from /lib/modules/<ver>) under
# QEMU software emulation (TCG) with the HOST's userspace as the guest's root:
# a tiny busybox initramfs (built at run time in a temp dir) loads the virtio /
# 9p / overlay modules, mounts the host "/" read-only over 9p under a tmpfs
# overlay and switch_roots into it.  A second, writable 9p share (the "work
# dir") is mounted at /rig in the guest: scripts/inputs in, results/logs out.
# A sparse raw disk (ext4, made here with mkfs.ext4) is attached as virtio and
# mounted at /data in the guest, so test images live on a real filesystem
# (O_DIRECT, FALLOC_FL_ZERO_RANGE work there; tmpfs has neither).
#
# The guest runs GUEST_SCRIPT ARGS... (absolute path resolved here; the
# host's / is visible read-only in the guest so it runs in place) with bash,
# writes its exit status to /rig/status and powers off.  rig.sh exits with that
# status; 124 if the VM timed out, 125 if the VM died or wrote no status.
#
# Guest environment (exported to the guest script, also in /rig/rig-env.sh):
#   RIG_SHARE=/rig      writable work dir (host: $QLUN_RIG_WORKDIR)
#   RIG_DATA=/data      ext4 on the virtio disk
#   QLUN_REPO           absolute path of this repo (read-only in the guest)
#   QLUN_BUILD_DIR      absolute build dir (default $QLUN_REPO/build)
#   QLUN_HANDLER_DIR    dir containing handler_qlun.so (autodetected under
#                       QLUN_BUILD_DIR when not set; empty if not built yet)
#   every other QLUN_* variable set on the host is passed through too.
#
# Host environment knobs:
#   QLUN_RIG_WORKDIR=DIR  use DIR as the work dir (created if missing; kept).
#                         Lets a caller pre-populate inputs and read outputs.
#   QLUN_RIG_KEEP=1       keep the temporary work dir (always kept on failure
#                         unless QLUN_RIG_KEEP=0).
#   QLUN_RIG_TIMEOUT=S    wall-clock limit for the VM (default 900 s).
#   QLUN_RIG_KERNEL=VER   kernel version to boot (default: newest /boot/vmlinuz-*
#                         whose /lib/modules/VER has target_core_user).
#   QLUN_RIG_MEM=MiB      guest memory (default 2048).  QLUN_RIG_SMP=N (default 2).
#   QLUN_RIG_ACCEL=...    QEMU accelerator (default "tcg,thread=multi"; nested
#                         KVM hangs on these machines).
#   QLUN_RIG_QUIET=1      do not stream the guest console to stdout (it always
#                         goes to WORKDIR/console.log).
#   QLUN_RIG_DISK=SIZE    same as --disk (default 16G).
#
# Files in the work dir after a run: console.log (whole serial console),
# guest.log (guest script stdout+stderr), status (exit code), data.img (the
# ext4 disk; inspect with debugfs), rig-env.sh, plus whatever the guest wrote.
set -u

die() { echo "rig.sh: $*" >&2; exit 125; }

RIG_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$RIG_DIR/../.." && pwd)

DISK_SIZE=${QLUN_RIG_DISK:-16G}
TIMEOUT=${QLUN_RIG_TIMEOUT:-900}
while [ $# -gt 0 ]; do
    case "$1" in
        --disk) DISK_SIZE=$2; shift 2 ;;
        --disk=*) DISK_SIZE=${1#--disk=}; shift ;;
        --timeout) TIMEOUT=$2; shift 2 ;;
        --timeout=*) TIMEOUT=${1#--timeout=}; shift ;;
        -h|--help) sed -n '2,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        --) shift; break ;;
        -*) die "unknown option $1" ;;
        *) break ;;
    esac
done
[ $# -ge 1 ] || die "usage: rig.sh [--disk SIZE] [--timeout SECS] GUEST_SCRIPT [ARGS...]"
GUEST_SCRIPT=$(realpath -e "$1") || die "guest script $1 not found"
shift

for t in qemu-system-x86_64 busybox cpio gzip mkfs.ext4 timeout; do
    command -v "$t" >/dev/null || die "$t not installed (run scripts/install-rig-deps.sh)"
done

# ---- kernel -----------------------------------------------------------------
pick_kernel() {
    local v best=
    for f in /boot/vmlinuz-*; do
        [ -e "$f" ] || continue
        v=${f#/boot/vmlinuz-}
        [ -f /lib/modules/$v/modules.dep ] || continue
        ls /lib/modules/$v/kernel/drivers/target/target_core_user.ko* >/dev/null 2>&1 || continue
        if [ -z "$best" ] || [ "$(printf '%s\n%s\n' "$best" "$v" | sort -V | tail -1)" = "$v" ]; then
            best=$v
        fi
    done
    echo "$best"
}
KVER=${QLUN_RIG_KERNEL:-$(pick_kernel)}
[ -n "$KVER" ] || die "no /boot/vmlinuz-* with matching /lib/modules/<ver> containing target_core_user (install linux-image-amd64)"
KERNEL=/boot/vmlinuz-$KVER
MODDIR=/lib/modules/$KVER
[ -r "$KERNEL" ] || die "$KERNEL not readable"

# ---- work dir ---------------------------------------------------------------
if [ -n "${QLUN_RIG_WORKDIR:-}" ]; then
    WORK=$QLUN_RIG_WORKDIR
    mkdir -p "$WORK" || die "cannot create $WORK"
    WORK=$(cd "$WORK" && pwd)
    OWN_WORK=0
else
    WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/qlun-rig.XXXXXX") || die "mktemp failed"
    OWN_WORK=1
fi
STAGE=$(mktemp -d "${TMPDIR:-/var/tmp}/qlun-rig-initrd.XXXXXX") || die "mktemp failed"
mkdir -p "$WORK/.rig"
rm -f "$WORK/status" "$WORK/guest.log" "$WORK/console.log"

cleanup() {
    rm -rf "$STAGE"
    if [ "$OWN_WORK" = 1 ]; then
        if [ "${QLUN_RIG_KEEP:-}" = 1 ] || { [ "${RC:-1}" != 0 ] && [ "${QLUN_RIG_KEEP:-}" != 0 ]; }; then
            echo "rig.sh: work dir kept: $WORK" >&2
        else
            rm -rf "$WORK"
        fi
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- initramfs --------------------------------------------------------------
declare -A SEEN=()
MODLIST=()
# resolve NAME (module name, - or _) to its modules.dep path, dependencies first
add_module() {
    local name=$1 line path deps d i
    name=${name//-/_}
    # builtin? nothing to load
    if [ -f "$MODDIR/modules.builtin" ] && sed 's/-/_/g' "$MODDIR/modules.builtin" | grep -qE "/${name}\.ko\$"; then
        return 0
    fi
    line=$(awk -v n="$name" -F: '
        { p=$1; b=p; sub(/.*\//, "", b); sub(/\.ko(\.(xz|zst|gz))?$/, "", b); gsub(/-/, "_", b);
          if (b == n) { print; exit } }' "$MODDIR/modules.dep")
    [ -n "$line" ] || die "module $name not found in $MODDIR/modules.dep"
    path=${line%%:*}
    [ -n "${SEEN[$path]:-}" ] && return 0
    SEEN[$path]=1
    read -r -a deps <<<"${line#*:}"
    for ((i=${#deps[@]}-1; i>=0; i--)); do
        d=${deps[$i]##*/}; d=${d%%.ko*}
        add_module "$d"
    done
    MODLIST+=("$path")
}
for m in virtio virtio_ring virtio_pci netfs fscache 9pnet 9pnet_virtio 9p overlay; do
    add_module "$m"
done

mkdir -p "$STAGE"/{bin,dev,proc,sys,mnt/lower,mnt/rw,newroot,lib/modules}
cp /usr/bin/busybox "$STAGE/bin/busybox" 2>/dev/null || cp "$(command -v busybox)" "$STAGE/bin/busybox"
file_ok=1
if command -v file >/dev/null && ! file -L "$STAGE/bin/busybox" | grep -q 'statically linked'; then
    file_ok=0
fi
[ "$file_ok" = 1 ] || die "busybox is not statically linked (install busybox-static)"
mknod -m 600 "$STAGE/dev/console" c 5 1 2>/dev/null || true
mknod -m 666 "$STAGE/dev/null" c 1 3 2>/dev/null || true
: >"$STAGE/lib/modules/load.list"
n=0
for p in "${MODLIST[@]}"; do
    n=$((n+1))
    dst=$(printf '%02d-%s' "$n" "$(basename "$p")")
    case "$p" in
        *.ko) cp "$MODDIR/$p" "$STAGE/lib/modules/$dst" ;;
        *.ko.xz) xz -dc "$MODDIR/$p" >"$STAGE/lib/modules/${dst%.xz}"; dst=${dst%.xz} ;;
        *.ko.zst) zstd -qdc "$MODDIR/$p" >"$STAGE/lib/modules/${dst%.zst}"; dst=${dst%.zst} ;;
        *.ko.gz) gzip -dc "$MODDIR/$p" >"$STAGE/lib/modules/${dst%.gz}"; dst=${dst%.gz} ;;
        *) die "unknown module format $p" ;;
    esac || die "cannot unpack module $p"
    echo "$dst" >>"$STAGE/lib/modules/load.list"
done

cat >"$STAGE/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox mkdir -p /usr/bin /usr/sbin /sbin
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
fail() { echo "rig-init: FATAL: $*"; echo "rig-init: dropping to poweroff"; sleep 1; poweroff -f; sleep 5; echo o >/proc/sysrq-trigger; }
for m in $(cat /lib/modules/load.list); do
    insmod /lib/modules/$m || fail "insmod $m"
done
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot /mnt/lower || fail "mount hostroot"
mount -t tmpfs -o mode=755,size=75% tmpfs /mnt/rw || fail "tmpfs"
mkdir -p /mnt/rw/upper /mnt/rw/work
mount -t overlay -o lowerdir=/mnt/lower,upperdir=/mnt/rw/upper,workdir=/mnt/rw/work overlay /newroot || fail "overlay"
mkdir -p /newroot/rig
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=none rig /newroot/rig || fail "mount rig share"
mount -t tmpfs -o mode=755 tmpfs /newroot/run
# /tmp stays the overlay's: the host's files show through (a checkout and
# build under the host's /tmp, as a CI clone may be, must be visible) and
# the guest's own writes land in the tmpfs upper layer.
mount --move /proc /newroot/proc
mount --move /sys /newroot/sys
mount --move /dev /newroot/dev
exec switch_root /newroot /bin/bash /rig/.rig/stage2.sh
EOF
chmod 755 "$STAGE/init"
( cd "$STAGE" && find . -mindepth 1 | cpio -o -H newc --quiet | gzip -1 ) >"$WORK/.rig/initrd.gz" \
    || die "cannot build initramfs"

# ---- stage 2 (runs as PID 1 inside the switched root) -----------------------
cat >"$WORK/.rig/stage2.sh" <<'EOF'
#!/bin/bash
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root TERM=dumb LANG=C.UTF-8
# same userspace as the host: prefer busybox for the final power-off
off() { sync; /usr/bin/busybox poweroff -f 2>/dev/null; sleep 3; echo o >/proc/sysrq-trigger; sleep 10; }
trap off EXIT
mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
ln -sf /proc/self/fd /dev/fd; ln -sf /proc/self/fd/0 /dev/stdin
ln -sf /proc/self/fd/1 /dev/stdout; ln -sf /proc/self/fd/2 /dev/stderr
mkdir -p /run/lock/iscsi /run/dbus /run/user /var/tmp /var/lock
mountpoint -q /sys/kernel/config || { echo "rig-stage2: mounting configfs"; modprobe configfs; mount -t configfs configfs /sys/kernel/config; }
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
hostname qlun-rig
echo qlun-rig >/etc/hostname
ip link set lo up
echo 4 >/proc/sys/kernel/printk
. /rig/rig-env.sh
modprobe virtio_blk
for i in $(seq 50); do [ -b /dev/vda ] && break; sleep 0.1; done
mkdir -p /data
mount -o noatime /dev/vda /data || echo "rig-stage2: cannot mount /dev/vda on /data"
cd /rig
echo "rig-stage2: $(cut -d' ' -f1 /proc/uptime)s since boot, running $RIG_GUEST_SCRIPT"
# not a pipe: a daemon the script leaves behind with our stdout must not
# keep us waiting for EOF
bash "$RIG_GUEST_SCRIPT" "${RIG_GUEST_ARGS[@]}" > >(tee /rig/guest.log) 2>&1 </dev/null
rc=$?
sleep 0.5
echo "rig-stage2: guest script exit status $rc after $(cut -d' ' -f1 /proc/uptime)s"
echo "$rc" >/rig/status
sync
# tidy up whatever the script left running so /data unmounts cleanly (the host
# may inspect data.img with debugfs afterwards)
pidof iscsid >/dev/null && timeout 20 iscsiadm -m node --logoutall=all >/dev/null 2>&1
kill -TERM -1 2>/dev/null; sleep 1; kill -KILL -1 2>/dev/null; sleep 0.2
cd /
umount /data 2>/dev/null || { sync; umount -l /data; echo "rig-stage2: /data busy, lazily unmounted"; }
sync
off
EOF

# /run and /dev/shm are fresh tmpfs in the guest: a script living there on
# the host is copied into the share and run from there.
case "$GUEST_SCRIPT" in
    /run/*|/dev/*|/proc/*|/sys/*)
        cp "$GUEST_SCRIPT" "$WORK/.rig/guest-script" || die "cannot copy $GUEST_SCRIPT"
        GUEST_SCRIPT_IN_GUEST=/rig/.rig/guest-script ;;
    *) GUEST_SCRIPT_IN_GUEST=$GUEST_SCRIPT ;;
esac

# ---- environment for the guest ----------------------------------------------
BUILD_DIR=${QLUN_BUILD_DIR:-$REPO/build}
HANDLER_DIR=${QLUN_HANDLER_DIR:-}
if [ -z "$HANDLER_DIR" ] && [ -d "$BUILD_DIR" ]; then
    h=$(find "$BUILD_DIR" -name handler_qlun.so -type f 2>/dev/null | head -1)
    [ -n "$h" ] && HANDLER_DIR=$(dirname "$(realpath "$h")")
fi
{
    echo "# generated by rig.sh"
    # pass through every QLUN_* variable of the host
    while IFS= read -r v; do
        case "$v" in QLUN_RIG_*|QLUN_REPO|QLUN_BUILD_DIR|QLUN_HANDLER_DIR) continue ;; esac
        printf 'export %s=%q\n' "$v" "${!v}"
    done < <(compgen -e | grep '^QLUN_' || true)
    printf 'export QLUN_REPO=%q\n' "$REPO"
    printf 'export QLUN_BUILD_DIR=%q\n' "$BUILD_DIR"
    printf 'export QLUN_HANDLER_DIR=%q\n' "$HANDLER_DIR"
    printf 'export RIG_SHARE=/rig RIG_DATA=/data RIG_KERNEL=%q\n' "$KVER"
    printf 'export RIG_GUEST_SCRIPT=%q\n' "$GUEST_SCRIPT_IN_GUEST"
    printf 'RIG_GUEST_ARGS=('; printf '%q ' "$@"; printf ')\n'
} >"$WORK/rig-env.sh"

# ---- data disk --------------------------------------------------------------
DISK=$WORK/data.img
rm -f "$DISK"
truncate -s "$DISK_SIZE" "$DISK" || die "cannot create $DISK"
mkfs.ext4 -q -F -E lazy_itable_init=1,lazy_journal_init=1,nodiscard -L qlun-data "$DISK" >/dev/null \
    || die "mkfs.ext4 failed"

# ---- boot -------------------------------------------------------------------
LOG=$WORK/console.log
ACCEL=${QLUN_RIG_ACCEL:-tcg,thread=multi}
QEMU=(qemu-system-x86_64 -accel "$ACCEL" -cpu max -m "${QLUN_RIG_MEM:-2048}" -smp "${QLUN_RIG_SMP:-2}"
      -nographic -no-reboot -nic none
      -kernel "$KERNEL" -initrd "$WORK/.rig/initrd.gz"
      -append "console=ttyS0 panic=-1 loglevel=4 rdinit=/init tsc=reliable mitigations=off"
      -virtfs "local,path=/,mount_tag=hostroot,security_model=passthrough,readonly=on,multidevs=remap"
      -virtfs "local,path=$WORK,mount_tag=rig,security_model=passthrough,multidevs=remap"
      -drive "file=$DISK,if=virtio,format=raw,cache=unsafe,discard=unmap")
echo "rig.sh: kernel $KVER, work dir $WORK, guest script $GUEST_SCRIPT $*" >&2
START=$(date +%s)
if [ "${QLUN_RIG_QUIET:-0}" = 1 ]; then
    timeout -k 10 "$TIMEOUT" "${QEMU[@]}" </dev/null >"$LOG" 2>&1
    QRC=$?
else
    timeout -k 10 "$TIMEOUT" "${QEMU[@]}" </dev/null 2>&1 | tee "$LOG"
    QRC=${PIPESTATUS[0]}
fi
END=$(date +%s)

if [ "$QRC" = 124 ] || [ "$QRC" = 137 ]; then
    RC=124
    echo "rig.sh: TIMEOUT: VM killed after ${TIMEOUT}s" >&2
elif [ -s "$WORK/status" ]; then
    RC=$(tr -dc 0-9 <"$WORK/status")
    RC=${RC:-125}
else
    RC=125
    echo "rig.sh: VM exited ($QRC) without writing a status" >&2
fi
echo "rig.sh: guest status $RC, VM wall time $((END-START))s" >&2
if [ "$RC" != 0 ]; then
    echo "rig.sh: ---- last 60 lines of $LOG ----" >&2
    tail -n 60 "$LOG" | tr -d '\r' >&2
fi
exit "$RC"
