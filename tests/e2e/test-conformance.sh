#!/bin/bash
# qlun end-to-end test: libiscsi's conformance suite, iscsi-test-cu, scored
# per test against a qcow2 LUN and a raw LUN served by qlun over iSCSI.
#
#   tests/e2e/test-conformance.sh            (CTest calls it like this)
#
# Boots the rig once (tests/e2e/guest/conformance.sh): one target, explicit
# ACLs for libiscsi's two initiator names, CHAP; runs
# `iscsi-test-cu --dataloss --test=SCSI.* URL` against each LUN, plus the
# suite's MultipathIO tests over two sessions and its ReadOnly test against
# read-only twins of the LUNs (those results replace the single-path,
# writable run's skips of the same tests).  Then parses each test's outcome
# (CUnit counts skips as passes: see lib-conformance.sh) and prints, per
# LUN, passed / failed / skipped of the suite's 215 SCSI tests and every
# non-pass with its reason.
#
# Fails when, for a qlun LUN, a test fails that is not in
# CONF_ALLOWED_FAIL, a test is skipped for a reason CONF_SKIP_REASONS does
# not explain, or fewer than QLUN_CONFORMANCE_MIN_PASS (170) tests pass.
#
# Exit: 0 pass; 1 fail; 77 skipped (no handler_qlun.so, no rig, no
# iscsi-test-cu).  Env: QLUN_CONFORMANCE_FILEIO=1 adds LIO fileio as a
# reference column (never judged); QLUN_CONFORMANCE_TESTS=SCSI.X.*,...
# runs a subset and only reports; QLUN_CONFORMANCE_VERBOSE=1 passes -V
# (libiscsi's per-command log) to the suite; QLUN_CONFORMANCE_OUT=DIR
# re-judges the outputs of an earlier run without booting; QLUN_E2E_KEEP=1
# keeps the work dir; QLUN_RIG_* (see rig.sh).
set -u
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
. "$HERE/lib-conformance.sh"
START=$(date +%s)
MIN_PASS=${QLUN_CONFORMANCE_MIN_PASS:-170}
# The suite runs three times over (qcow2, raw, and fileio if asked), under
# software emulation, on machines other VMs share: give it time, below
# CTest's timeout for this test (tests/e2e/CMakeLists.txt).
export QLUN_RIG_TIMEOUT=${QLUN_RIG_TIMEOUT:-2400}

if ! command -v iscsi-test-cu >/dev/null; then
    echo "SKIP: iscsi-test-cu not installed (apt-get install libiscsi-bin)"
    exit 77
fi

if [ -n "${QLUN_CONFORMANCE_OUT:-}" ]; then
    WORK=$(cd "$QLUN_CONFORMANCE_OUT/.." && pwd)
    GUEST_RC=0
    VM_SECS=?
else
    BUILD=${QLUN_BUILD_DIR:-$REPO/build}
    if [ -z "${QLUN_HANDLER_DIR:-}" ]; then
        h=$(find "$BUILD" -name handler_qlun.so -type f 2>/dev/null | head -1)
        [ -n "$h" ] && QLUN_HANDLER_DIR=$(dirname "$(realpath "$h")")
    fi
    if [ -z "${QLUN_HANDLER_DIR:-}" ] || [ ! -f "$QLUN_HANDLER_DIR/handler_qlun.so" ]; then
        echo "SKIP: handler_qlun.so not found (scripts/build.sh, or set QLUN_HANDLER_DIR)"
        exit 77
    fi
    export QLUN_HANDLER_DIR QLUN_BUILD_DIR=$BUILD
    if ! command -v qemu-system-x86_64 >/dev/null || ! ls /boot/vmlinuz-* >/dev/null 2>&1; then
        echo "SKIP: no qemu-system-x86_64 or /boot/vmlinuz-* (run scripts/install-rig-deps.sh)"
        exit 77
    fi
    WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/qlun-e2e-conformance.XXXXXX")
    keep() { [ "${QLUN_E2E_KEEP:-0}" = 1 ] || [ "${FAILED:-1}" != 0 ]; }
    trap 'if keep; then echo "work dir kept: $WORK"; else rm -rf "$WORK"; fi' EXIT
    T0=$(date +%s)
    QLUN_RIG_WORKDIR=$WORK QLUN_RIG_QUIET=${QLUN_RIG_QUIET:-1} \
        "$HERE/rig.sh" --disk 8G "$HERE/guest/conformance.sh"
    GUEST_RC=$?
    VM_SECS=$(( $(date +%s) - T0 ))
fi
OUT=$WORK/out

# ---- parse ---------------------------------------------------------------------
SUBSET=0
[ -n "${QLUN_CONFORMANCE_TESTS:-}" ] && [ "$QLUN_CONFORMANCE_TESTS" != 'SCSI.*' ] && SUBSET=1
# every SCSI test the suite has: one missing from the output did not run
iscsi-test-cu -l | awk -F. '$1 == "SCSI" && NF == 3 { print $2 "." $3 }' >"$WORK/all-tests.txt"
TOTAL=$(wc -l <"$WORK/all-tests.txt")
LABELS=()
while read -r label kind _; do
    [ "$kind" = main ] && LABELS+=("$label")
done <"$OUT/runs.txt" 2>/dev/null

declare -A NPASS NFAIL NSKIP SECS
FAILED=0
problems=()
for label in "${LABELS[@]}"; do
    extra=()
    for k in mpath ro; do
        if [ -s "$OUT/cu-$label-$k.txt" ]; then
            conf_parse "$OUT/cu-$label-$k.txt" >"$WORK/parsed-$label-$k.tsv"
            extra+=("$WORK/parsed-$label-$k.tsv")
        fi
    done
    conf_parse "$OUT/cu-$label.txt" >"$WORK/parsed-$label-main.tsv" 2>/dev/null
    conf_merge "$WORK/parsed-$label-main.tsv" "${extra[@]}" >"$WORK/result-$label.tsv"
    if [ "$SUBSET" = 0 ]; then
        # tests that never ran (the run was cut short) fail
        awk -F'\t' 'FILENAME == ARGV[1] { seen[$1] = 1; next }
                    !($1 in seen) { printf "%s\tfailed\tdid not run (the suite stopped early)\n", $1 }' \
            "$WORK/result-$label.tsv" "$WORK/all-tests.txt" >>"$WORK/result-$label.tsv"
    fi
    NPASS[$label]=$(awk -F'\t' '$2 == "passed"' "$WORK/result-$label.tsv" | wc -l)
    NFAIL[$label]=$(awk -F'\t' '$2 == "failed"' "$WORK/result-$label.tsv" | wc -l)
    NSKIP[$label]=$(awk -F'\t' '$2 == "skipped"' "$WORK/result-$label.tsv" | wc -l)
    s=0
    for f in "$OUT/cu-$label.secs" "$OUT/cu-$label-mpath.secs" "$OUT/cu-$label-ro.secs"; do
        [ -s "$f" ] && s=$((s + $(cat "$f")))
    done
    SECS[$label]=$s
done

# ---- report ----------------------------------------------------------------------
echo
echo "================ iscsi-test-cu --dataloss --test=SCSI.* (libiscsi $(dpkg-query -W -f='${Version}' libiscsi-bin 2>/dev/null)) ================"
printf '%-28s' ""; for l in "${LABELS[@]}"; do printf '%12s' "$l"; done; echo
for row in passed failed skipped; do
    printf '%-28s' "$row"
    for l in "${LABELS[@]}"; do
        case $row in passed) v=${NPASS[$l]} ;; failed) v=${NFAIL[$l]} ;; skipped) v=${NSKIP[$l]} ;; esac
        printf '%12s' "$v/$TOTAL"
    done; echo
done
printf '%-28s' "suite time (guest)"; for l in "${LABELS[@]}"; do printf '%12s' "${SECS[$l]} s"; done; echo
echo "(qcow2, raw: user:qlun$( [[ " ${LABELS[*]} " == *" fileio "* ]] && echo "; fileio: LIO's own backstore, for reference, never judged").
 MultipathIO.* ran over two sessions, ReadOnly.* against a readonly=on twin.)"

for l in "${LABELS[@]}"; do
    judge=1
    [ "$l" = fileio ] && judge=0
    echo
    echo "---- $l: ${NPASS[$l]} passed, ${NFAIL[$l]} failed, ${NSKIP[$l]} skipped of $TOTAL ----"
    while IFS=$'\t' read -r t outcome reason; do
        case $outcome in
            failed)
                if [ -n "${CONF_ALLOWED_FAIL[$t]:-}" ]; then
                    verdict="allowed: ${CONF_ALLOWED_FAIL[$t]}"
                else
                    verdict="NOT ALLOWED"
                    [ $judge = 1 ] && problems+=("$l: $t failed: $reason")
                fi
                [ $judge = 1 ] || verdict=reference
                printf '  FAILED   %-36s %s\n           %-36s [%s]\n' "$t" "$reason" "" "$verdict" ;;
            skipped)
                if why=$(conf_skip_reason "$t"); then
                    verdict=$why
                else
                    verdict="UNEXPLAINED SKIP"
                    [ $judge = 1 ] && problems+=("$l: $t skipped: $reason")
                fi
                [ $judge = 1 ] || verdict=reference
                printf '  SKIPPED  %-36s %s\n           %-36s [%s]\n' "$t" "$reason" "" "$verdict" ;;
        esac
    done <"$WORK/result-$l.tsv"
    if [ $judge = 1 ] && [ "$SUBSET" = 0 ] && [ "${NPASS[$l]}" -lt "$MIN_PASS" ]; then
        problems+=("$l: only ${NPASS[$l]} of $TOTAL passed (at least $MIN_PASS wanted)")
    fi
done

echo
echo "================ test-conformance report ================"
if [ -s "$WORK/report.txt" ]; then cat "$WORK/report.txt"; else echo "FAIL  guest wrote no report (rig status $GUEST_RC)"; fi
[ "${#LABELS[@]}" -gt 0 ] || problems+=("no suite output to judge (rig status $GUEST_RC)")
[ "$GUEST_RC" = 0 ] || problems+=("guest checks failed (rig status $GUEST_RC)")
for ((i = 0; i < ${#problems[@]} && i < 30; i++)); do echo "FAIL  ${problems[$i]}"; done
[ "${#problems[@]}" -gt 30 ] && echo "FAIL  ... and $(( ${#problems[@]} - 30 )) more"
echo "---------------------------------------------------------"
echo "VM ${VM_SECS} s; $(( $(date +%s) - START )) s total"
if [ "${#problems[@]}" -gt 0 ]; then
    FAILED=1
    echo "FAIL (outputs: $OUT/cu-*.txt, logs: $WORK/guest.log $WORK/logs/)"
    exit 1
fi
FAILED=0
[ "$SUBSET" = 1 ] && echo "(a subset of the suite: reported, not scored)"
echo "PASS"
exit 0
