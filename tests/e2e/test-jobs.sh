#!/bin/bash
# qlun end-to-end test: block jobs and filters on live LUNs (issue 12),
# one boot: stream a 3-deep chain (with a base, then without), commit of a
# middle layer, active commit and pivot, mirror onto a loop device and
# pivot, mirror and cancel, copy-on-read, throttle — fio writing with
# verify during every job.  Everything happens in the guest
# (tests/e2e/guest/jobs.sh, helpers in lib-jobs.sh), which checks the
# images with qemu-img and writes the jobs' figures (figures.txt).
#
#   tests/e2e/test-jobs.sh            (CTest calls it like this)
#
# Exit: 0 pass, 1 fail, 77 skip.  Env as test-raw-basic.sh;
# QLUN_JOBS_FIO_SECS (default 10): fio's seconds per job and without one.
set -u
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
. "$HERE/host-lib.sh"
e2e_begin jobs 1200
QLUN_RIG_WORKDIR=$WORK "$HERE/rig.sh" --disk 2G "$HERE/guest/jobs.sh"
e2e_finish jobs $?
