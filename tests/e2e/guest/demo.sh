#!/bin/bash
# Guest half of tests/e2e/demo.sh: export one qlun LUN over iSCSI (CHAP) and
# attach it with open-iscsi, then print what the initiator sees.
#   demo.sh FORMAT SIZE
. "$QLUN_REPO/tests/e2e/lib.sh"
FMT=${1:-raw}; SIZE=${2:-1G}
RIG_TCMU_DEBUG=0
IQN=iqn.2024-01.io.qlun:demo
IMG=$RIG_DATA/demo.$FMT
REPORT=$RIG_SHARE/demo-report.txt
say() { echo "$*" | tee -a "$REPORT"; }
: >"$REPORT"
ok=1
step() { local what=$1; shift; if "$@" >>"$RIG_LOGDIR/demo-steps.log" 2>&1; then return 0; fi
         say "demo: FAILED: $what"; rig_diag "$what" | tee -a "$REPORT"; ok=0; return 1; }

HDIR=$(rig_handler_dir)
[ -n "$HDIR" ] && [ -f "$HDIR/handler_qlun.so" ] || { say "demo: handler_qlun.so not found (QLUN_HANDLER_DIR/QLUN_BUILD_DIR)"; exit 1; }
case "$FMT" in
    raw) truncate -s "$SIZE" "$IMG" ;;
    qcow2) qemu-img create -q -f qcow2 "$IMG" "$SIZE" ;;
    *) say "demo: unknown format $FMT"; exit 2 ;;
esac
step "make-config" "$RIG_MAKE_CONFIG" --image "$IMG" --format "$FMT" --target-iqn "$IQN" -o "$RIG_SHARE/demo.json" || exit 1
step "start LIO + tcmu-runner" rig_target_up "$HDIR" || exit 1
step "targetcli restoreconfig" rig_restoreconfig "$RIG_SHARE/demo.json" || exit 1
step "iSCSI login" rig_login "$IQN" || exit 1
DEV=$RIG_DEV; sd=${DEV#/dev/}
sdisk=$(ls -d /sys/block/$sd/device/scsi_disk/* 2>/dev/null | head -1)
serial=$(sg_vpd -p sn "$DEV" 2>/dev/null | sed -n 's/^ *Unit serial number: *//p')
blk=$(targetcli ls /backstores/user:qlun 2>/dev/null | grep -E 'o- qlun0 ' | sed 's/^.*\[//; s/\].*$//')
say ""
say "================ qlun demo ================"
say "image          : $IMG ($FMT, $(stat -c %s "$IMG") bytes apparent, $(du -k "$IMG" | cut -f1) KiB allocated)"
say "target         : $IQN  portal $RIG_PORTAL  (CHAP user $RIG_CHAP_USER)"
say "backstore      : user:qlun/qlun0  [$blk]"
say "cfgstring      : $(cat /sys/kernel/config/target/core/user_*/qlun0/info 2>/dev/null | grep -o 'Config: [^ ]*' | cut -d' ' -f2)"
say "initiator view : $DEV  (LUN $RIG_LUN, host $(basename "$(readlink -f /sys/block/$sd/device)"))"
say "  vendor/model : $(sed 's/ *$//' /sys/block/$sd/device/vendor) / $(sed 's/ *$//' /sys/block/$sd/device/model)  rev $(sed 's/ *$//' /sys/block/$sd/device/rev)"
say "  serial       : ${serial:-<none>}"
say "  size         : $(rig_dev_bytes "$DEV") bytes  (logical block $(cat /sys/block/$sd/queue/logical_block_size), physical $(cat /sys/block/$sd/queue/physical_block_size))"
say "  provisioning : $(cat $sdisk/provisioning_mode 2>/dev/null)  zeroing: $(cat $sdisk/zeroing_mode 2>/dev/null)  discard_max_bytes: $(cat /sys/block/$sd/queue/discard_max_bytes)"
say "  write cache  : $(cat $sdisk/cache_type 2>/dev/null)   max_sectors_kb: $(cat /sys/block/$sd/queue/max_sectors_kb)"
head -c 4194304 /dev/urandom >/tmp/demo.bin
if dd if=/tmp/demo.bin of="$DEV" bs=1M seek=1 oflag=direct conv=fsync status=none &&
   dd if="$DEV" bs=1M skip=1 count=4 iflag=direct status=none | cmp -s - /tmp/demo.bin; then
    say "  write/read   : OK (4 MiB at offset 1 MiB, O_DIRECT, read back identical)"
else
    say "  write/read   : FAILED"; ok=0
fi
step "logout" rig_logout "$IQN"
rig_clearconfig; rig_stop_tcmu
if [ "$FMT" = raw ] && dd if="$IMG" bs=1M skip=1 count=4 status=none | cmp -s - /tmp/demo.bin; then
    say "  image file   : holds the data written through the initiator"
elif [ "$FMT" = qcow2 ] && qemu-img convert -f qcow2 -O raw "$IMG" /tmp/demo.raw &&
     dd if=/tmp/demo.raw bs=1M skip=1 count=4 status=none | cmp -s - /tmp/demo.bin; then
    say "  image file   : holds the data written through the initiator (qemu-img check: $(qemu-img check -q "$IMG" >/dev/null 2>&1 && echo clean || echo ERRORS))"
else
    say "  image file   : does NOT hold the written data"; ok=0
fi
say "image after    : $(stat -c %s "$IMG") bytes apparent, $(du -k "$IMG" | cut -f1) KiB allocated"
say "==========================================="
[ $ok = 1 ]
