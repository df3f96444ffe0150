#!/bin/bash
# shellcheck disable=SC2034
# Guest half of tests/e2e/test-live.sh (runs inside the rig VM): changes to
# a served qcow2 LUN through the management socket (qlunctl), while the
# initiator keeps writing.
#
#  1. quiesced: fio writes, the LUN's content is recorded, `qlunctl
#     snapshot` switches to overlay s1: the old top must hold exactly that
#     content (qemu-img compare while the LUN serves on);
#  2. under load (fio randwrite with verify_backlog running throughout):
#     two more external snapshots, an internal snapshot created, listed and
#     deleted, an online resize, and bad requests (unknown LUN, overlay
#     outside the root, an existing file, a shrink): each gets a clear
#     error; fio's verify must pass;
#  3. the initiator sees the new size after the UNIT ATTENTION and a
#     rescan; the new blocks can be written and read back;
#  4. quiesced internal snapshot: its content (qemu-img convert -l) equals
#     the LUN's when it was taken, after more writes;
#  5. the new cfgstring reached LIO (dev_config): after saveconfig and a
#     tcmu-runner restart the LUN comes back on the newest overlay with the
#     same content and serial;
#  6. after logout: qemu-img check of every image, the backing chain as
#     expected (s3 -> s2 -> s1 -> top0), the chain equals the LUN's content.
# Outputs: report.txt, figures.txt, out/, logs/.
. "$QLUN_REPO/tests/e2e/lib.sh"
. "$QLUN_REPO/tests/e2e/lib-thin.sh"
RIG_REPORT_FILE=$RIG_SHARE/report.txt
OUT=$RIG_SHARE/out
mkdir -p "$OUT"
: >"$THIN_FIGURES"
IQN=iqn.2024-01.io.qlun:live
DIR=$RIG_DATA/live
NAME=live0
SERIAL=qlunlive0
M=$((1 << 20))
SIZE=$((128 * M))
NEWSIZE=$((192 * M))

HDIR=$(rig_handler_dir)
QLUNCTL=${QLUN_BUILD_DIR:-$HDIR}/qlunctl
if [ -z "$HDIR" ] || [ ! -f "$HDIR/handler_qlun.so" ] || [ ! -x "$QLUNCTL" ]; then
    rig_fail "handler_qlun.so and qlunctl found" "QLUN_HANDLER_DIR='${QLUN_HANDLER_DIR:-}' qlunctl '$QLUNCTL'"
    rig_report; exit
fi
if ! rig_check "target up (LIO, D-Bus, tcmu-runner with qlun)" rig_target_up "$HDIR"; then
    rig_diag "target up"; rig_report; exit
fi

rm -rf "$DIR"; mkdir -p "$DIR"
qemu-img create -q -f qcow2 "$DIR/top0.qcow2" "$SIZE"
"$RIG_MAKE_CONFIG" --image "$DIR/top0.qcow2" --format qcow2 --name "$NAME" --wwn "$SERIAL" \
    --target-iqn "$IQN" --initiator-iqn "$RIG_INITIATOR_IQN" \
    --chap-user "$RIG_CHAP_USER" --chap-password "$RIG_CHAP_PASS" -o "$OUT/live.json"
rig_check "restoreconfig: user:qlun on top0.qcow2" \
    rig_restoreconfig "$OUT/live.json" >"$OUT/restore.txt" 2>&1 || { cat "$OUT/restore.txt"; rig_diag restore; }
DEV=
rig_check "iSCSI login" rig_login "$IQN" && DEV=$RIG_DEV
[ -n "$DEV" ] || { rig_diag login; rig_report; exit; }

ctl() { "$QLUNCTL" "$@"; }
# ctl_fails LABEL EXPECTED_TEXT ARGS...: the request is refused with a
# message containing EXPECTED_TEXT (exit status 1).
ctl_fails() {
    local label=$1 want=$2 out rc
    shift 2
    out=$(ctl "$@" 2>&1); rc=$?
    echo "qlunctl $*: exit $rc: $out" >>"$OUT/bad-requests.txt"
    if [ "$rc" = 1 ] && grep -qi -- "$want" <<<"$out"; then
        rig_pass "bad request refused: $label ($out)"
    else
        rig_fail "bad request refused: $label" "exit $rc: $out"
    fi
}
lun_sha() { dd if="$DEV" bs=1M iflag=direct status=none | sha256sum | cut -d' ' -f1; }
# img_sha IMG [qemu-img convert options]: sha256 of an image's guest content
img_sha() {
    local img=$1; shift
    rm -f "$RIG_DATA/conv.raw"
    qemu-img convert "$@" -O raw "$img" "$RIG_DATA/conv.raw" >>"$OUT/convert.txt" 2>&1 || { echo "convert-failed"; return; }
    sha256sum "$RIG_DATA/conv.raw" | cut -d' ' -f1
    rm -f "$RIG_DATA/conv.raw"
}
fio_write() {   # NAME SEED [extra fio args]: 4k random writes over the LUN, verify headers
    local n=$1 seed=$2; shift 2
    fio --name="$n" --filename="$DEV" --direct=1 --ioengine=libaio --iodepth=16 \
        --rw=randwrite --bs=4k --size="$SIZE" --randseed="$seed" \
        --verify=crc32c --verify_fatal=1 "$@" --output="$OUT/fio-$n.txt"
}

# ---- 1. a quiesced external snapshot holds exactly the LUN's content ----------
rig_check "fio: first writes (16 MiB of 4k random writes, verified)" \
    fio_write w1 1 --io_size=16M
H1=$(lun_sha)
t0=$(thin_now)
rig_check "qlunctl snapshot $NAME --overlay $DIR/s1.qcow2" \
    bash -c "'$QLUNCTL' snapshot $NAME --overlay '$DIR/s1.qcow2' >'$OUT/snap1.txt' 2>&1"
thin_figure "snapshot s1 (idle LUN): qlunctl took $(thin_since "$t0") s; $(cat "$OUT/snap1.txt")"
H0=$(img_sha "$DIR/top0.qcow2")
[ "$H0" = "$H1" ] && rig_pass "old top top0.qcow2 == the LUN's content when s1 was taken (read by qemu-img while the LUN serves)" \
    || rig_fail "old top == LUN content at snapshot" "$H0 != $H1"
rig_check "qemu-img check top0.qcow2 (read-only backing now) while the LUN serves" qemu-img check "$DIR/top0.qcow2"
[ "$(lun_sha)" = "$H1" ] && rig_pass "the LUN reads the same after the switch" || rig_fail "LUN content unchanged by the switch"

# ---- 2. under load ------------------------------------------------------------
fio_write w2 2 --io_size=48M --verify_backlog=512 --do_verify=1 &
FIO=$!
sleep 5
for i in 2 3; do
    t0=$(thin_now)
    rig_check "under load: qlunctl snapshot --overlay s$i.qcow2" \
        bash -c "'$QLUNCTL' snapshot $NAME --overlay '$DIR/s$i.qcow2' >'$OUT/snap$i.txt' 2>&1"
    thin_figure "snapshot s$i under fio load: qlunctl took $(thin_since "$t0") s; $(cat "$OUT/snap$i.txt")"
    sleep 3
done
rig_check "under load: qlunctl snapshot-internal create i1" ctl snapshot-internal "$SERIAL" create i1
ctl snapshot-internal "$NAME" list >"$OUT/internal-list.txt" 2>&1
grep -qw i1 "$OUT/internal-list.txt" && rig_pass "qlunctl snapshot-internal list shows i1" \
    || rig_fail "snapshot-internal list shows i1" "$(cat "$OUT/internal-list.txt")"
rig_check "under load: qlunctl snapshot-internal delete i1" ctl snapshot-internal "$NAME" delete i1
ctl_fails "unknown LUN" "nosuchlun" info nosuchlun
ctl_fails "overlay outside the backing root" "outside" snapshot "$NAME" --overlay /tmp/escape.qcow2
ctl_fails "overlay over an existing file" "exists" snapshot "$NAME" --overlay "$DIR/top0.qcow2"
ctl_fails "shrink without force" "shrink" resize "$NAME" $((64 * M))
ctl_fails "size not a multiple of the block size" "multiple" resize "$NAME" $((SIZE + 100))
rig_check "under load: qlunctl resize $NAME $NEWSIZE" ctl resize "$NAME" "$NEWSIZE"
wait "$FIO"; rc=$?
[ "$rc" = 0 ] && rig_pass "fio randwrite with verify_backlog across 2 snapshots, internal snapshots, resize and bad requests: verify passed" \
    || rig_fail "fio verify under load" "exit $rc: $(grep -iE 'err|verify' "$OUT/fio-w2.txt" | head -3)"
ls "$DIR" >"$OUT/dir-after-bad-requests.txt"
[ ! -e /tmp/escape.qcow2 ] && rig_pass "no file made outside the root" || rig_fail "no file outside the root"

# ---- 3. the initiator sees the new size -----------------------------------------
sd=$(basename "$DEV")
echo 1 >"/sys/block/$sd/device/rescan"
sleep 1
[ "$(blockdev --getsize64 "$DEV")" = "$NEWSIZE" ] && rig_pass "after rescan blockdev --getsize64 = $NEWSIZE" \
    || rig_fail "new size seen by the initiator" "blockdev says $(blockdev --getsize64 "$DEV")"
dmesg | grep -i "capacity data has changed" >"$OUT/ua.txt"
[ -s "$OUT/ua.txt" ] && rig_pass "the initiator got UNIT ATTENTION 2A/09 (dmesg: $(head -1 "$OUT/ua.txt" | cut -c1-80))" \
    || rig_fail "UNIT ATTENTION capacity data has changed seen by Linux"
head -c $((4 * M)) /dev/urandom >"$RIG_DATA/tail.bin"
dd if="$RIG_DATA/tail.bin" of="$DEV" bs=1M seek=$(((NEWSIZE - 4 * M) / M)) oflag=direct status=none
rig_check "write and read back the last 4 MiB of the grown LUN" \
    bash -c "dd if='$DEV' bs=1M skip=$(((NEWSIZE - 4 * M) / M)) iflag=direct status=none | cmp - '$RIG_DATA/tail.bin'"
SIZE=$NEWSIZE

# ---- 4. a quiesced internal snapshot holds the LUN's content ----------------------
H2=$(lun_sha)
rig_check "qlunctl snapshot-internal create i2" ctl snapshot-internal "$NAME" create i2
rig_check "fio: writes after i2" fio_write w3 3 --io_size=8M
qemu-img snapshot -l "$DIR/s3.qcow2" >"$OUT/qemu-snapshot-l.txt" 2>&1
grep -qw i2 "$OUT/qemu-snapshot-l.txt" && rig_pass "qemu-img snapshot -l s3.qcow2 lists i2 (while the LUN serves)" \
    || rig_fail "qemu-img snapshot -l lists i2" "$(cat "$OUT/qemu-snapshot-l.txt")"
HI2=$(img_sha "$DIR/s3.qcow2" -l snapshot.name=i2)
[ "$HI2" = "$H2" ] && rig_pass "internal snapshot i2 == the LUN's content when it was taken" \
    || rig_fail "internal snapshot i2 content" "$(tail -2 "$OUT/convert.txt")"
ctl info "$NAME" >"$OUT/qlunctl-info.txt" 2>&1
thin_figure "qlunctl info $NAME:"; sed 's/^/    /' "$OUT/qlunctl-info.txt" >>"$THIN_FIGURES"

# ---- 5. the new top survives a tcmu-runner restart ---------------------------------
cat /sys/kernel/config/target/core/user_*/"$NAME"/attrib/dev_config >"$OUT/dev_config.txt" 2>&1
grep -q "s3.qcow2" "$OUT/dev_config.txt" && rig_pass "LIO's dev_config names the newest overlay: $(cat "$OUT/dev_config.txt")" \
    || rig_fail "dev_config follows the snapshot" "$(cat "$OUT/dev_config.txt")"
H3=$(lun_sha)
rig_check "logout" rig_logout "$IQN" >/dev/null
rig_check "targetcli saveconfig" targetcli saveconfig "$OUT/saved.json"
# Clear while our tcmu-runner still runs: targetcli with none running would
# start Debian's own through D-Bus activation, which knows no qlun.
rig_clearconfig
rig_stop_tcmu
rig_check "tcmu-runner restarted" rig_start_tcmu "$HDIR"
rig_check "restoreconfig of the saved configuration" rig_restoreconfig "$OUT/saved.json" >"$OUT/restore2.txt" 2>&1
DEV=
rig_check "iSCSI login after the restart" rig_login "$IQN" && DEV=$RIG_DEV
if [ -n "$DEV" ]; then
    [ "$(lun_sha)" = "$H3" ] && rig_pass "after the restart the LUN serves the same content (the newest overlay)" \
        || rig_fail "content after restart"
    [ "$(thin_serial "$DEV")" = "$SERIAL" ] && rig_pass "serial unchanged after the restart" \
        || rig_fail "serial after restart" "$(thin_serial "$DEV")"
    rig_check "logout" rig_logout "$IQN" >/dev/null
fi
rig_clearconfig
rig_stop_tcmu

# ---- 6. the images, offline -------------------------------------------------------
for f in top0 s1 s2 s3; do
    rig_check "qemu-img check $f.qcow2" bash -c "qemu-img check '$DIR/$f.qcow2' >'$OUT/check-$f.txt' 2>&1"
done
qemu-img info --backing-chain "$DIR/s3.qcow2" >"$OUT/chain.txt" 2>&1
chain=$(sed -n 's/^image: //p' "$OUT/chain.txt" | xargs -n1 basename | tr '\n' ' ')
[ "$chain" = "s3.qcow2 s2.qcow2 s1.qcow2 top0.qcow2 " ] && rig_pass "qemu-img info --backing-chain: $chain" \
    || rig_fail "backing chain" "got '$chain'"
HC=$(img_sha "$DIR/s3.qcow2")
[ "$HC" = "$H3" ] && rig_pass "the chain (qemu-img convert of s3.qcow2) == the LUN's last content" \
    || rig_fail "chain content == LUN content"
[ "$RIG_NFAIL" -gt 0 ] && rig_diag "end of run"
rig_report
