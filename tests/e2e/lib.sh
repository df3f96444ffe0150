# shellcheck shell=bash disable=SC2034
# qlun e2e guest-side helpers.  Source from a guest script run by rig.sh:
#
#   . "$QLUN_REPO/tests/e2e/lib.sh"
#
# Everything here runs INSIDE the rig VM (host userspace, read-only, under a
# tmpfs overlay; no systemd, no udev).  Logs go to $RIG_LOGDIR (default
# $RIG_SHARE/logs, i.e. the host-visible work dir).
#
# Main entry points
#   rig_target_up              modprobe LIO + TCMU + iscsi, start D-Bus, tcmu-runner
#   rig_start_dbus / rig_start_tcmu [HANDLER_DIR] / rig_stop_tcmu / rig_tcmu_alive
#   rig_restoreconfig FILE     targetcli restoreconfig (clear_existing=true)
#   rig_start_iscsid
#   rig_login TARGET_IQN [CHAP_USER CHAP_PASS]   -> sets RIG_DEV (/dev/sdX of LUN $RIG_LUN)
#   rig_lun_dev TARGET_IQN [LUN]                 -> echo /dev/sdX (mknod if needed)
#   rig_logout [TARGET_IQN]
#   rig_check NAME CMD...      run CMD, record PASS/FAIL NAME; rig_pass/rig_fail NAME [why]
#   rig_report                 print the PASS/FAIL table; returns #failures (capped 100)
#   rig_diag [WHY]             dump tcmu-runner log tail + dmesg tail to stdout
#
# Variables (override before calling)
#   QLUN_HANDLER_DIR   dir with handler_qlun.so (rig.sh autodetects it)
#   RIG_INITIATOR_IQN  initiator name used by open-iscsi (default iqn.2024-01.io.qlun:initiator)
#   RIG_CHAP_USER / RIG_CHAP_PASS  (default qlun / qlun-chap-secret, = make-config.sh defaults)
#   RIG_PORTAL         (default 127.0.0.1:3260)
#   RIG_TCMU_DEBUG=1   run tcmu-runner with -d (default 1)

: "${RIG_SHARE:=/rig}"
: "${RIG_DATA:=/data}"
: "${RIG_LOGDIR:=$RIG_SHARE/logs}"
: "${QLUN_REPO:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
: "${RIG_INITIATOR_IQN:=iqn.2024-01.io.qlun:initiator}"
: "${RIG_CHAP_USER:=qlun}"
: "${RIG_CHAP_PASS:=qlun-chap-secret}"
: "${RIG_PORTAL:=127.0.0.1:3260}"
: "${RIG_TCMU_DEBUG:=1}"
: "${RIG_LUN:=0}"
RIG_MAKE_CONFIG=$QLUN_REPO/targetcli-config/make-config.sh
RIG_SYSTEM_HANDLER_DIR=/usr/lib/x86_64-linux-gnu/tcmu-runner
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mkdir -p "$RIG_LOGDIR"
RIG_TCMU_LOG=$RIG_LOGDIR/tcmu-runner.log
RIG_RESULTS=()
RIG_NFAIL=0

rig_log() { echo "[$(cut -d' ' -f1 /proc/uptime)] $*"; }

# ---- checks / report ---------------------------------------------------------
rig_pass() { RIG_RESULTS+=("PASS  $1"); rig_log "PASS: $1"; }
rig_fail() {
    RIG_RESULTS+=("FAIL  $1${2:+  ($2)}"); RIG_NFAIL=$((RIG_NFAIL+1))
    rig_log "FAIL: $1${2:+ ($2)}"
}
# rig_check NAME CMD... : output of CMD goes to stdout (the guest log)
rig_check() {
    local name=$1; shift
    "$@"
    local rc=$?
    if [ $rc = 0 ]; then rig_pass "$name"; return 0; fi
    rig_fail "$name" "exit $rc"; return 1
}
rig_report() {
    echo "================ e2e report ================"
    local r; for r in "${RIG_RESULTS[@]}"; do echo "$r"; done
    echo "--------------------------------------------"
    echo "$(( ${#RIG_RESULTS[@]} - RIG_NFAIL )) passed, $RIG_NFAIL failed"
    [ -n "${RIG_REPORT_FILE:-}" ] && printf '%s\n' "${RIG_RESULTS[@]}" >"$RIG_REPORT_FILE"
    [ "$RIG_NFAIL" -gt 100 ] && return 100
    return "$RIG_NFAIL"
}

rig_diag() {
    echo "---------------- diagnostics${1:+: $1} ----------------"
    echo "-- tcmu-runner ($(rig_tcmu_alive && echo running || echo NOT running)), last 40 non-debug lines of $RIG_TCMU_LOG:"
    grep -v '\[DEBUG' "$RIG_TCMU_LOG" 2>/dev/null | tail -n 40
    echo "-- dmesg tail:"
    dmesg | tail -n 40
    echo "-- iscsi sessions:"
    iscsiadm -m session 2>&1 | head
    echo "-------------------------------------------------"
}

# ---- target side ------------------------------------------------------------
rig_modprobe_target() {
    local m
    for m in configfs target_core_mod target_core_user iscsi_target_mod tcm_loop \
             target_core_file scsi_transport_iscsi iscsi_tcp sd_mod sg; do
        modprobe "$m" || { rig_log "modprobe $m failed"; return 1; }
    done
    mountpoint -q /sys/kernel/config || mount -t configfs configfs /sys/kernel/config
    [ -d /sys/kernel/config/target ]
}

rig_start_dbus() {
    if [ -S /run/dbus/system_bus_socket ] && dbus-send --system --dest=org.freedesktop.DBus \
         --print-reply / org.freedesktop.DBus.GetId >/dev/null 2>&1; then
        return 0
    fi
    mkdir -p /run/dbus /var/lib/dbus
    [ -s /etc/machine-id ] || dbus-uuidgen >/etc/machine-id
    dbus-daemon --system --fork --nopidfile 2>&1 || return 1
    local i; for i in $(seq 50); do [ -S /run/dbus/system_bus_socket ] && return 0; sleep 0.1; done
    return 1
}

rig_dbus_has_owner() {
    dbus-send --system --dest=org.freedesktop.DBus --print-reply /org/freedesktop/DBus \
        org.freedesktop.DBus.NameHasOwner "string:$1" 2>/dev/null | grep -q 'boolean true'
}

# default handler dir: $QLUN_HANDLER_DIR, else search $QLUN_BUILD_DIR
rig_handler_dir() {
    if [ -n "${QLUN_HANDLER_DIR:-}" ]; then echo "$QLUN_HANDLER_DIR"; return 0; fi
    local h
    h=$(find "${QLUN_BUILD_DIR:-$QLUN_REPO/build}" -name handler_qlun.so -type f 2>/dev/null | head -1)
    [ -n "$h" ] && dirname "$h"
}

# rig_start_tcmu [HANDLER_DIR]: --handler-path replaces the default dir, so
# the dir must hold every handler wanted (handler_qlun.so, or the system dir
# for user:qcow).  HANDLER_DIR "system": no --handler-path, as a system's
# tcmu-runner starts (an installed qlun package).
rig_start_tcmu() {
    local hdir=${1:-$(rig_handler_dir)}
    [ -n "$hdir" ] || { rig_log "no handler dir (handler_qlun.so not built?)"; return 1; }
    rig_stop_tcmu
    local args=(--handler-path "$hdir" -l "$RIG_LOGDIR")
    [ "$hdir" = system ] && args=(-l "$RIG_LOGDIR")
    [ "$RIG_TCMU_DEBUG" = 1 ] && args+=(-d)
    rig_log "starting tcmu-runner ${args[*]}"
    tcmu-runner "${args[@]}" >>"$RIG_LOGDIR/tcmu-runner.stdout" 2>&1 &
    RIG_TCMU_PID=$!
    local i
    for i in $(seq 150); do
        if ! kill -0 "$RIG_TCMU_PID" 2>/dev/null; then
            rig_log "tcmu-runner died at start-up"; RIG_TCMU_PID=; return 1
        fi
        rig_dbus_has_owner org.kernel.TCMUService1 && { rig_log "tcmu-runner up (pid $RIG_TCMU_PID)"; return 0; }
        sleep 0.2
    done
    rig_log "tcmu-runner did not register org.kernel.TCMUService1 on D-Bus within 30 s"
    return 1
}

rig_tcmu_alive() { [ -n "${RIG_TCMU_PID:-}" ] && kill -0 "$RIG_TCMU_PID" 2>/dev/null; }

rig_stop_tcmu() {
    [ -n "${RIG_TCMU_PID:-}" ] || return 0
    kill -TERM "$RIG_TCMU_PID" 2>/dev/null
    local i; for i in $(seq 100); do kill -0 "$RIG_TCMU_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$RIG_TCMU_PID" 2>/dev/null
    # Until it is really gone (30 s at most): its lock file stays locked
    # while it lives, and a new tcmu-runner would refuse to start
    # ("already running") — seen when wait returned before it had exited.
    for i in $(seq 300); do
        wait "$RIG_TCMU_PID" 2>/dev/null
        kill -0 "$RIG_TCMU_PID" 2>/dev/null || break
        sleep 0.1
    done
    RIG_TCMU_PID=
}

rig_target_up() {
    rig_modprobe_target || { rig_log "LIO modules missing"; return 1; }
    rig_start_dbus || { rig_log "dbus-daemon failed"; return 1; }
    rig_start_tcmu "$@"
}

# rig_restoreconfig FILE : clears any existing LIO config first.  Fails on a
# non-zero exit AND on "recoverable errors" in the output (the target, portal
# and ACLs are created even when a backstore is not).
rig_restoreconfig() {
    local out rc
    out=$(targetcli restoreconfig savefile="$1" clear_existing=true 2>&1); rc=$?
    echo "$out"
    echo "(targetcli restoreconfig exit status $rc)"
    [ "$rc" = 0 ] || return "$rc"
    echo "$out" | grep -qiE 'error|fail|skipped' && return 1
    return 0
}

rig_clearconfig() { targetcli clearconfig confirm=true >/dev/null 2>&1; }

# ---- initiator side ---------------------------------------------------------
rig_start_iscsid() {
    mkdir -p /run/lock/iscsi /etc/iscsi /var/lib/iscsi
    echo "InitiatorName=$RIG_INITIATOR_IQN" >/etc/iscsi/initiatorname.iscsi
    # iscsiadm would try "systemctl start iscsid.socket" otherwise
    if [ -f /etc/iscsi/iscsid.conf ]; then
        sed -i 's|^iscsid.startup *=.*|iscsid.startup = /usr/sbin/iscsid|' /etc/iscsi/iscsid.conf
    fi
    pidof iscsid >/dev/null && return 0
    iscsid || return 1
    local i; for i in $(seq 50); do pidof iscsid >/dev/null && return 0; sleep 0.1; done
    return 1
}

# rig_login TARGET_IQN [USER PASS] : discovery + CHAP login; sets RIG_DEV
rig_login() {
    local iqn=$1 user=${2-$RIG_CHAP_USER} pass=${3-$RIG_CHAP_PASS}
    rig_start_iscsid || { rig_log "iscsid failed"; return 1; }
    iscsiadm -m discovery -t sendtargets -p "$RIG_PORTAL" || { rig_log "discovery failed"; return 1; }
    if [ -n "$user" ]; then
        iscsiadm -m node -T "$iqn" -p "$RIG_PORTAL" -o update -n node.session.auth.authmethod -v CHAP &&
        iscsiadm -m node -T "$iqn" -p "$RIG_PORTAL" -o update -n node.session.auth.username -v "$user" &&
        iscsiadm -m node -T "$iqn" -p "$RIG_PORTAL" -o update -n node.session.auth.password -v "$pass" || return 1
    fi
    # open-iscsi keeps 32 commands per LUN in flight by default; the target
    # allows 128 (targetcli-config's cmdsn_depth): use them.
    iscsiadm -m node -T "$iqn" -p "$RIG_PORTAL" -o update -n node.session.queue_depth -v 128 || return 1
    iscsiadm -m node -T "$iqn" -p "$RIG_PORTAL" --login || { rig_log "login failed"; return 1; }
    RIG_DEV=$(rig_lun_dev "$iqn" "$RIG_LUN" "${RIG_LUN_TIMEOUT:-20}") || { rig_log "no disk for LUN $RIG_LUN of $iqn"; return 1; }
    rig_log "logged in to $iqn, LUN $RIG_LUN is $RIG_DEV"
}

# rig_session_dir TARGET_IQN -> /sys/class/iscsi_session/sessionN
rig_session_dir() {
    local s
    for s in /sys/class/iscsi_session/session*; do
        [ -e "$s/targetname" ] || continue
        [ "$(cat "$s/targetname")" = "$1" ] && { echo "$s"; return 0; }
    done
    return 1
}

# rig_lun_dev TARGET_IQN [LUN] [TIMEOUT_S] -> /dev/sdX, creating the node from
# /sys/block/sdX/dev when devtmpfs did not (no udev in the rig)
rig_lun_dev() {
    local iqn=$1 lun=${2:-0} tmo=${3:-20} s d b i maj min
    for ((i = 0; i < tmo * 5; i++)); do
        if s=$(rig_session_dir "$iqn"); then
            for d in "$s"/device/target*/*:*:*:"$lun"/block/*; do
                [ -e "$d/dev" ] || continue
                b=$(basename "$d")
                if [ ! -b "/dev/$b" ]; then
                    IFS=: read -r maj min <"$d/dev"
                    mknod "/dev/$b" b "$maj" "$min" || return 1
                fi
                echo "/dev/$b"; return 0
            done
        fi
        sleep 0.2
    done
    return 1
}

rig_logout() {
    local iqn=${1:-}
    if [ -n "$iqn" ]; then
        iscsiadm -m node -T "$iqn" -p "$RIG_PORTAL" --logout
    else
        iscsiadm -m node --logoutall=all
    fi
}

# bytes of a block device
rig_dev_bytes() { echo $(( $(cat "/sys/block/$(basename "$1")/size") * 512 )); }
