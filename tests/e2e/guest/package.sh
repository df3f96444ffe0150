#!/bin/bash
# Guest half of tests/e2e/test-package.sh (runs inside the rig VM, whose
# root is the host's userspace under a tmpfs overlay: dpkg -i changes only
# the overlay).  Input: $RIG_SHARE/deb/qlun_*.deb.  Output: report.txt.
. "$QLUN_REPO/tests/e2e/lib.sh"
RIG_REPORT_FILE=$RIG_SHARE/report.txt
OUT=$RIG_SHARE/out
mkdir -p "$OUT"
SYS_HDIR=/usr/lib/x86_64-linux-gnu/tcmu-runner

# ---- 1. the package ------------------------------------------------------------
deb=$(ls "$RIG_SHARE"/deb/qlun_*_amd64.deb 2>/dev/null | head -1)
if ! rig_check "1: dpkg -i $(basename "${deb:-qlun.deb}")" dpkg -i "$deb"; then
    rig_report; exit
fi
dpkg -L qlun >"$OUT/dpkg-L.txt"
rig_check "1: the handler is in tcmu-runner's directory" test -f "$SYS_HDIR/handler_qlun.so"
rig_check "1: man -w qlun finds qlun(8)" man -w qlun
rig_check "1: qlun-make-config --help runs" bash -c 'qlun-make-config --help >/dev/null'
rig_modprobe_target && rig_start_dbus
if ! rig_check "1: tcmu-runner starts from its own handler directory (no --handler-path)" \
        rig_start_tcmu system; then
    rig_diag "tcmu-runner"; rig_report; exit
fi
rig_check "1: tcmu-runner loaded the packaged handler" \
    grep -q "$SYS_HDIR/handler_qlun.so" "/proc/$RIG_TCMU_PID/maps"
targetcli ls /backstores >"$OUT/backstores.txt" 2>&1
rig_check "1: targetcli offers a user:qlun backstore" grep -q 'user:qlun' "$OUT/backstores.txt"

# ---- 2. the native demo with the package, next to another target --------------------
OTHER_IQN=iqn.2024-01.io.qlun:other
truncate -s 64M "$RIG_DATA/other.img"
targetcli /backstores/fileio create name=other file_or_dev="$RIG_DATA/other.img" >/dev/null &&
targetcli /iscsi create "$OTHER_IQN" >/dev/null &&
targetcli "/iscsi/$OTHER_IQN/tpg1/luns" create /backstores/fileio/other >/dev/null
rig_start_iscsid
iscsiadm -m node -o new -T "$OTHER_IQN" -p "$RIG_PORTAL" >/dev/null
snapshot() {
    targetcli ls / 2>&1
    iscsiadm -m node 2>&1
    md5sum /etc/rtslib-fb-target/saveconfig.json 2>&1
}
snapshot >"$OUT/before-demo.txt"
QLUN_DEMO_DIR=$RIG_DATA bash "$QLUN_REPO/tests/e2e/demo-native.sh" --format qcow2 --size 256M \
    >"$OUT/demo.txt" 2>&1
demo_rc=$?
cat "$OUT/demo.txt"
if [ $demo_rc = 0 ]; then rig_pass "2: native demo (qcow2) with the packaged handler"
else rig_fail "2: native demo (qcow2) with the packaged handler" "exit $demo_rc"; fi
rig_check "2: the demo used the packaged handler" grep -q "handler *: $SYS_HDIR/handler_qlun.so" "$OUT/demo.txt"
rig_check "2: the demo wrote and read back through the initiator" grep -q 'write/read   : OK' "$OUT/demo.txt"
snapshot >"$OUT/after-demo.txt"
rig_check "2: the demo left other targets, node records and the saved config as they were" \
    diff "$OUT/before-demo.txt" "$OUT/after-demo.txt"
rig_check "2: tcmu-runner still runs" rig_tcmu_alive
iscsiadm -m node -o delete -T "$OTHER_IQN" -p "$RIG_PORTAL" >/dev/null
rig_clearconfig

# ---- 3. reboot: saveconfig, stop everything, start as at boot --------------------
IQN=iqn.2024-01.io.qlun:reboot
qemu-img create -q -f qcow2 "$RIG_DATA/r.qcow2" 128M
truncate -s 128M "$RIG_DATA/r.raw"
# LUN 0's serial is qlun's own (a digest of the image path), LUN 1's given.
qlun-make-config --image "$RIG_DATA/r.raw" --format raw --name rraw \
    --lun "image=$RIG_DATA/r.qcow2,format=qcow2,name=rqcow,wwn=reboot-qcow-0002" \
    --target-iqn "$IQN" --initiator-iqn "$RIG_INITIATOR_IQN" -o "$OUT/reboot.json"
rig_check "3: two LUNs (raw, qcow2) created" rig_restoreconfig "$OUT/reboot.json"
declare -A SERIAL SIZE
if rig_check "3: login" rig_login "$IQN"; then
    for lun in 0 1; do
        dev=$(rig_lun_dev "$IQN" $lun) || { rig_fail "3: LUN $lun appears"; continue; }
        head -c 3145728 /dev/urandom >"$RIG_DATA/pattern$lun"
        dd if="$RIG_DATA/pattern$lun" of="$dev" bs=1M seek=5 oflag=direct conv=fsync status=none
        SERIAL[$lun]=$(sg_vpd -p sn "$dev" | sed -n 's/^ *Unit serial number: *//p')
        SIZE[$lun]=$(rig_dev_bytes "$dev")
        rig_log "LUN $lun: $dev serial ${SERIAL[$lun]} size ${SIZE[$lun]}"
    done
    rig_logout "$IQN" >/dev/null
fi
rig_check "3: targetcli saveconfig" targetcli saveconfig
rig_check "3: shut down: targetctl clear" targetctl clear
rig_stop_tcmu
rig_check "3: the LUNs are gone" bash -c "! targetcli ls /backstores/user:qlun 2>/dev/null | grep -q rraw"
# As at boot: tcmu-runner (its unit comes first), then the target restored.
rig_check "3: boot: tcmu-runner" rig_start_tcmu system
rig_check "3: boot: targetctl restore" targetctl restore
if rig_check "3: login after the restart" rig_login "$IQN"; then
    for lun in 0 1; do
        dev=$(rig_lun_dev "$IQN" $lun) || { rig_fail "3: LUN $lun back"; continue; }
        s=$(sg_vpd -p sn "$dev" | sed -n 's/^ *Unit serial number: *//p')
        [ -n "$s" ] && [ "$s" = "${SERIAL[$lun]}" ] && rig_pass "3: LUN $lun keeps its serial ($s)" ||
            rig_fail "3: LUN $lun keeps its serial" "'${SERIAL[$lun]}' -> '$s'"
        [ "$(rig_dev_bytes "$dev")" = "${SIZE[$lun]}" ] && rig_pass "3: LUN $lun keeps its size" ||
            rig_fail "3: LUN $lun keeps its size"
        rig_check "3: LUN $lun keeps its data" bash -c \
            "dd if='$dev' bs=1M skip=5 count=3 iflag=direct status=none | cmp -s - '$RIG_DATA/pattern$lun'"
    done
    rig_logout "$IQN" >/dev/null
fi
targetctl clear
rig_stop_tcmu
rig_check "3: qemu-img check of the qcow2 LUN's image" qemu-img check -q "$RIG_DATA/r.qcow2"
rig_report
