#!/bin/sh
# Install those of the given Debian packages that are not installed yet:
# one `apt-get update` and one `apt-get install`, and only when something
# is missing, so a set-up machine is left alone.  Run as root.
#
#   scripts/apt-install.sh WHO PACKAGE...     (WHO names the caller in output)
set -eu
who=$1
shift
if [ "$(id -u)" != 0 ]; then
    echo "$who: must run as root (apt-get)" >&2
    exit 1
fi
missing=
for p in "$@"; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null |
        grep -q '^install ok installed$' || missing="$missing $p"
done
if [ -z "$missing" ]; then
    echo "$who: all packages already installed"
    exit 0
fi
echo "$who: installing:$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $missing
