#!/bin/bash
# Guest half of tests/e2e/test-config.sh: exercises targetcli-config/make-config.sh
# beyond the single-LUN JSON path: (1) the targetcli command-script output
# (needs D-Bus + tcmu-runner), (2) two LUNs (raw + qcow2) in one JSON config,
# (3) --libiscsi-acls: libiscsi's iscsi-test-cu initiator logs in with CHAP,
# (4) --no-chap.
. "$QLUN_REPO/tests/e2e/lib.sh"
RIG_REPORT_FILE=$RIG_SHARE/report.txt
OUT=$RIG_SHARE/out; mkdir -p "$OUT"
HDIR=$(rig_handler_dir)
[ -n "$HDIR" ] || { rig_fail "handler_qlun.so found"; rig_report; exit; }
rig_check "target up" rig_target_up "$HDIR" || { rig_diag; rig_report; exit; }

# ---- (1) targetcli command script ---------------------------------------------
IQN1=iqn.2024-01.io.qlun:script
truncate -s 32M "$RIG_DATA/script.img"
"$RIG_MAKE_CONFIG" --output targetcli --image "$RIG_DATA/script.img" --name scr0 \
    --target-iqn "$IQN1" -o "$OUT/script.targetcli"
cat "$OUT/script.targetcli"
targetcli <"$OUT/script.targetcli" >"$OUT/script.out" 2>&1; rc=$?
cat "$OUT/script.out"
[ $rc = 0 ] && ! grep -qiE 'error|not found|invalid' "$OUT/script.out" \
    && rig_pass "1: targetcli < command script (exit 0, no errors)" \
    || rig_fail "1: targetcli < command script" "rc=$rc"
targetcli ls | tee "$OUT/script-ls.txt"
rig_check "1: scr0 activated, portal 127.0.0.1:3260, ACL with CHAP" bash -c "
    grep -E 'o- scr0 ' '$OUT/script-ls.txt' | grep -q activated &&
    grep -q '127.0.0.1:3260' '$OUT/script-ls.txt' && ! grep -q '0.0.0.0:3260' '$OUT/script-ls.txt' &&
    grep -E 'o- $RIG_INITIATOR_IQN ' '$OUT/script-ls.txt' | grep -q '1-way auth'"
# The tuned queue depth reaches the kernel: the TPG default and the ACL.
cmdsn_is_128() {
    local tpg=/sys/kernel/config/target/iscsi/$1/tpgt_1
    [ "$(cat "$tpg/attrib/default_cmdsn_depth")" = 128 ] &&
        [ "$(cat "$tpg/acls/$RIG_INITIATOR_IQN/cmdsn_depth")" = 128 ]
}
rig_check "1: cmdsn_depth 128 on the TPG and the ACL" cmdsn_is_128 "$IQN1"
if rig_check "1: CHAP login" rig_login "$IQN1"; then
    rig_check "1: LUN is 32 MiB" test "$(rig_dev_bytes "$RIG_DEV")" = $((32 << 20))
    rig_logout "$IQN1"
fi
rig_clearconfig

# ---- (2) two LUNs plus the libiscsi ACLs (LUN 1 is qcow2 unless QLUN_E2E_QCOW2=0) ---------------------------
IQN2=iqn.2024-01.io.qlun:multi
truncate -s 16M "$RIG_DATA/m0.img"
if [ "${QLUN_E2E_QCOW2:-1}" = 1 ]; then
    M1=$RIG_DATA/m1.qcow2 M1FMT=qcow2; qemu-img create -q -f qcow2 "$M1" 48M
else
    M1=$RIG_DATA/m1.img M1FMT=raw; truncate -s 48M "$M1"
fi
"$RIG_MAKE_CONFIG" --image "$RIG_DATA/m0.img" --name m0 \
    --lun "image=$M1,format=$M1FMT,name=m1" \
    --target-iqn "$IQN2" --libiscsi-acls -o "$OUT/multi.json"
rig_check "2: restoreconfig two LUNs + libiscsi ACLs" rig_restoreconfig "$OUT/multi.json" || rig_diag multi
targetcli ls /iscsi | tee "$OUT/multi-ls.txt"
rig_check "2: three ACLs incl. both libiscsi initiator names" bash -c "
    grep -q 'sahlberg:libiscsi:iscsi-test ' '$OUT/multi-ls.txt' && grep -q 'sahlberg:libiscsi:iscsi-test-2 ' '$OUT/multi-ls.txt'"
rig_check "2: cmdsn_depth 128 on the TPG and the ACL" cmdsn_is_128 "$IQN2"
if rig_check "2: login" rig_login "$IQN2"; then
    d0=$RIG_DEV; d1=$(rig_lun_dev "$IQN2" 1)
    rig_check "2: LUN 0 is 16 MiB" test "$(rig_dev_bytes "$d0")" = $((16 << 20))
    if [ -n "$d1" ]; then
        rig_check "2: LUN 1 ($M1FMT) is 48 MiB" test "$(rig_dev_bytes "$d1")" = $((48 << 20))
        m=$(sed 's/ *$//' /sys/block/${d1#/dev/}/device/model); rig_log "LUN 1 model '$m'"
    else
        rig_fail "2: LUN 1 appears"
    fi
    rig_logout "$IQN2"
fi
URL="iscsi://$RIG_CHAP_USER%$RIG_CHAP_PASS@127.0.0.1/$IQN2/0"
iscsi-test-cu --test=SCSI.Inquiry.Standard "$URL" >"$OUT/iscsi-test-cu.txt" 2>&1; rc=$?
tail -n 15 "$OUT/iscsi-test-cu.txt"
# the point here is that libiscsi's initiator names + CHAP get in; whether the
# handler passes the test is the conformance suite's business (reported only)
if grep -qE '^ +tests +1 +1 ' "$OUT/iscsi-test-cu.txt"; then
    rig_pass "2: iscsi-test-cu logs in (libiscsi initiator names, CHAP) and runs SCSI.Inquiry.Standard"
    rig_log "INFO: SCSI.Inquiry.Standard $( [ $rc = 0 ] && echo passed || echo FAILED: $(grep -m1 -E 'FAILED|WARNING' "$OUT/iscsi-test-cu.txt"))"
else
    rig_fail "2: iscsi-test-cu logs in and runs SCSI.Inquiry.Standard" "rc=$rc, see out/iscsi-test-cu.txt"
fi
iscsi-inq -i iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test "$URL" >"$OUT/iscsi-inq.txt" 2>&1 \
    && rig_pass "2: iscsi-inq as the libiscsi test initiator" || rig_fail "2: iscsi-inq" "$(head -2 "$OUT/iscsi-inq.txt")"
if iscsi-inq -i iqn.2000-01.org.example:not-in-acl "$URL" >"$OUT/iscsi-inq-bogus.txt" 2>&1; then
    rig_fail "2: an initiator name without an ACL is refused"
else
    rig_pass "2: an initiator name without an ACL is refused"
fi
rig_clearconfig

# ---- (3) --no-chap ------------------------------------------------------------------
IQN3=iqn.2024-01.io.qlun:nochap
"$RIG_MAKE_CONFIG" --image "$RIG_DATA/m0.img" --name nc0 --target-iqn "$IQN3" --no-chap -o "$OUT/nochap.json"
rig_check "3: restoreconfig --no-chap" rig_restoreconfig "$OUT/nochap.json"
iscsiadm -m discovery -t sendtargets -p "$RIG_PORTAL" >/dev/null
iscsiadm -m node -T "$IQN3" -p "$RIG_PORTAL" -o update -n node.session.auth.authmethod -v None
if rig_check "3: login without CHAP" rig_login "$IQN3" "" ""; then rig_logout "$IQN3"; fi
rig_clearconfig
rig_check "tcmu-runner alive at the end" rig_tcmu_alive
rig_stop_tcmu
[ "$RIG_NFAIL" -gt 0 ] && rig_diag "end"
rig_report
