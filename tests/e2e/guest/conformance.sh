#!/bin/bash
# Guest half of tests/e2e/test-conformance.sh (runs inside the rig VM).
#
# One boot, one target with explicit node ACLs (the rig's initiator and both
# of libiscsi's iscsi-test-cu initiator names), CHAP on every ACL:
#   LUN 0  user:qlun  qcow2 image, 1 GiB (qemu-img create -f qcow2)
#   LUN 1  user:qlun  sparse 1 GiB raw file (;format=raw)
#   LUN 2  user:qlun  qcow2, 64 MiB, readonly=on   (SCSI.ReadOnly.* only)
#   LUN 3  user:qlun  raw, 64 MiB, readonly=on     (SCSI.ReadOnly.* only)
#   LUN 4  LIO fileio, 1 GiB, emulate_tpu=1 emulate_tpws=1: a reference
#          column, with QLUN_CONFORMANCE_FILEIO=1
# For each of qcow2, raw (and fileio):
#   cu-<label>.txt        iscsi-test-cu --dataloss --test=SCSI.* URL
#   cu-<label>-mpath.txt  --test=SCSI.MultipathIO.* URL URL: the suite's
#                         multipath tests need a second path; the second
#                         session logs in as ...:iscsi-test-2
#   cu-<label>-ro.txt     --test=SCSI.ReadOnly.* against the read-only twin
# plus cu-*.rc and cu-*.secs (exit status, seconds).
# out/runs.txt lists "label kind lun" for the host, which parses and judges.
. "$QLUN_REPO/tests/e2e/lib.sh"
RIG_REPORT_FILE=$RIG_SHARE/report.txt
OUT=$RIG_SHARE/out
mkdir -p "$OUT"
: >"$OUT/runs.txt"
RIG_TCMU_DEBUG=0                # debug logging only slows the runner down
IQN=iqn.2024-01.io.qlun:conformance
SIZE=1G
CU_TIMEOUT=${QLUN_CONFORMANCE_CU_TIMEOUT:-1200}
# debugging knobs: a subset of the suite, libiscsi's SCSI command log (-V)
CU_TESTS=${QLUN_CONFORMANCE_TESTS:-SCSI.*}
CU_ARGS=()
[ "${QLUN_CONFORMANCE_VERBOSE:-0}" = 1 ] && CU_ARGS+=(-V)

HDIR=$(rig_handler_dir)
if [ -z "$HDIR" ] || [ ! -f "$HDIR/handler_qlun.so" ]; then
    rig_fail "handler_qlun.so found" "QLUN_HANDLER_DIR='${QLUN_HANDLER_DIR:-}'"
    rig_report; exit
fi
if ! rig_check "target up (LIO modules, D-Bus, tcmu-runner with qlun)" rig_target_up "$HDIR"; then
    rig_diag "target up"; rig_report; exit
fi

D=$RIG_DATA
rig_check "images: qcow2 + sparse raw ($SIZE), read-only twins (64M)" bash -c "
    qemu-img create -q -f qcow2 $D/conf.qcow2 $SIZE && truncate -s $SIZE $D/conf.raw &&
    qemu-img create -q -f qcow2 $D/conf-ro.qcow2 64M && truncate -s 64M $D/conf-ro.raw"
# --hw-max-sectors 65536 (32 MiB): iscsi-test-cu ignores the MAXIMUM TRANSFER
# LENGTH of VPD B0 (it honours only an SG_IO device's limit):
# WriteSame16.Unmap writes and reads 65536 blocks in one command,
# ExtendedCopy.Simple 2048.  qlun refuses a longer transfer than it
# advertises (INVALID FIELD IN CDB, as SBC-4 says), so the LUNs advertise
# enough; the TCMU data area (128 MiB) holds such a command.
"$RIG_MAKE_CONFIG" --image "$D/conf.qcow2" --format qcow2 --size "$SIZE" --name confq \
    --lun "image=$D/conf.raw,format=raw,size=$SIZE,name=confr" \
    --lun "image=$D/conf-ro.qcow2,format=qcow2,size=64M,name=confqro,opts=readonly=on" \
    --lun "image=$D/conf-ro.raw,format=raw,size=64M,name=confrro,opts=readonly=on" \
    --hw-max-sectors 65536 \
    --target-iqn "$IQN" --initiator-iqn "$RIG_INITIATOR_IQN" --libiscsi-acls \
    --chap-user "$RIG_CHAP_USER" --chap-password "$RIG_CHAP_PASS" -o "$OUT/conformance.json"
if ! rig_check "restoreconfig: 4 qlun LUNs, explicit ACLs incl. libiscsi's, CHAP" \
        rig_restoreconfig "$OUT/conformance.json"; then
    rig_diag restoreconfig; rig_report; exit
fi
# LIO keeps persistent reservations under <dbroot>/pr, and writes a file
# there on every PR OUT (with APTPL=0 too: "No Registrations or
# Reservations").  When it cannot, PERSISTENT RESERVE OUT fails NOT READY,
# LOGICAL UNIT COMMUNICATION FAILURE (02/08/00): every ProutX test fails, on
# any backstore.  targetcli sets dbroot to /etc/rtslib-fb-target, which the
# rig's root has but without pr/.
DBROOT=$(cat /sys/kernel/config/target/dbroot 2>/dev/null || echo /var/target)
rig_check "LIO dbroot $DBROOT has pr/ and alua/" mkdir -p "$DBROOT/pr" "$DBROOT/alua"

printf '%s\n' "qcow2 main 0" "qcow2 mpath 0" "qcow2 ro 2" \
              "raw main 1" "raw mpath 1" "raw ro 3" >>"$OUT/runs.txt"
if [ "${QLUN_CONFORMANCE_FILEIO:-0}" = 1 ]; then
    truncate -s "$SIZE" "$D/conf-fileio.img"
    if rig_check "LIO fileio LUN 4 (reference), emulate_tpu/tpws on" bash -c "
        targetcli /backstores/fileio create name=conff file_or_dev=$D/conf-fileio.img size=$SIZE &&
        targetcli /backstores/fileio/conff set attribute emulate_tpu=1 emulate_tpws=1 &&
        targetcli /iscsi/$IQN/tpg1/luns create /backstores/fileio/conff lun=4 add_mapped_luns=true"; then
        printf '%s\n' "fileio main 4" "fileio mpath 4" >>"$OUT/runs.txt"
    fi
fi
targetcli ls / >"$OUT/targetcli-ls.txt" 2>&1
cat "$OUT/targetcli-ls.txt"

URL_BASE="iscsi://$RIG_CHAP_USER%$RIG_CHAP_PASS@127.0.0.1/$IQN"
while read -r label kind lun; do
    url=$URL_BASE/$lun
    case $kind in
        main)  name=$label; tests=$CU_TESTS; urls=("$url") ;;
        mpath) name=$label-mpath; tests='SCSI.MultipathIO.*'; urls=("$url" "$url") ;;
        ro)    name=$label-ro; tests='SCSI.ReadOnly.*'; urls=("$url") ;;
    esac
    # a debugging subset skips the extra runs it does not name
    if [ "$kind" != main ] && [ "$CU_TESTS" != 'SCSI.*' ] &&
       [[ ",$CU_TESTS," != *",$tests,"* ]]; then
        continue
    fi
    rig_log "LUN $lun ($name): iscsi-test-cu --dataloss --test=$tests ${#urls[@]} URL(s)"
    t0=$(cut -d' ' -f1 /proc/uptime)
    # (stdin: not the list this loop reads)
    timeout "$CU_TIMEOUT" iscsi-test-cu --dataloss "${CU_ARGS[@]}" --test="$tests" \
        "${urls[@]}" </dev/null >"$OUT/cu-$name.txt" 2>&1
    rc=$?
    t1=$(cut -d' ' -f1 /proc/uptime)
    echo "$rc" >"$OUT/cu-$name.rc"
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", b - a }')
    echo "$secs" >"$OUT/cu-$name.secs"
    rig_log "LUN $lun ($name): exit $rc after $secs s"
    grep -A4 '^Run Summary' "$OUT/cu-$name.txt"
    # the run completes: a crash or hang of the target would cut it short
    if grep -q '^Tests completed with return value' "$OUT/cu-$name.txt"; then
        rig_pass "LUN $lun ($name): iscsi-test-cu ran to completion ($secs s)"
    else
        rig_fail "LUN $lun ($name): iscsi-test-cu ran to completion" "exit $rc after $secs s"
    fi
done <"$OUT/runs.txt"

rig_check "tcmu-runner alive after the suites" rig_tcmu_alive
dmesg >"$OUT/dmesg.txt"
rig_clearconfig
rig_stop_tcmu
[ "$RIG_NFAIL" -gt 0 ] && rig_diag "end of run"
rig_report
