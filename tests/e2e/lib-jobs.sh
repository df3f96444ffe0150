# shellcheck shell=bash disable=SC2034
# Guest-side helpers of guest/jobs.sh (block jobs and filters in the rig).
# Source after lib.sh and lib-thin.sh, with OUT, DIR, SIZE, LOAD, FIO_SECS,
# the associative array DEV (LUN name -> /dev/sdX) and ctl (qlunctl) set.
#
#   jobs_data IMG FMT SIZE SEED S E [S E ...]   new image, data in [S,E) MiB
#   jobs_overlay IMG BACKING BFMT SEED S E ...  new qcow2 over BACKING, data in [S,E) MiB
#   jobs_layer_data IMG [FMT]      bytes of data the image itself holds (not its backing)
#   jobs_img_sha IMG               sha256 of an image's guest content
#   jobs_run LABEL LUN SEED DATA_CMD WHAT [--pivot|--cancel] -- JOB_ARGS...
#                                  fio without a job, then fio with the job; figures
#   jobs_after LABEL LUN TOP FMT CHAIN IMAGES   checks while the LUN serves
#   jobs_offline LABEL TOP FMT CHAIN IMAGES     the same with tcmu-runner stopped
#   jobs_cor LUN TOP BASE          copy-on-read checks

M=${M:-$((1 << 20))}

# qemu-io writes of a pattern derived from SEED over each [S,E) MiB range
jobs_fill() {
    local img=$1 fmt=$2 seed=$3 k=0 cmds=()
    shift 3
    while [ $# -ge 2 ]; do
        cmds+=(-c "write -P $(((seed * 16 + k) % 251 + 1)) $(($1 * M)) $((($2 - $1) * M))")
        k=$((k + 1)); shift 2
    done
    qemu-io -f "$fmt" "${cmds[@]}" "$img" >/dev/null
}
jobs_data() {
    local img=$1 fmt=$2 size=$3; shift 3
    if [ "$fmt" = raw ]; then truncate -s "$size" "$img"; else qemu-img create -q -f "$fmt" "$img" "$size"; fi
    jobs_fill "$img" "$fmt" "$@"
}
jobs_overlay() {
    local img=$1 backing=$2 bfmt=$3; shift 3
    qemu-img create -q -f qcow2 -b "$backing" -F "$bfmt" "$img"
    jobs_fill "$img" qcow2 "$@"
}

jobs_layers_data() { local f s=0; for f in "$@"; do s=$((s + $(jobs_layer_data "$f"))); done; echo "$s"; }
jobs_layer_data() {
    qemu-img map -U --output=json ${2:+-f "$2"} "$1" 2>>"$OUT/map-errors.txt" |
        jq '[.[] | select(.depth == 0 and .data) | .length] | add // 0'
}
# jobs_data_in IMG FMT START LEN: bytes of data (at any depth) in [START, START+LEN)
jobs_data_in() {
    qemu-img map -U --output=json -f "$2" "$1" 2>>"$OUT/map-errors.txt" |
        jq --argjson a "$3" --argjson b "$(($3 + $4))" \
           '[.[] | select(.data) | ([.start + .length, $b] | min) - ([.start, $a] | max) | select(. > 0)] | add // 0'
}
jobs_img_sha() {
    local tmp=$DIR/.sha.raw
    rm -f "$tmp"
    qemu-img convert -U ${2:+-f "$2"} -O raw "$1" "$tmp" >>"$OUT/convert.txt" 2>&1 || { echo "convert-failed-$1"; return; }
    sha256sum "$tmp" | cut -d' ' -f1
    rm -f "$tmp"
}
jobs_dev_sha() { dd if="$1" bs=1M iflag=direct status=none | sha256sum | cut -d' ' -f1; }

# jobs_fio NAME DEV SEED: FIO_SECS of 4k random writes at QD16 over the
# first LOAD bytes, each write verified (crc32c) after 64 more; per-second
# IOPS in $OUT/iops-NAME_iops.1.log
jobs_fio() {
    local n=$1 dev=$2 seed=$3
    fio --name="$n" --filename="$dev" --direct=1 --ioengine=libaio --iodepth=16 \
        --rw=randwrite --bs=4k --offset=0 --size="$LOAD" --randseed="$seed" \
        --time_based --runtime="$FIO_SECS" \
        --verify=crc32c --verify_backlog=64 --verify_fatal=1 \
        --write_iops_log="$OUT/iops-$n" --log_avg_msec=1000 --output="$OUT/fio-$n.txt"
}
# jobs_iops NAME [FROM_MS TO_MS]: mean write IOPS of the seconds of fio run
# NAME whose middle lies in [FROM_MS, TO_MS] (fio's clock); "n/a" if none
jobs_iops() {
    awk -F', *' -v a="${2:--1}" -v b="${3:-1e12}" \
        '$3 + 0 == 1 && $1 - 500 >= a && $1 - 500 <= b { s += $2; n++ }
         END { if (n) printf "%.0f (%d s)", s / n, n; else printf "n/a" }' \
        "$OUT/iops-$1_iops.1.log" 2>/dev/null || echo "n/a"
}
jobs_ms() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.0f", (b - a) * 1000}'; }

# jobs_field ID FIELD: a member of the job's query-jobs entry
jobs_field() {
    ctl --json job list 2>>"$OUT/joblist-errors.txt" |
        jq -r --arg id "$1" --arg f "$2" '.[] | select(.id == $id) | .[$f] // empty'
}

# jobs_run LABEL LUN SEED DATA_CMD WHAT [--pivot|--cancel] -- JOB_ARGS...
# fio alone on the LUN for FIO_SECS; then fio again and, 2 s into it,
# `qlunctl job start LUN JOB_ARGS --id LABEL`, waited for (--pivot: ready,
# complete, concluded; --cancel: ready, cancel, concluded).  Both fio runs
# must verify.  Figure: wall time, bytes done vs the output of DATA_CMD
# (the layers' data, run just before the job starts), IOPS with and without.
jobs_run() {
    local label=$1 lun=$2 seed=$3 data_cmd=$4 what=$5 mode='' data
    shift 5
    [ "$1" = --pivot ] || [ "$1" = --cancel ] && { mode=$1; shift; }
    [ "$1" = -- ] && shift
    local dev=${DEV[$lun]} t0 j0 j1 fpid rc res bytes_done total
    rig_check "$label: fio without a job ($FIO_SECS s, verify)" jobs_fio "$label-nojob" "$dev" "$seed"
    t0=$(thin_now)
    jobs_fio "$label-job" "$dev" $((seed + 100)) &
    fpid=$!
    sleep 2
    data=$($data_cmd)
    j0=$(thin_now)
    if rig_check "$label: qlunctl job start $lun $* --id $label" \
            ctl job start "$lun" "$@" --id "$label" >"$OUT/job-$label.txt" 2>&1; then
        case $mode in
        --pivot)
            rig_check "$label: job wait --ready" ctl job wait "$label" --ready --timeout 300 >>"$OUT/job-$label.txt" 2>&1
            rig_check "$label: job complete (pivot under fio)" ctl job complete "$label" >>"$OUT/job-$label.txt" 2>&1
            rig_check "$label: job wait (completed)" ctl job wait "$label" --timeout 300 >>"$OUT/job-$label.txt" 2>&1 ;;
        --cancel)
            rig_check "$label: job wait --ready" ctl job wait "$label" --ready --timeout 300 >>"$OUT/job-$label.txt" 2>&1
            rig_check "$label: job cancel" ctl job cancel "$label" >>"$OUT/job-$label.txt" 2>&1
            ctl job wait "$label" --timeout 300 >>"$OUT/job-$label.txt" 2>&1 ;;
        *)
            rig_check "$label: job wait (completed)" ctl job wait "$label" --timeout 300 >>"$OUT/job-$label.txt" 2>&1 ;;
        esac
    fi
    j1=$(thin_now)
    ctl --json job list "$lun" >"$OUT/joblist-$label.json" 2>&1
    res=$(jobs_field "$label" result); bytes_done=$(jobs_field "$label" 'done'); total=$(jobs_field "$label" total)
    local want=completed; [ "$mode" = --cancel ] && want=cancelled
    [ "$res" = "$want" ] && rig_pass "$label: query-jobs result $res" \
        || rig_fail "$label: query-jobs result $want" "got '$res': $(tr '\n' ' ' <"$OUT/job-$label.txt" | cut -c1-200)"
    ctl job dismiss "$label" >>"$OUT/job-$label.txt" 2>&1
    wait "$fpid"; rc=$?
    [ "$rc" = 0 ] && rig_pass "$label: fio randwrite with verify_backlog during the job: verify passed" \
        || rig_fail "$label: fio verify during the job" "exit $rc: $(grep -iE 'err|verify' "$OUT/fio-$label-job.txt" | head -3 | tr '\n' ' ')"
    thin_figure "$label ($lun: $*): wall $(awk -v a="$j0" -v b="$j1" 'BEGIN{printf "%.1f", b - a}') s;" \
        "copied (query-jobs done) $(thin_mib "${bytes_done:-0}") of total $(thin_mib "${total:-0}"); $what $(thin_mib "$data");" \
        "fio write IOPS during the job $(jobs_iops "$label-job" "$(jobs_ms "$t0" "$j0")" "$(jobs_ms "$t0" "$j1")")" \
        "vs $(jobs_iops "$label-nojob") without a job (same LUN, just before)"
}

# images: qcow2 files are checked; raw files and block devices have no check
jobs_check_images() {
    local label=$1 how=$2 img u=
    shift 2
    [ "$how" = serving ] && u=-U
    for img in "$@"; do
        case $img in *.qcow2) ;; *) continue ;; esac
        rig_check "$label: qemu-img check $(basename "$img") ($how)" \
            bash -c "qemu-img check $u '$img' >'$OUT/check-$label-$how-$(basename "$img").txt' 2>&1"
    done
}
jobs_chain() {
    local label=$1 top=$2 fmt=$3 want=$4 how=$5 got
    qemu-img info -U --backing-chain -f "$fmt" "$top" >"$OUT/chain-$label-$how.txt" 2>&1
    got=$(sed -n 's/^image: //p' "$OUT/chain-$label-$how.txt" | xargs -n1 basename | xargs)
    [ "$got" = "$want" ] && rig_pass "$label: qemu-img info --backing-chain ($how): $got" \
        || rig_fail "$label: backing chain ($how)" "want '$want', got '$got'"
}
jobs_compare() {
    local label=$1 dump=$2 top=$3 fmt=$4 how=$5
    if qemu-img compare -U -f raw -F "$fmt" "$dump" "$top" >"$OUT/compare-$label-$how.txt" 2>&1; then
        rig_pass "$label: qemu-img compare: the LUN's content (read through the initiator) == $(basename "$top") ($how)"
    else
        rig_fail "$label: LUN content == $(basename "$top") ($how)" "$(tail -1 "$OUT/compare-$label-$how.txt")"
    fi
}

# jobs_after LABEL LUN TOP FMT CHAIN "IMAGES": while the LUN serves (fio
# done, SYNCHRONIZE CACHE sent, so the metadata is on disk)
jobs_after() {
    local label=$1 lun=$2 top=$3 fmt=$4 chain=$5 images=$6
    sg_sync "${DEV[$lun]}" >/dev/null 2>&1
    # shellcheck disable=SC2086
    jobs_check_images "$label" serving $images
    jobs_chain "$label" "$top" "$fmt" "$chain" serving
    dd if="${DEV[$lun]}" of="$DIR/lun.raw" bs=1M iflag=direct status=none
    jobs_compare "$label" "$DIR/lun.raw" "$top" "$fmt" serving
    rm -f "$DIR/lun.raw"
}
# jobs_offline LABEL TOP FMT CHAIN "OTHER IMAGES": tcmu-runner stopped
jobs_offline() {
    local label=$1 top=$2 fmt=$3 chain=$4 others=$5
    # shellcheck disable=SC2086
    jobs_check_images "$label" offline "$top" $others
    jobs_chain "$label" "$top" "$fmt" "$chain" offline
    jobs_compare "$label" "$DIR/final-$label.raw" "$top" "$fmt" offline
}

# jobs_dev_config LABEL LUN PATH [NOT]: LIO's cfgstring names PATH (not NOT)
jobs_dev_config() {
    local label=$1 lun=$2 path=$3 not=${4:-} f=$OUT/dev_config-$1.txt
    cat /sys/kernel/config/target/core/user_*/"$lun"/attrib/dev_config >"$f" 2>&1
    if grep -qF "$path" "$f" && { [ -z "$not" ] || ! grep -qF "$not" "$f"; }; then
        rig_pass "$label: LIO's dev_config names $path: $(cat "$f")"
    else
        rig_fail "$label: LIO's dev_config names $path${not:+, not $not}" "$(cat "$f")"
    fi
}

jobs_losetup() {
    local f=$1 dev i
    modprobe loop >"$OUT/losetup.txt" 2>&1
    dev=$(losetup -f --show "$f" 2>>"$OUT/losetup.txt")
    if [ -z "$dev" ]; then
        # no udev: make the nodes losetup looks for
        for i in 0 1 2 3 4 5 6 7; do [ -b /dev/loop$i ] || mknod /dev/loop$i b 7 $i; done
        dev=$(losetup -f --show "$f" 2>>"$OUT/losetup.txt")
    fi
    echo "$dev"
}

# jobs_alloc_near LABEL FILE DATA: FILE's allocated bytes within 15 % (+1 MiB)
# of DATA: the mirror wrote the data and left holes where the source had
# none (zero clusters, unallocated ranges)
jobs_alloc_near() {
    local label=$1 f=$2 data=$3 alloc
    alloc=$(( $(thin_alloc_kib "$f") * 1024 ))
    thin_figure "$label: target allocation $(thin_mib "$alloc") (du of $(basename "$f")) vs source data $(thin_mib "$data"), LUN $(thin_mib "$SIZE")"
    awk -v a="$alloc" -v d="$data" 'BEGIN{x = a - d; if (x < 0) x = -x; exit !(x <= 0.15 * d + 1048576)}' \
        && rig_pass "$label: the target's allocation $(thin_mib "$alloc") ~ the source's data $(thin_mib "$data")" \
        || rig_fail "$label: the target's allocation ~ the source's data" "$(thin_mib "$alloc") vs $(thin_mib "$data")"
}

# ---- copy-on-read ------------------------------------------------------------------
# jobs_cor LUN TOP BASE: the LUN serves TOP (empty) over BASE with
# copy_on_read=on in its cfgstring.  Read [0,32M): the top holds what the
# base had there; `copy-on-read off`, read [32M,48M): the top gains
# nothing; `on`, read everything: the top holds all the base's data.  The
# content never changes.
jobs_cor() {
    local lun=$1 top=$2 base=$3 dev=${DEV[$1]} want t0 got b32
    want=$(jobs_img_sha "$base")
    b32=$(jobs_data_in "$base" qcow2 0 $((32 * M)))
    dd if="$dev" of=/dev/null bs=1M count=32 iflag=direct status=none
    # The copies are writes like any other: their metadata reaches the
    # file (what qemu-img map reads) at the next SYNCHRONIZE CACHE.
    sg_sync "$dev" >/dev/null 2>&1
    got=$(jobs_layer_data "$top")
    [ "$got" -ge "$b32" ] && [ "$got" -le $((b32 + M)) ] \
        && rig_pass "cor: after reading [0,32M) (copy_on_read=on in the cfgstring) the top holds $(thin_mib "$got") = the base's data there" \
        || rig_fail "cor: the top holds the base's data of [0,32M) after reading it" "top $got, base $b32"
    rig_check "cor: qlunctl copy-on-read $lun off" ctl copy-on-read "$lun" off
    dd if="$dev" of=/dev/null bs=1M skip=32 count=16 iflag=direct status=none
    sg_sync "$dev" >/dev/null 2>&1
    [ "$(jobs_layer_data "$top")" = "$got" ] && rig_pass "cor: off: reading [32M,48M) copies nothing up" \
        || rig_fail "cor: off: reading copies nothing up" "top $(jobs_layer_data "$top"), was $got"
    rig_check "cor: qlunctl copy-on-read $lun on" ctl copy-on-read "$lun" on
    t0=$(thin_now)
    got=$(jobs_dev_sha "$dev")
    local secs; secs=$(thin_since "$t0")
    sg_sync "$dev" >/dev/null 2>&1
    [ "$got" = "$want" ] && rig_pass "cor: the LUN's content (full read) == the base's" || rig_fail "cor: content unchanged by copy-on-read"
    local bd td t1
    bd=$(jobs_layer_data "$base"); td=$(jobs_layer_data "$top")
    [ "$td" -ge "$bd" ] && [ "$td" -le $((bd + M)) ] \
        && rig_pass "cor: after a full read the top holds all the data ($(thin_mib "$td") of the base's $(thin_mib "$bd"); qemu-img map)" \
        || rig_fail "cor: after a full read the top holds the data" "top $td, base $bd"
    t1=$(thin_now)
    jobs_dev_sha "$dev" >/dev/null
    thin_figure "copy-on-read ($lun): full read of $(thin_mib "$SIZE") copying $(thin_mib "$((bd - b32))") up: $secs s; again, all local: $(thin_since "$t1") s"
    sg_sync "$dev" >/dev/null 2>&1
    jobs_check_images cor serving "$top" "$base"
    rig_check "cor: qemu-img compare top.qcow2 base.qcow2 (LUN serving)" \
        bash -c "qemu-img compare -U '$top' '$base' >'$OUT/compare-cor-top-base.txt' 2>&1"
}

# jobs_top_holds LABEL TOP BYTES: the top itself (qemu-img map, depth 0)
# holds at least BYTES of data
jobs_top_holds() {
    local got; got=$(jobs_layer_data "$2")
    [ "$got" -ge "$3" ] && rig_pass "$1: the top itself holds $(thin_mib "$got") of data (qemu-img map), >= the $(thin_mib "$3") streamed" \
        || rig_fail "$1: the top holds the streamed data" "top $got < $3"
}

# jobs_guest_script SCRIPT: run another test's guest script (one that starts
# its own tcmu-runner and stops it at the end) in this boot, in a subshell
# so that its exit and variables stay its own; its PASS/FAIL lines and
# figures join ours.
jobs_guest_script() {
    local name fig line
    name=$(basename "$1" .sh)
    fig=$OUT/$name-figures.txt
    rm -f "$RIG_SHARE/report.txt" "$fig"
    # shellcheck disable=SC1090
    ( THIN_FIGURES=$fig; . "$1" )
    [ -s "$RIG_SHARE/report.txt" ] || rig_fail "$name.sh wrote a report"
    while IFS= read -r line; do
        case $line in
        PASS*) RIG_RESULTS+=("$line") ;;
        FAIL*) RIG_RESULTS+=("$line"); RIG_NFAIL=$((RIG_NFAIL + 1)) ;;
        esac
    done <"$RIG_SHARE/report.txt" 2>/dev/null
    sed "s/^/$name: /" "$fig" >>"$THIN_FIGURES" 2>/dev/null
}
