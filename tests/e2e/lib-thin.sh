# shellcheck shell=bash disable=SC2034
# Guest-side helpers for the thin-LUN e2e tests (guest/thin.sh,
# guest/blockdev.sh, guest/qcow2-overlay.sh).  Source AFTER lib.sh:
#
#   . "$QLUN_REPO/tests/e2e/lib.sh"
#   . "$QLUN_REPO/tests/e2e/lib-thin.sh"
#
#   thin_py ARGS...                 tests/e2e/lib-thin.py (layout, verify, mapnorm, stat ...)
#   thin_serial DEV                 unit serial (VPD 80h) = name of the statistics file
#   thin_stats_snap SERIAL FILE     wait for the next publication (once a second), copy it
#   thin_stat FILE KEY              bytes_written ... or cmd:UNMAP (0 when absent)
#   thin_delta OLD NEW KEY          NEW-OLD
#   thin_make_source IMG SIZE EXTENTS COUNT   qcow2 (64 KiB clusters) with the scattered layout
#   thin_iscsi_opts IQN LUN         --image-opts string for QEMU's iSCSI initiator
#   thin_linux_view LABEL DEV GRAN  provisioning/zeroing mode, queue limits, VPD B0/B2, READ CAPACITY(16)
#   thin_ks3200 LABEL DEV SRC EXTENTS SERIAL   convert -t none onto DEV, time, stats, compares
#   thin_map_compare LABEL IQN LUN IMG FMT      QEMU iSCSI map == qemu-img map of the image
#   thin_alloc_kib PATH             allocated KiB of a file (du)
#   thin_ratio_ok A B PCT           |A-B| <= PCT% of B

THIN_PY=$QLUN_REPO/tests/e2e/lib-thin.py
THIN_QEMU_INITIATOR=${THIN_QEMU_INITIATOR:-iqn.2024-01.io.qlun:qemu-img}
: "${THIN_FIGURES:=$RIG_SHARE/figures.txt}"

thin_py() { python3 "$THIN_PY" "$@"; }
thin_now() { date +%s.%N; }
thin_since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}'; }
thin_figure() { echo "$*" >>"$THIN_FIGURES"; rig_log "FIGURE: $*"; }
thin_mib() { awk -v b="$1" 'BEGIN{printf "%.1f MiB", b/1048576}'; }

thin_serial() {
    sg_vpd -p sn "$1" 2>/dev/null | sed -n 's/^ *Unit serial number: *//p' | sed 's/ *$//'
}

# thin_stats_snap SERIAL OUT: the LUN's statistics file as of now, with
# every command that completed before the call.  The file is rewritten once
# a second by one thread (handler/stats_file.c): the first rewrite after
# the call may hold counts taken before it, the second cannot (its counts
# are read after the first was renamed into place).  A fixed sleep was not
# enough on a loaded machine (e2e/thin saw a WRITE SAME counted +0).
thin_stats_snap() {
    local f=/run/qlun/$1.json last cur changes=0 i
    last=$(stat -c %y "$f" 2>/dev/null)
    for i in $(seq 300); do   # 30 s at most
        sleep 0.1
        cur=$(stat -c %y "$f" 2>/dev/null)
        [ "$cur" != "$last" ] && { changes=$((changes + 1)); last=$cur; }
        [ "$changes" -ge 2 ] && break
    done
    [ "$changes" -ge 2 ] || echo "thin_stats_snap: $f was not rewritten twice in 30 s" >&2
    cp "$f" "$2" 2>/dev/null || echo '{}' >"$2"
}
thin_stat() { thin_py stat "$1" "$2"; }
thin_delta() { thin_py deltas "$1" "$2" "$3"; }

# thin_make_source IMG SIZE EXTENTS COUNT
thin_make_source() {
    local img=$1 size=$2 ext=$3 count=$4
    thin_py layout "$size" "$count" >"$ext" || return 1
    qemu-img create -q -f qcow2 -o cluster_size=64k "$img" "$size" || return 1
    thin_py qemu-io-cmds "$ext" | qemu-io -f qcow2 "$img" >/dev/null || return 1
    # qemu-io reads commands from stdin when none is given on the command line
    [ "$(qemu-img map --output=json "$img" | thin_py mapnorm | awk '$3=="data"{s+=$2} END{print s+0}')" \
        -ge "$(thin_py datasize "$ext")" ]
}

thin_iscsi_opts() {
    echo "driver=iscsi,transport=tcp,portal=${RIG_PORTAL},target=$1,lun=$2,user=${RIG_CHAP_USER},password=${RIG_CHAP_PASS},initiator-name=${THIN_QEMU_INITIATOR}"
}

thin_alloc_kib() { du -k "$1" | cut -f1; }
thin_ratio_ok() { awk -v a="$1" -v b="$2" -v p="$3" 'BEGIN{d=a-b; if(d<0)d=-d; exit !(b>0 && d*100<=p*b)}'; }

# thin_grep_num FILE REGEX -> first number after the regex
thin_grep_num() { sed -n "s/.*$2[^0-9]*\\([0-9][0-9]*\\).*/\\1/p" "$1" | head -1; }

# thin_linux_view LABEL DEV GRAN_BLOCKS
thin_linux_view() {
    local L=$1 dev=$2 gran=$3 sd=${2#/dev/} v f
    local sdisk
    sdisk=$(ls -d /sys/block/"$sd"/device/scsi_disk/* 2>/dev/null | head -1)
    v=$(cat "$sdisk/provisioning_mode" 2>/dev/null)
    [ "$v" = unmap ] && rig_pass "$L: provisioning_mode = unmap" || rig_fail "$L: provisioning_mode = unmap" "got '$v'"
    v=$(cat "$sdisk/zeroing_mode" 2>/dev/null)
    [ "$v" = writesame_16_unmap ] && rig_pass "$L: zeroing_mode = writesame_16_unmap" \
        || rig_fail "$L: zeroing_mode = writesame_16_unmap" "got '$v'"
    for f in discard_max_bytes write_zeroes_max_bytes; do
        v=$(cat "/sys/block/$sd/queue/$f")
        [ "${v:-0}" -gt 0 ] && rig_pass "$L: queue/$f = $v (non-zero)" || rig_fail "$L: queue/$f non-zero" "got '$v'"
    done
    thin_figure "$L: discard_granularity=$(cat /sys/block/"$sd"/queue/discard_granularity) max_write_same_blocks=$(cat "$sdisk/max_write_same_blocks" 2>/dev/null)"
    f=$OUT/$L-sg_vpd_bl.txt
    sg_vpd -p bl "$dev" >"$f" 2>&1
    local mu md og ws
    mu=$(thin_grep_num "$f" 'Maximum unmap LBA count:')
    md=$(thin_grep_num "$f" 'Maximum unmap block descriptor count:')
    og=$(thin_grep_num "$f" 'Optimal unmap granularity:')
    ws=$(sed -n 's/.*Maximum write same length: *\(0x[0-9a-fA-F]*\|[0-9]*\).*/\1/p' "$f" | head -1)
    [ "${mu:-0}" -gt 0 ] && [ "${md:-0}" -gt 0 ] \
        && rig_pass "$L: VPD B0 unmap limits non-zero (max LBA count $mu, max descriptors $md)" \
        || rig_fail "$L: VPD B0 unmap limits non-zero" "LBA count '$mu' descriptors '$md'; see out/$L-sg_vpd_bl.txt"
    [ "$og" = "$gran" ] && rig_pass "$L: VPD B0 optimal unmap granularity = $gran blocks" \
        || rig_fail "$L: VPD B0 optimal unmap granularity = $gran blocks" "got '$og'"
    [ -n "$ws" ] && [ $((ws)) -gt 0 ] && rig_pass "$L: VPD B0 maximum write same length $ws" \
        || rig_fail "$L: VPD B0 maximum write same length non-zero" "got '$ws'"
    f=$OUT/$L-sg_vpd_lbpv.txt
    sg_vpd -p lbpv "$dev" >"$f" 2>&1
    local bad=
    grep -q 'Unmap command supported (LBPU): 1' "$f" || bad+=" LBPU"
    grep -q '(LBPWS): 1' "$f" || bad+=" LBPWS"
    grep -q '(LBPWS10): 1' "$f" || bad+=" LBPWS10"
    grep -q '(LBPRZ): 1' "$f" || bad+=" LBPRZ"
    grep -q 'Provisioning type: 2' "$f" || bad+=" type"
    [ -z "$bad" ] && rig_pass "$L: VPD B2 LBPU=1 LBPWS=1 LBPWS10=1 LBPRZ=1 provisioning type 2 (thin)" \
        || rig_fail "$L: VPD B2 thin values" "wrong:$bad; see out/$L-sg_vpd_lbpv.txt"
    f=$OUT/$L-sg_readcap.txt
    sg_readcap -l "$dev" >"$f" 2>&1
    grep -q 'lbpme=1, lbprz=1' "$f" && rig_pass "$L: READ CAPACITY(16) lbpme=1 lbprz=1" \
        || rig_fail "$L: READ CAPACITY(16) lbpme=1 lbprz=1" "$(grep -i lbpme "$f")"
    grep -q 'per physical block exponent=3' "$f" && rig_pass "$L: READ CAPACITY(16) 4 KiB physical blocks (exponent 3)" \
        || rig_fail "$L: READ CAPACITY(16) physical block exponent 3" "$(grep -i exponent "$f")"
}

# thin_ks3200 LABEL DEV SRC EXTENTS SERIAL LUN_BYTES
#   the ks3200 path: qemu-img convert -p -t none -O raw SRC DEV, timed; the
#   statistics must show the zero runs as WRITE SAME/UNMAP, not data; then
#   the data extents, boundaries and samples of the zero runs are read back
#   through the Linux initiator and compared with the layout.
thin_ks3200() {
    local L=$1 dev=$2 src=$3 ext=$4 serial=$5 lun=$6
    local data zr s0=$OUT/$L-stats-pre.json s1=$OUT/$L-stats-post.json t0 secs rc
    data=$(thin_py datasize "$ext")
    zr=$((lun - data))
    thin_stats_snap "$serial" "$s0"
    t0=$(thin_now)
    qemu-img convert -p -t none -O raw "$src" "$dev" >"$OUT/$L-convert.txt" 2>&1; rc=$?
    secs=$(thin_since "$t0")
    [ $rc = 0 ] && rig_pass "$L: qemu-img convert -p -t none -O raw SRC $dev (${secs} s)" \
        || rig_fail "$L: qemu-img convert -t none onto the LUN" "exit $rc: $(tail -c 300 "$OUT/$L-convert.txt")"
    thin_stats_snap "$serial" "$s1"
    local w z u e ws16 ws10 um wr10 wr16 wr
    read -r w z u e ws16 ws10 um wr10 wr16 < <(thin_py deltas "$s0" "$s1" bytes_written bytes_zeroed \
        bytes_unmapped errors "cmd:WRITE SAME (16)" "cmd:WRITE SAME (10)" cmd:UNMAP "cmd:WRITE (10)" "cmd:WRITE (16)")
    wr=$((wr10 + wr16))
    thin_figure "$L: convert ${secs} s; LUN $(thin_mib "$lun"), data $(thin_mib "$data") in $(wc -l <"$ext") extents;" \
        "stats delta: bytes_written=$w bytes_zeroed=$z bytes_unmapped=$u errors=$e;" \
        "commands: WRITE=$wr WRITE SAME(16)=$ws16 WRITE SAME(10)=$ws10 UNMAP=$um"
    [ -s "$s1" ] && [ "$(cat "$s1")" != '{}' ] && rig_pass "$L: statistics file /run/qlun/$serial.json published" \
        || rig_fail "$L: statistics file /run/qlun/$serial.json published"
    # data lands as data: at least the layout's bytes, at most 10 % more
    if [ "$w" -ge "$data" ] && [ "$w" -le $((data + data / 10)) ]; then
        rig_pass "$L: bytes_written $(thin_mib "$w") ~ data size $(thin_mib "$data")"
    else
        rig_fail "$L: bytes_written ~ data size" "bytes_written=$w data=$data"
    fi
    if [ $((z + u)) -ge $((zr - zr / 10)) ] && [ $((ws16 + ws10 + um)) -gt 0 ]; then
        rig_pass "$L: zero runs arrived as WRITE SAME/UNMAP: bytes_zeroed+bytes_unmapped $(thin_mib $((z + u))) >= 90% of $(thin_mib "$zr")"
    else
        rig_fail "$L: zero runs arrived as WRITE SAME/UNMAP" "zeroed=$z unmapped=$u zero runs=$zr WS16=$ws16 WS10=$ws10 UNMAP=$um"
    fi
    [ "$e" = 0 ] && rig_pass "$L: no command ended in an error during the convert" || rig_fail "$L: no errors during the convert" "errors +$e"

    # Linux initiator read-back: every data extent, every extent boundary,
    # 32 MiB of samples from the zero runs
    local ranges
    mapfile -t ranges < <(awk '{print $1 ":" $2}' "$ext"; thin_py samples "$ext" "$lun" 32 1048576)
    t0=$(thin_now)
    thin_py verify "$dev" "$ext" "${ranges[@]}" >"$OUT/$L-verify.txt" 2>&1; rc=$?
    [ $rc = 0 ] && rig_pass "$L: /dev read-back (O_DIRECT) of all data extents, boundaries, 32 zero-run samples == source ($(thin_since "$t0") s)" \
        || rig_fail "$L: /dev read-back == source" "$(tail -1 "$OUT/$L-verify.txt")"
    if [ "${QLUN_E2E_FULL_COMPARE:-0}" = 1 ]; then
        t0=$(thin_now)
        qemu-img compare -f qcow2 -F raw "$src" "$dev" >"$OUT/$L-compare-dev.txt" 2>&1; rc=$?
        [ $rc = 0 ] && rig_pass "$L: qemu-img compare SRC $dev: identical ($(thin_since "$t0") s)" \
            || rig_fail "$L: qemu-img compare SRC $dev" "exit $rc: $(tail -1 "$OUT/$L-compare-dev.txt")"
    fi
}

# thin_compare_dev LABEL SRC DEV : the literal whole-device compare (reads
# every byte of the LUN through the Linux initiator: ~25 MB/s under TCG)
thin_compare_dev() {
    local L=$1 src=$2 dev=$3 t0 rc
    t0=$(thin_now)
    qemu-img compare -f qcow2 -F raw "$src" "$dev" >"$OUT/$L-compare-dev.txt" 2>&1; rc=$?
    [ $rc = 0 ] && rig_pass "$L: qemu-img compare SRC $dev: $(tail -1 "$OUT/$L-compare-dev.txt") ($(thin_since "$t0") s)" \
        || rig_fail "$L: qemu-img compare SRC $dev" "exit $rc: $(tail -1 "$OUT/$L-compare-dev.txt")"
}

# thin_compare_iscsi LABEL SRC IQN LUN : qemu-img compare through QEMU's own
# initiator (GET LBA STATUS lets it skip deallocated ranges)
thin_compare_iscsi() {
    local L=$1 src=$2 iqn=$3 lun=$4 t0 rc
    t0=$(thin_now)
    qemu-img compare --image-opts "driver=qcow2,file.driver=file,file.filename=$src" \
        "$(thin_iscsi_opts "$iqn" "$lun")" >"$OUT/$L-compare-iscsi.txt" 2>&1; rc=$?
    [ $rc = 0 ] && rig_pass "$L: qemu-img compare SRC iscsi://…/$lun (QEMU initiator): $(tail -1 "$OUT/$L-compare-iscsi.txt") ($(thin_since "$t0") s)" \
        || rig_fail "$L: qemu-img compare SRC iscsi://…/$lun" "exit $rc: $(tail -1 "$OUT/$L-compare-iscsi.txt")"
}

# thin_map_compare LABEL IQN LUN IMG FMT LUN_BYTES
thin_map_compare() {
    local L=$1 iqn=$2 lun=$3 img=$4 fmt=$5 size=$6 rc
    qemu-img map --output=json --image-opts "$(thin_iscsi_opts "$iqn" "$lun")" \
        >"$OUT/$L-map-iscsi.json" 2>"$OUT/$L-map-iscsi.err"; rc=$?
    qemu-img map --output=json -U -f "$fmt" "$img" >"$OUT/$L-map-image.json" 2>"$OUT/$L-map-image.err"
    thin_py mapnorm --size "$size" <"$OUT/$L-map-iscsi.json" >"$OUT/$L-map-iscsi.txt" 2>&1
    thin_py mapnorm --size "$size" <"$OUT/$L-map-image.json" >"$OUT/$L-map-image.txt" 2>&1
    local n
    n=$(grep -c . "$OUT/$L-map-iscsi.txt")
    if [ $rc = 0 ] && [ "$n" -gt 1 ] && cmp -s "$OUT/$L-map-iscsi.txt" "$OUT/$L-map-image.txt"; then
        rig_pass "$L: qemu-img map via QEMU's iSCSI initiator == qemu-img map of the $fmt image ($n coalesced data/zero extents)"
    else
        rig_fail "$L: qemu-img map via iSCSI == map of the image" \
            "rc=$rc, $n vs $(grep -c . "$OUT/$L-map-image.txt") extents; first difference: $(diff "$OUT/$L-map-iscsi.txt" "$OUT/$L-map-image.txt" | sed -n 2p) ($(head -c 200 "$OUT/$L-map-iscsi.err"))"
    fi
}
