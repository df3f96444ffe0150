# shellcheck shell=bash disable=SC2034
# The body of bench/guest/stack-bench.sh (sourced by it in the VM, after
# tests/e2e/lib.sh and lib-thin.sh, with the parsed options set).
#
# A cell is one job on one backstore in one repetition; its figures go to
# results.jsonl through bench/stack-report.py's "cell" command.

BENCH_DIR=$QLUN_REPO/bench
BENCH_OUT=$RIG_SHARE/bench
BENCH_RAW=$BENCH_OUT/raw
BENCH_RESULTS=$BENCH_OUT/results.jsonl
MAIN_IQN=iqn.2024-01.io.qlun:bench
SCRATCH_IQN=iqn.2024-01.io.qlun:bench-scratch
LIO_BENCH=(/usr/bin/python3 "$BENCH_DIR/guest/lio-bench.py")
REPORT=(/usr/bin/python3 "$BENCH_DIR/stack-report.py")
SRC_IMG=$RIG_DATA/convert-src.qcow2
SRC_EXTENTS=$BENCH_OUT/convert-src-extents.txt
RIG_TCMU_DEBUG=0            # -d logs every CDB: it would measure the logging
CLK_TCK=$(getconf CLK_TCK)
declare -A DEV=()           # backstore -> /dev/sdX of the main target
CELL_ERRORS=0

# ---- images -------------------------------------------------------------------
# Variants: "full"  = every cluster/block allocated (fallocate) and the
#                     random-job region holding real data, so reads there
#                     reach the disk's file rather than an unwritten extent;
#           "alloc" = allocated, no data (scratch LUNs of blkdiscard/convert);
#           "empty" = sparse, nothing allocated (the allocating write).

# write RAND_BYTES of a pattern at offset 0, 64 MiB a request
fill_data() {
    local img=$1 fmt=$2 off cmds=()
    for ((off = 0; off < RAND_BYTES; off += 64 << 20)); do
        cmds+=(-c "write -P 0x5a $off 64M")
    done
    qemu-io -f "$fmt" "${cmds[@]}" "$img" >/dev/null
}

make_qcow2() {        # PATH VARIANT [EXTRA -o OPTIONS]
    local img=$1 variant=$2 extra=${3:-} opts=cluster_size=64k
    [ -n "$extra" ] && opts+=",$extra"
    [ "$variant" != empty ] && opts+=",preallocation=falloc"
    qemu-img create -q -f qcow2 -o "$opts" "$img" "$LUN_BYTES" || return 1
    [ "$variant" != full ] || fill_data "$img" qcow2
}

make_raw() {          # PATH VARIANT
    local img=$1 variant=$2
    rm -f "$img"
    truncate -s "$LUN_BYTES" "$img" || return 1
    [ "$variant" = empty ] && return 0
    fallocate -l "$LUN_BYTES" "$img" || return 1
    [ "$variant" != full ] || fill_data "$img" raw
}

# attach_nbd IMG DIR NBD -> NBD on stdout.  With -c (and no --verbose) qemu-nbd
# daemonizes itself once the device is connected.  --discard=unmap: qemu-nbd's
# default (ignore) accepts a trim and does nothing, so blkdiscard and the
# convert's UNMAPs would cost QEMU nothing and free nothing.
attach_nbd() {
    local img=$1 d=$2 nbd=$3
    qemu-nbd --pid-file="$d/qemu-nbd.pid" --cache=none --aio=native --discard=unmap -f qcow2 \
        -c "$nbd" "$img" >"$d/qemu-nbd.log" 2>&1 || { cat "$d/qemu-nbd.log" >&2; return 1; }
    echo "qemu-nbd -d $nbd" >>"$d/teardown"
    echo "$nbd"
}

# bs_make BACKSTORE VARIANT TAG -> LUN spec for lio-bench.py on stdout.
# Images live in $RIG_DATA/TAG/BACKSTORE; what must be undone at teardown
# (loop, nbd) is appended to its "teardown" file.
bs_make() {
    local bs=$1 variant=$2 tag=$3 d=$RIG_DATA/$3/$1 name=$3-$1 dev qopts=${QLUN_BENCH_QLUN_OPTS:-}
    rm -rf "$d"; mkdir -p "$d"; : >"$d/teardown"
    case "$bs" in
        qlun-qcow2-empty) variant=empty ;;
    esac
    case "$bs" in
        qlun-qcow2|qlun-qcow2-empty)
            make_qcow2 "$d/img.qcow2" "$variant" || return 1
            echo "user:$name:-:$LUN_BYTES:qlun/$d/img.qcow2;format=qcow2$qopts" ;;
        qlun-qcow2-xl2)
            make_qcow2 "$d/img.qcow2" "$variant" extended_l2=on || return 1
            echo "user:$name:-:$LUN_BYTES:qlun/$d/img.qcow2;format=qcow2$qopts" ;;
        qlun-qcow2-overlay)
            # the base is always the full one: the overlay starts empty, so
            # its writes are COW allocations and its reads go to the base
            make_raw "$d/base.raw" "$([ "$variant" = full ] && echo full || echo alloc)" || return 1
            qemu-img create -q -f qcow2 -o cluster_size=64k -b "$d/base.raw" -F raw "$d/img.qcow2" || return 1
            echo "user:$name:-:$LUN_BYTES:qlun/$d/img.qcow2;format=qcow2$qopts" ;;
        qlun-raw)
            make_raw "$d/img.raw" "$variant" || return 1
            echo "user:$name:-:$LUN_BYTES:qlun/$d/img.raw;format=raw$qopts" ;;
        fileio)
            make_raw "$d/img.raw" "$variant" || return 1
            echo "fileio:$name:$d/img.raw:$LUN_BYTES" ;;
        block-loop)
            make_raw "$d/img.raw" "$variant" || return 1
            # direct I/O: without it the loop device caches every block twice
            # (its own page cache over the file's)
            dev=$(losetup -f --show --direct-io=on "$d/img.raw") || return 1
            echo "losetup -d $dev" >>"$d/teardown"
            echo "block:$name:$dev:0" ;;
        user-qcow)
            make_qcow2 "$d/img.qcow2" "$variant" || return 1
            echo "user:$name:-:$LUN_BYTES:qcow/$d/img.qcow2" ;;
        qemu-nbd)
            make_qcow2 "$d/img.qcow2" "$variant" || return 1
            dev=$(attach_nbd "$d/img.qcow2" "$d" "$([ "$tag" = main ] && echo /dev/nbd0 || echo /dev/nbd1)") || return 1
            echo "block:$name:$dev:0" ;;
        *) return 1 ;;
    esac
}

# undo bs_make (after the target is gone)
bs_teardown() {
    local d=$RIG_DATA/$2/$1
    [ -f "$d/teardown" ] && bash "$d/teardown" >/dev/null 2>&1
    rm -rf "$d"
}

# PID of the process serving BACKSTORE's I/O in user space, or nothing (LIO
# fileio/iblock run in the kernel)
server_pid() {
    case "$1" in
        qlun-*|user-qcow) echo "${RIG_TCMU_PID:-}" ;;
        qemu-nbd) cat "$RIG_DATA/$2/$1/qemu-nbd.pid" 2>/dev/null ;;
    esac
}

# utime+stime of PID in clock ticks (0 without a PID)
cpu_ticks() {
    [ -n "$1" ] && [ -r "/proc/$1/stat" ] || { echo 0; return; }
    # field 2 (comm) may hold spaces: count from after the closing ')'
    sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}

# Start each cell with none of BACKSTORE's images in the guest's page cache
# (the buffered backstores would otherwise read what the previous job left).
# Not drop_caches: that also drops the 9p cache of the binaries (fio, python,
# libraries), and reading them back over 9p costs seconds a cell under TCG.
drop_image_cache() {
    local f
    for f in "$RIG_DATA/$2/$1"/*; do
        case "$f" in *.raw|*.qcow2) ;; *) continue ;; esac
        sync "$f"                                          # DONTNEED skips dirty pages
        dd if="$f" iflag=nocache count=0 status=none      # fadvise(DONTNEED) of the file
    done
}

# ---- target set-up ------------------------------------------------------------
# tcmu-runner with both handlers: --handler-path REPLACES the default dir, so
# qlun's build dir alone would lose tcmu-runner's own handler_qcow.so
handler_dir() {
    local hdir
    hdir=$(rig_handler_dir)
    [ -n "$hdir" ] && [ -f "$hdir/handler_qlun.so" ] || bench_die "handler_qlun.so not found (QLUN_HANDLER_DIR='${QLUN_HANDLER_DIR:-}')"
    mkdir -p /run/bench-handlers
    cp "$hdir/handler_qlun.so" /run/bench-handlers/ || bench_die "cannot copy handler_qlun.so"
    if in_list user-qcow "${BACKSTORES[@]}"; then
        cp "$RIG_SYSTEM_HANDLER_DIR/handler_qcow.so" /run/bench-handlers/ \
            || bench_die "user-qcow asked for, but $RIG_SYSTEM_HANDLER_DIR/handler_qcow.so is missing"
    fi
    echo /run/bench-handlers
}

# QLUN_BENCH_TCMU_ENV="K=V ...": the environment of tcmu-runner only
start_target() {
    local hdir kv names=()
    hdir=$(handler_dir) || exit 3
    for kv in ${QLUN_BENCH_TCMU_ENV:-}; do
        [[ "$kv" == *=* ]] || bench_die "QLUN_BENCH_TCMU_ENV: '$kv' is not K=V"
        export "${kv?}"; names+=("${kv%%=*}")
    done
    [ ${#names[@]} -gt 0 ] && rig_log "tcmu-runner environment: ${QLUN_BENCH_TCMU_ENV}"
    rig_target_up "$hdir" || { rig_diag "target up"; bench_die "LIO/D-Bus/tcmu-runner did not come up"; }
    for kv in "${names[@]}"; do
        tr '\0' '\n' <"/proc/$RIG_TCMU_PID/environ" | grep -q "^$kv=" \
            || bench_die "QLUN_BENCH_TCMU_ENV: $kv is not in tcmu-runner's environment"
        unset "$kv"
    done
    [ ${#names[@]} -gt 0 ] && rig_log "tcmu-runner (pid $RIG_TCMU_PID) has ${names[*]} in its environment"
    for kv in target_core_iblock target_core_file loop nbd; do
        modprobe "$kv" || bench_die "modprobe $kv failed"
    done
    rig_start_iscsid || bench_die "iscsid did not start"
    # node records take these at discovery: let iodepth 64 reach the target
    sed -i -e 's/^node.session.queue_depth *=.*/node.session.queue_depth = 128/' \
           -e 's/^node.session.cmds_max *=.*/node.session.cmds_max = 256/' /etc/iscsi/iscsid.conf
}

# prepare DEV (of BACKSTORE): no I/O scheduler in the way; record how the
# initiator sees it (whether zeroing is WRITE SAME or written data explains
# blkdiscard -z and convert times)
tune_dev() {
    local q=/sys/block/${1#/dev/}/queue sd
    echo none >"$q/scheduler" 2>/dev/null
    echo 0 >"$q/add_random" 2>/dev/null
    sd=$(ls -d /sys/block/"${1#/dev/}"/device/scsi_disk/* 2>/dev/null | head -1)
    echo "$2 $1: provisioning_mode=$(cat "$sd/provisioning_mode" 2>/dev/null)" \
        "zeroing_mode=$(cat "$sd/zeroing_mode" 2>/dev/null)" \
        "discard_max_bytes=$(cat "$q/discard_max_bytes")" \
        "write_zeroes_max_bytes=$(cat "$q/write_zeroes_max_bytes")" >>"$BENCH_OUT/devices.txt"
}

main_up() {
    local bs i=0 specs=() spec t0
    for bs in "${BACKSTORES[@]}"; do
        t0=$(thin_now)
        spec=$(bs_make "$bs" full main) || bench_die "cannot create the images of backstore $bs"
        rig_log "backstore $bs: $spec (images made in $(thin_since "$t0") s)"
        specs+=("$spec")
    done
    "${LIO_BENCH[@]}" up "$MAIN_IQN" "${specs[@]}" >"$BENCH_RAW/lio-main.txt" 2>&1 \
        || { cat "$BENCH_RAW/lio-main.txt"; rig_diag "main target"; bench_die "LIO could not set up the main target (backstores: ${BACKSTORES[*]})"; }
    rig_login "$MAIN_IQN" "" "" || { rig_diag login; bench_die "iSCSI login to $MAIN_IQN failed"; }
    for bs in "${BACKSTORES[@]}"; do
        DEV[$bs]=$(rig_lun_dev "$MAIN_IQN" "$i") || bench_die "LUN $i ($bs) did not appear on the initiator"
        tune_dev "${DEV[$bs]}" "$bs"
        rig_log "backstore $bs: LUN $i is ${DEV[$bs]}"
        i=$((i + 1))
    done
}

# scratch_up BACKSTORE VARIANT -> sets SDEV
scratch_up() {
    local spec
    spec=$(bs_make "$1" "$2" scratch) || bench_die "cannot create a fresh image for backstore $1"
    "${LIO_BENCH[@]}" up "$SCRATCH_IQN" "$spec" >"$BENCH_RAW/lio-scratch.txt" 2>&1 \
        || { cat "$BENCH_RAW/lio-scratch.txt"; bench_die "LIO could not set up the scratch target for $1"; }
    rig_login "$SCRATCH_IQN" "" "" >/dev/null || { rig_diag login; bench_die "iSCSI login to the scratch target ($1) failed"; }
    SDEV=$RIG_DEV
    tune_dev "$SDEV" "scratch-$1"
}

scratch_down() {
    rig_logout "$SCRATCH_IQN" >/dev/null 2>&1
    "${LIO_BENCH[@]}" down "$SCRATCH_IQN" >/dev/null 2>&1 || rig_log "warning: scratch target teardown failed"
    bs_teardown "$1" scratch
}

make_convert_source() {
    # ~107 MiB in 15 scattered extents over the LUN size (the ks3200 case)
    thin_make_source "$SRC_IMG" "$LUN_BYTES" "$SRC_EXTENTS" 15 || bench_die "cannot make the convert source"
    rig_log "convert source: $(thin_mib "$(thin_py datasize "$SRC_EXTENTS")") of data in 15 extents, virtual $(thin_mib "$LUN_BYTES")"
}

# ---- jobs ---------------------------------------------------------------------
# fio_args JOB -> the job's fio options, one per line
fio_args() {
    local j=$1 rw bs qd
    case "$j" in
        randread-4k-qd*|randwrite-4k-qd*|randrw-4k-qd*)
            rw=${j%%-*}; qd=${j##*-qd}
            echo "--rw=$rw"; echo "--bs=4k"; echo "--iodepth=$qd"; echo "--size=$RAND_BYTES"
            [ "$rw" = randrw ] && echo "--rwmixread=70" ;;
        alloc-randwrite-4k-qd16)
            echo "--rw=randwrite"; echo "--bs=4k"; echo "--iodepth=16" ;;
        seqwrite-64k|seqread-64k|seqwrite-1m|seqread-1m)
            rw=${j%%-*}; rw=${rw#seq}; bs=${j##*-}
            echo "--rw=$rw"; echo "--bs=$bs"; echo "--iodepth=$([ "$bs" = 1m ] && echo 8 || echo 16)" ;;
    esac
}

# flush-fsync / flush-nofsync: a 4k writer at QD1 (fsync=1 issues a
# SYNCHRONIZE CACHE after every write) beside a 4k random reader at QD1
# in the prefilled region; the cell reports the reader
fio_flush_args() {
    local fsync=0
    [ "$1" = flush-fsync ] && fsync=1
    printf '%s\n' --name=reader --rw=randread --bs=4k --iodepth=1 --offset=0 "--size=$RAND_BYTES" \
        --name=writer --rw=randwrite --bs=4k --iodepth=1 "--fsync=$fsync" \
        "--offset=$RAND_BYTES" "--size=$RAND_BYTES"
}

run_fio() {   # JOB DEV OUT_JSON
    local j=$1 dev=$2 out=$3 args
    if [[ "$j" == flush-* ]]; then
        mapfile -t args < <(fio_flush_args "$j")
    else
        mapfile -t args < <(echo "--name=$j"; fio_args "$j")
    fi
    # the I/O of a wedged stack is not killable; the limit catches the rest
    timeout -k 10 $((RUNTIME * 4 + 120)) \
    fio --filename="$dev" --direct=1 --ioengine=libaio --time_based --runtime="$RUNTIME" \
        --randrepeat=0 --norandommap --output-format=json --output="$out" "${args[@]}" \
        >"$out.log" 2>&1
}

# run_timed JOB DEV LOG: blkdiscard / convert, whole LUN.  Limit: writing
# every byte of the LUN at 5 MiB/s (a device that zeroes by writing).
run_timed() {
    local limit=$((LUN_BYTES / (5 << 20) + 120))
    case "$1" in
        blkdiscard-z) timeout -k 10 "$limit" blkdiscard -z "$2" ;;
        blkdiscard) timeout -k 10 "$limit" blkdiscard "$2" ;;
        convert) timeout -k 10 "$limit" qemu-img convert -t none -O raw -n "$SRC_IMG" "$2" ;;
    esac >"$3" 2>&1
}

# run_cell REP JOB BACKSTORE
run_cell() {
    local rep=$1 j=$2 bs=$3 dev tag=main pid c0 c1 t0 secs rc f=$BENCH_RAW/$1-$2-$3
    if is_scratch_job "$j"; then
        scratch_up "$bs" "$([[ "$j" == alloc-* ]] && echo empty || echo alloc)"
        dev=$SDEV; tag=scratch
    else
        dev=${DEV[$bs]}
    fi
    pid=$(server_pid "$bs" "$tag")
    drop_image_cache "$bs" "$tag"
    c0=$(cpu_ticks "$pid"); t0=$(thin_now)
    case "$j" in
        blkdiscard)
            # a LUN without UNMAP (user:qcow) is a finding, not a failure
            if [ "$(cat "/sys/block/${dev#/dev/}/queue/discard_max_bytes")" = 0 ]; then
                rc=na
            else
                run_timed "$j" "$dev" "$f.log"; rc=$?
            fi ;;
        blkdiscard-z|convert) run_timed "$j" "$dev" "$f.log"; rc=$? ;;
        *) run_fio "$j" "$dev" "$f.json"; rc=$? ;;
    esac
    secs=$(thin_since "$t0"); c1=$(cpu_ticks "$pid")
    local cpu
    cpu=$(awk -v a="$c0" -v b="$c1" -v t="$CLK_TCK" -v p="$pid" 'BEGIN{ if (p == "") print ""; else printf "%.3f", (b-a)/t }')
    if [ "$rc" = na ]; then
        "${REPORT[@]}" cell --rep "$rep" --job "$j" --backstore "$bs" --na "no discard support" >>"$BENCH_RESULTS"
    elif [ "$rc" != 0 ]; then
        CELL_ERRORS=$((CELL_ERRORS + 1))
        rig_log "ERROR: $j on $bs (rep $rep) exited $rc: $(tail -c 300 "$f".log 2>/dev/null)"
        "${REPORT[@]}" cell --rep "$rep" --job "$j" --backstore "$bs" --error "exit $rc" >>"$BENCH_RESULTS"
    elif [[ "$j" == blkdiscard* || "$j" == convert ]]; then
        "${REPORT[@]}" cell --rep "$rep" --job "$j" --backstore "$bs" --secs "$secs" \
            --bytes "$LUN_BYTES" --cpu "$cpu" >>"$BENCH_RESULTS"
    else
        "${REPORT[@]}" cell --rep "$rep" --job "$j" --backstore "$bs" --fio "$f.json" \
            --cpu "$cpu" >>"$BENCH_RESULTS" || { CELL_ERRORS=$((CELL_ERRORS + 1)); rig_log "ERROR: cannot read $f.json"; }
    fi
    rig_log "cell rep $rep $j $bs: $(tail -1 "$BENCH_RESULTS")"
    [ "$tag" = scratch ] && scratch_down "$bs"
    rig_tcmu_alive || { rig_diag "tcmu-runner died"; bench_die "tcmu-runner died during $j on $bs"; }
}

bench_main() {
    local rep j bs t0
    t0=$(thin_now)
    mkdir -p "$BENCH_RAW"; : >"$BENCH_RESULTS"; : >"$BENCH_OUT/devices.txt"
    start_target
    main_up
    in_list convert "${JOBS[@]}" && make_convert_source
    rig_log "set-up done in $(thin_since "$t0") s"
    # interleaved: inside a repetition every job visits every backstore
    # before the next job starts, so slow drifts of the host hit all alike
    for ((rep = 1; rep <= REPEAT; rep++)); do
        for j in "${JOBS[@]}"; do
            for bs in "${BACKSTORES[@]}"; do
                run_cell "$rep" "$j" "$bs"
            done
        done
    done
    rig_logout "$MAIN_IQN" >/dev/null
    "${LIO_BENCH[@]}" down "$MAIN_IQN"
    for bs in "${BACKSTORES[@]}"; do bs_teardown "$bs" main; done
    rig_stop_tcmu
    "${REPORT[@]}" table "$BENCH_RESULTS" --runtime "$RUNTIME" --repeat "$REPEAT" \
        --note "LUN $LUN_SIZE, random jobs over the first $RAND_SIZE; ${QLUN_BENCH_TCMU_ENV:+tcmu-runner env: $QLUN_BENCH_TCMU_ENV; }wall $(thin_since "$t0") s" \
        --text "$BENCH_OUT/table.txt" --json "$BENCH_OUT/table.json" || bench_die "stack-report.py table failed"
    cat "$BENCH_OUT/table.txt"
    [ "$CELL_ERRORS" = 0 ] || { echo "stack-bench: $CELL_ERRORS cell(s) FAILED (ERROR in the table; logs in $BENCH_RAW)" >&2; exit 1; }
    exit 0
}
