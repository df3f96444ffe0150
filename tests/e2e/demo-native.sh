#!/bin/bash
# qlun demo on a host whose kernel has LIO and TCMU: export an image as a
# user:qlun LUN over iSCSI, attach it with open-iscsi, print a short report,
# and remove exactly what it created.
#
#   tests/e2e/demo-native.sh [--format raw|qcow2] [--size SIZE]
#                            [--restart-tcmu] [--port PORT]
#
# What it touches, and gives back at exit (also on failure or Ctrl-C):
#  - a work dir under $TMPDIR (/var/tmp) with the image;
#  - one backstore user:qlun/qlun_demo_PID and one target
#    iqn.2024-01.io.qlun:demo-PID (portal 127.0.0.1 on the first free
#    port from 3260, or --port; an ACL for this
#    host's initiator name, CHAP): added with `targetcli restoreconfig`
#    WITHOUT clear_existing, deleted by name; the saved LIO configuration
#    (/etc/rtslib-fb-target) is never written;
#  - one open-iscsi node record for that target (created with -o new, not
#    by discovery, so no other record appears), logged out and deleted;
#  - tcmu-runner: a running one is used if it has handler_qlun.so loaded.
#    If it runs without it, it is restarted only with --restart-tcmu (after
#    installing the handler into its directory if missing, removed again at
#    exit).  If none runs, one is started for the demo (with the system
#    handlers and this build's handler_qlun.so) and stopped at exit;
#  - iscsid is started if it is not running (and left running); a D-Bus
#    system bus (targetcli needs one) is started if there is none, and
#    stopped at exit.
# Other targets, LUNs, sessions and node records are never touched.
#
# Env: QLUN_DEMO_DIR (parent of the work dir), QLUN_DEMO_REPORT (copy the
# report there).  The handler: the installed one (/usr/lib/<arch>/tcmu-runner, e.g. from
# the qlun package), else $QLUN_HANDLER_DIR, else found under
# $QLUN_BUILD_DIR (default <repo>/build).
set -u
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
FMT=raw SIZE=1G RESTART=0 PORT=
while [ $# -gt 0 ]; do
    case "$1" in
        --format) FMT=$2; shift 2 ;;
        --size) SIZE=$2; shift 2 ;;
        --restart-tcmu) RESTART=1; shift ;;
        --port) PORT=$2; shift 2 ;;
        -h|--help) sed -n '2,29p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "demo-native.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
case "$FMT" in raw|qcow2) ;; *) echo "demo-native.sh: --format raw or qcow2" >&2; exit 2 ;; esac
[ "$(id -u)" = 0 ] || { echo "demo-native.sh: must run as root" >&2; exit 1; }
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

WORK=$(mktemp -d "${QLUN_DEMO_DIR:-${TMPDIR:-/var/tmp}}/qlun-demo.XXXXXX")
NAME=qlun_demo_$$
IQN=iqn.2024-01.io.qlun:demo-$$
# The portal: 127.0.0.1 on the first free port from 3260.  A target that
# already listens on 0.0.0.0:3260 would make LIO refuse 127.0.0.1:3260, and
# sharing its wildcard portal would expose the demo on every interface.
if [ -z "$PORT" ]; then
    PORT=3260
    while [ $PORT -lt 3300 ] && ss -Hltn "sport = :$PORT" 2>/dev/null | grep -q .; do
        PORT=$((PORT + 1))
    done
fi
PORTAL=127.0.0.1:$PORT
CHAP_USER=qlun CHAP_PASS=qlun-demo-$$-secret
SYS_HDIR=/usr/lib/$(gcc -dumpmachine 2>/dev/null || echo x86_64-linux-gnu)/tcmu-runner
[ -d "$SYS_HDIR" ] || SYS_HDIR=/usr/lib/x86_64-linux-gnu/tcmu-runner
REPORT=$WORK/report.txt
LOG=$WORK/steps.log
# lib.sh gives the sysfs lookups (rig_session_dir, rig_lun_dev, rig_dev_bytes);
# its logs go to the work dir.
RIG_SHARE=$WORK RIG_LOGDIR=$WORK/logs . "$HERE/lib.sh"
: >"$REPORT"

# ---- undo stack: every change is paired with its undo, run in reverse ------
UNDO=()
undo_push() { UNDO+=("$1"); }
# undo_to N: undo (and forget) every change after the first N; 1 if any
# undo failed.
undo_to() {
    local i rc=0
    for ((i = ${#UNDO[@]} - 1; i >= $1; i--)); do
        echo "+ undo: ${UNDO[i]}" >>"$LOG"
        if ! eval "${UNDO[i]}" >>"$LOG" 2>&1; then
            echo "demo-native.sh: cleanup step failed: ${UNDO[i]}" >&2; rc=1
        fi
        unset 'UNDO[i]'
    done
    return $rc
}
cleanup() {
    undo_to 0
    [ -n "${QLUN_DEMO_REPORT:-}" ] && cp "$REPORT" "$QLUN_DEMO_REPORT"
    if [ "${KEEP:-0}" = 1 ]; then echo "demo-native.sh: work dir kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { echo "$*" | tee -a "$REPORT"; }
die() { say "demo: FAILED: $*"; KEEP=1; exit 1; }
step() { local what=$1; shift; echo "+ $what: $*" >>"$LOG"
         "$@" >>"$LOG" 2>&1 || { tail -n 20 "$LOG" >&2; die "$what"; }; }

# ---- kernel target ---------------------------------------------------------------
for m in target_core_mod target_core_user iscsi_target_mod iscsi_tcp sd_mod; do
    step "modprobe $m" modprobe "$m"
done
mountpoint -q /sys/kernel/config || step "mount configfs" mount -t configfs configfs /sys/kernel/config

# targetcli needs the D-Bus system bus (every system has one; a bare VM may
# not): start one for the demo if there is none.
if ! dbus-send --system --dest=org.freedesktop.DBus --print-reply / \
        org.freedesktop.DBus.GetId >/dev/null 2>&1; then
    mkdir -p /run/dbus
    [ -s /etc/machine-id ] || [ -s /var/lib/dbus/machine-id ] || die "no D-Bus system bus and no machine-id"
    step "start a D-Bus system bus" dbus-daemon --system --fork --print-pid=3 3>"$WORK/dbus.pid"
    undo_push "kill $(cat "$WORK/dbus.pid")"
fi

# ---- the handler and tcmu-runner ---------------------------------------------------
BUILD_HDIR=${QLUN_HANDLER_DIR:-}
if [ -z "$BUILD_HDIR" ]; then
    h=$(find "${QLUN_BUILD_DIR:-$REPO/build}" -name handler_qlun.so -type f 2>/dev/null | head -1)
    [ -n "$h" ] && BUILD_HDIR=$(dirname "$(realpath "$h")")
fi
installed=0
[ -f "$SYS_HDIR/handler_qlun.so" ] && installed=1
[ $installed = 1 ] || [ -f "$BUILD_HDIR/handler_qlun.so" ] ||
    die "handler_qlun.so is neither installed in $SYS_HDIR nor built (scripts/build.sh --handler-only)"

runner_has_qlun() { grep -q 'handler_qlun\.so' "/proc/$1/maps" 2>/dev/null; }
TCMU_PID=$(pidof tcmu-runner | awk '{print $1}')
HANDLER_USED=
if [ -n "$TCMU_PID" ] && runner_has_qlun "$TCMU_PID"; then
    HANDLER_USED="$(grep -o '/[^ ]*handler_qlun\.so' "/proc/$TCMU_PID/maps" | head -1) (running tcmu-runner, pid $TCMU_PID)"
elif [ -n "$TCMU_PID" ]; then
    [ $RESTART = 1 ] || die "tcmu-runner (pid $TCMU_PID) runs without handler_qlun.so; it loads handlers only at start-up. Re-run with --restart-tcmu to let the demo restart it (every TCMU device it serves pauses meanwhile), or install the qlun package and restart it yourself"
    if [ $installed = 0 ]; then
        step "install the handler into $SYS_HDIR" install -m 0644 "$BUILD_HDIR/handler_qlun.so" "$SYS_HDIR/handler_qlun.so"
        undo_push "rm -f '$SYS_HDIR/handler_qlun.so'"
    fi
    if command -v systemctl >/dev/null && systemctl is-active -q tcmu-runner 2>/dev/null; then
        step "restart tcmu-runner" systemctl restart tcmu-runner
    else
        args=$(tr '\0' ' ' <"/proc/$TCMU_PID/cmdline")
        kill "$TCMU_PID"; sleep 1
        # shellcheck disable=SC2086
        setsid $args </dev/null >>"$LOG" 2>&1 &
    fi
    sleep 2
    TCMU_PID=$(pidof tcmu-runner | awk '{print $1}')
    [ -n "$TCMU_PID" ] && runner_has_qlun "$TCMU_PID" || die "tcmu-runner did not come back with handler_qlun.so"
    HANDLER_USED="$SYS_HDIR/handler_qlun.so (tcmu-runner restarted, pid $TCMU_PID)"
else
    # None runs: start one for the demo.  --handler-path replaces the
    # default directory, so give it the system handlers too.
    if [ $installed = 1 ]; then
        hdir=$SYS_HDIR
    else
        hdir=$WORK/handlers
        mkdir -p "$hdir"
        for f in "$SYS_HDIR"/handler_*.so; do [ -e "$f" ] && ln -s "$f" "$hdir/"; done
        ln -sf "$BUILD_HDIR/handler_qlun.so" "$hdir/handler_qlun.so"
    fi
    mkdir -p "$WORK/logs"
    tcmu-runner --handler-path "$hdir" -l "$WORK/logs" </dev/null >>"$LOG" 2>&1 &
    TCMU_PID=$!
    undo_push "kill $TCMU_PID; for i in \$(seq 50); do kill -0 $TCMU_PID 2>/dev/null || break; sleep 0.1; done"
    for i in $(seq 100); do runner_has_qlun "$TCMU_PID" && break; sleep 0.1; done
    runner_has_qlun "$TCMU_PID" || die "tcmu-runner did not load handler_qlun.so from $hdir"
    HANDLER_USED="$(readlink -f "$hdir/handler_qlun.so") (tcmu-runner started for the demo, pid $TCMU_PID)"
fi

# ---- the image, the backstore, the target --------------------------------------------
IMG=$WORK/demo.$FMT
case "$FMT" in
    raw) step "create the image" truncate -s "$SIZE" "$IMG" ;;
    qcow2) step "create the image" qemu-img create -q -f qcow2 "$IMG" "$SIZE" ;;
esac
INITIATOR=$(sed -n 's/^InitiatorName=//p' /etc/iscsi/initiatorname.iscsi 2>/dev/null | head -1)
[ -n "$INITIATOR" ] || die "no InitiatorName in /etc/iscsi/initiatorname.iscsi (is open-iscsi installed?)"
step "write the configuration" "$REPO/targetcli-config/make-config.sh" --image "$IMG" --format "$FMT" \
    --name "$NAME" --target-iqn "$IQN" --initiator-iqn "$INITIATOR" --port "$PORT" \
    --chap-user "$CHAP_USER" --chap-password "$CHAP_PASS" -o "$WORK/demo.json"
# Undo first: a half-applied restore leaves whatever it made.
LUN_MARK=${#UNDO[@]}
undo_push "targetcli /backstores/user:qlun delete $NAME"
undo_push "targetcli /iscsi delete $IQN"
# Without a D-Bus system bus targetcli warns (g-io-error-quark) and goes on;
# rtslib reports what it could not make as "Could not ..., skipped".
out=$(targetcli restoreconfig savefile="$WORK/demo.json" 2>&1)
rc=$?
echo "$out" >>"$LOG"
if [ $rc != 0 ] || echo "$out" | grep -qE 'Could not (create|find)|skipped'; then
    echo "$out" >&2; die "targetcli restoreconfig"
fi

# ---- the initiator -----------------------------------------------------------------
if ! pidof iscsid >/dev/null; then
    if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
        step "start iscsid" systemctl start iscsid
    else
        mkdir -p /run/lock/iscsi
        step "start iscsid" iscsid
    fi
    for i in $(seq 50); do pidof iscsid >/dev/null && break; sleep 0.1; done
fi
undo_push "iscsiadm -m node -o delete -T $IQN -p $PORTAL"
step "node record" iscsiadm -m node -o new -T "$IQN" -p "$PORTAL"
for kv in node.session.auth.authmethod=CHAP node.session.auth.username="$CHAP_USER" \
          node.session.auth.password="$CHAP_PASS" node.startup=manual \
          node.session.queue_depth=128; do
    step "node setting ${kv%%=*}" iscsiadm -m node -T "$IQN" -p "$PORTAL" -o update -n "${kv%%=*}" -v "${kv#*=}"
done
undo_push "iscsiadm -m node -T $IQN -p $PORTAL --logout"
step "iSCSI login" iscsiadm -m node -T "$IQN" -p "$PORTAL" --login
DEV=$(rig_lun_dev "$IQN" 0 20) || die "no disk appeared for LUN 0 of $IQN"

# ---- what the initiator sees ---------------------------------------------------------
sd=${DEV#/dev/}
sdisk=$(ls -d /sys/block/$sd/device/scsi_disk/* 2>/dev/null | head -1)
serial=$(sg_vpd -p sn "$DEV" 2>/dev/null | sed -n 's/^ *Unit serial number: *//p')
say ""
say "================ qlun demo ================"
say "kernel         : $(uname -r) (native LIO)"
say "handler        : $HANDLER_USED"
say "image          : $IMG ($FMT, $(stat -c %s "$IMG") bytes apparent, $(du -k "$IMG" | cut -f1) KiB allocated)"
say "target         : $IQN  portal $PORTAL  (CHAP, ACL for $INITIATOR)"
say "backstore      : user:qlun/$NAME"
say "initiator view : $DEV  (LUN 0, host $(basename "$(readlink -f /sys/block/$sd/device)"))"
say "  vendor/model : $(sed 's/ *$//' /sys/block/$sd/device/vendor) / $(sed 's/ *$//' /sys/block/$sd/device/model)  rev $(sed 's/ *$//' /sys/block/$sd/device/rev)"
say "  serial       : ${serial:-<none>}"
say "  size         : $(rig_dev_bytes "$DEV") bytes  (logical block $(cat /sys/block/$sd/queue/logical_block_size), physical $(cat /sys/block/$sd/queue/physical_block_size))"
say "  provisioning : $(cat $sdisk/provisioning_mode 2>/dev/null)  zeroing: $(cat $sdisk/zeroing_mode 2>/dev/null)  discard_max_bytes: $(cat /sys/block/$sd/queue/discard_max_bytes)"
say "  write cache  : $(cat $sdisk/cache_type 2>/dev/null)   max_sectors_kb: $(cat /sys/block/$sd/queue/max_sectors_kb)   queue_depth: $(cat /sys/block/$sd/device/queue_depth)"
ok=1
head -c 4194304 /dev/urandom >"$WORK/demo.bin"
if dd if="$WORK/demo.bin" of="$DEV" bs=1M seek=1 oflag=direct conv=fsync status=none &&
   dd if="$DEV" bs=1M skip=1 count=4 iflag=direct status=none | cmp -s - "$WORK/demo.bin"; then
    say "  write/read   : OK (4 MiB at offset 1 MiB, O_DIRECT, read back identical)"
else
    say "  write/read   : FAILED"; ok=0
fi
# Give back the LUN (logout, node record, target, backstore) before looking
# at the image behind it.
undo_to "$LUN_MARK" || die "removing the demo's LUN"
if [ "$FMT" = raw ]; then
    dd if="$IMG" bs=1M skip=1 count=4 status=none | cmp -s - "$WORK/demo.bin"
else
    qemu-img convert -f qcow2 -O raw "$IMG" "$WORK/demo.raw" &&
        dd if="$WORK/demo.raw" bs=1M skip=1 count=4 status=none | cmp -s - "$WORK/demo.bin"
fi
if [ $? = 0 ]; then
    extra=
    [ "$FMT" = qcow2 ] && extra=" (qemu-img check: $(qemu-img check -q "$IMG" >/dev/null 2>&1 && echo clean || echo ERRORS))"
    say "  image file   : holds the data written through the initiator$extra"
else
    say "  image file   : does NOT hold the written data"; ok=0
fi
say "image after    : $(stat -c %s "$IMG") bytes apparent, $(du -k "$IMG" | cut -f1) KiB allocated"
say "==========================================="
[ $ok = 1 ] || { KEEP=1; exit 1; }
exit 0
