#!/bin/bash
# Rig bring-up with tcmu-runner's own user:qcow handler (no qlun needed):
# proves VM + LIO + tcmu-runner + D-Bus + iscsid + CHAP login work.
. "$QLUN_REPO/tests/e2e/lib.sh"
IQN=iqn.2024-01.io.qlun:bringup
img=$RIG_DATA/bringup.qcow2
qemu-img create -q -f qcow2 "$img" 256M
"$RIG_MAKE_CONFIG" --subtype qcow --format qcow2 --image "$img" --name qcow0 \
    --target-iqn "$IQN" -o "$RIG_SHARE/bringup.json"
rig_check "target up (modules, dbus, tcmu-runner)" rig_target_up "$RIG_SYSTEM_HANDLER_DIR" || { rig_diag; rig_report; exit; }
rig_check "restoreconfig" rig_restoreconfig "$RIG_SHARE/bringup.json"
targetcli ls
rig_check "targetcli ls shows user:qcow" bash -c 'targetcli ls /backstores | grep -q "user:qcow"'
rig_check "CHAP login" rig_login "$IQN" || rig_diag login
if [ -n "${RIG_DEV:-}" ]; then
    cat /sys/block/${RIG_DEV#/dev/}/device/{vendor,model}
    rig_check "write+read 1 MiB" bash -c "head -c 1048576 /dev/urandom >/tmp/p && dd if=/tmp/p of=$RIG_DEV bs=1M oflag=direct status=none && dd if=$RIG_DEV bs=1M count=1 iflag=direct status=none | cmp - /tmp/p"
    rig_check "logout" rig_logout "$IQN"
fi
rig_stop_tcmu
rig_report
