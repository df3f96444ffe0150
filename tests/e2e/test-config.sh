#!/bin/bash
# qlun e2e: targetcli-config/make-config.sh outputs work against real LIO.
#   tests/e2e/test-config.sh
# (1) offline checks of the generator (no VM): JSON schema, input validation;
# (2) in the rig: targetcli command-script mode, two LUNs (raw + qcow2),
#     --libiscsi-acls with iscsi-test-cu/iscsi-inq over CHAP, --no-chap.
# Exit 0 pass, 1 fail, 77 skip (handler_qlun.so not built / no rig).
set -u
# below CTest's 900 s so the rig reports a timeout itself
export QLUN_RIG_TIMEOUT=${QLUN_RIG_TIMEOUT:-600}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
MC=$REPO/targetcli-config/make-config.sh
fail=0
ok() { echo "PASS  offline: $1"; }
bad() { echo "FAIL  offline: $1"; fail=1; }

# ---- offline --------------------------------------------------------------------
j=$("$MC" --image /data/x.img --size 1G --chap-user u --chap-password p1234567890 \
      --initiator-iqn iqn.2000-01.a:b --initiator-iqn iqn.2000-01.a:c --libiscsi-acls \
      --lun image=/data/y.qcow2,size=2G,format=qcow2,name=y --hw-max-sectors 2048 --port 3261)
if echo "$j" | /usr/bin/python3 -c '
import json, sys
c = json.load(sys.stdin)
so = c["storage_objects"]
assert [s["name"] for s in so] == ["qlun0", "y"], so
assert so[0] == {"plugin": "user", "name": "qlun0", "config": "qlun//data/x.img;format=raw",
                 "size": 1 << 30, "hw_max_sectors": 2048,
                 "control": "max_data_area_mb=128,hw_block_size=512"}, so[0]
assert so[1]["config"] == "qlun//data/y.qcow2;format=qcow2" and so[1]["size"] == 2 << 30
t = c["targets"][0]; tpg = t["tpgs"][0]
assert t["fabric"] == "iscsi" and t["wwn"] == "iqn.2024-01.io.qlun:target"
assert tpg["attributes"]["generate_node_acls"] == 0 and tpg["attributes"]["authentication"] == 1
assert tpg["attributes"]["default_cmdsn_depth"] == 128
assert tpg["portals"] == [{"ip_address": "127.0.0.1", "port": 3261, "iser": False, "offload": False}]
assert [l["storage_object"] for l in tpg["luns"]] == ["/backstores/user/qlun0", "/backstores/user/y"]
names = [a["node_wwn"] for a in tpg["node_acls"]]
assert names == ["iqn.2000-01.a:b", "iqn.2000-01.a:c",
                 "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test",
                 "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test-2"], names
for a in tpg["node_acls"]:
    assert a["chap_userid"] == "u" and a["chap_password"] == "p1234567890"
    assert [(m["index"], m["tpg_lun"]) for m in a["mapped_luns"]] == [(0, 0), (1, 1)]
'; then ok "JSON schema (storage objects, TPG, portal, ACLs, mapped LUNs)"; else bad "JSON schema"; fi
for args in "--image /data/a,b --size 1M" "--image /data/a:b --size 1M" "--image /data/a\ b --size 1M" \
            "--image rel.img --size 1M" "--image /data/x --size 1000" "--image /nonexistent.img" \
            "--image /data/x --size 1M --opt a,b" "--image /data/x --size 1M --target-iqn bogus" \
            "--image /$(head -c 300 /dev/zero | tr '\0' a) --size 1M"; do
    if eval "\"\$MC\" $args" >/dev/null 2>&1; then bad "rejects: $args"; else ok "rejects: ${args:0:60}"; fi
done
tmpimg=$(mktemp /var/tmp/qlun-mc.XXXXXX); truncate -s 5M "$tmpimg"
[ "$("$MC" --image "$tmpimg" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["storage_objects"][0]["size"])')" = $((5 << 20)) ] \
    && ok "size defaults to the raw image size" || bad "size defaults to the raw image size"
rm -f "$tmpimg"

# ---- in the rig --------------------------------------------------------------------
BUILD=${QLUN_BUILD_DIR:-$REPO/build}
if [ -z "${QLUN_HANDLER_DIR:-}" ]; then
    h=$(find "$BUILD" -name handler_qlun.so -type f 2>/dev/null | head -1)
    [ -n "$h" ] && QLUN_HANDLER_DIR=$(dirname "$(realpath "$h")")
fi
if [ -z "${QLUN_HANDLER_DIR:-}" ] || [ ! -f "$QLUN_HANDLER_DIR/handler_qlun.so" ]; then
    echo "SKIP: handler_qlun.so not built"; [ $fail = 0 ] && exit 77; exit 1
fi
export QLUN_HANDLER_DIR QLUN_BUILD_DIR=$BUILD
WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/qlun-e2e-config.XXXXXX")
QLUN_RIG_QUIET=${QLUN_RIG_QUIET:-1} QLUN_RIG_WORKDIR=$WORK "$HERE/rig.sh" --disk 4G "$HERE/guest/config-selftest.sh"
rc=$?
echo "================ test-config report ================"
cat "$WORK/report.txt" 2>/dev/null || echo "FAIL  guest wrote no report"
if [ $rc = 0 ] && [ $fail = 0 ]; then
    [ "${QLUN_E2E_KEEP:-0}" = 1 ] && echo "work dir kept: $WORK" || rm -rf "$WORK"
    echo PASS; exit 0
fi
echo "FAIL (work dir kept: $WORK)"; exit 1
