#!/bin/sh
# The main job: export an image as a user:qlun LUN through LIO's iSCSI
# target, attach it with the Linux initiator and print a short report.
# Runs natively if this kernel has LIO and TCMU, else inside the VM rig.
# Installs what it needs.
# Run as root (or with sudo):
#   scripts/demo.sh
set -eu
repo=$(cd "$(dirname "$0")/.." && pwd)
"$repo/scripts/install-deps.sh" >/dev/null
"$repo/scripts/build.sh" --handler-only >/dev/null
exec "$repo/tests/e2e/demo.sh" "$@"
