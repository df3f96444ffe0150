#!/bin/sh
# Fetch tcmu-runner's headers from Debian's source package (Debian ships
# none in a -dev package).  Nothing of tcmu-runner is committed to qlun.
#
#   scripts/fetch-tcmu-headers.sh DESTDIR
#
# Unpacks the source of Debian's tcmu 1.5.4 into DESTDIR/tcmu-src (once; a
# second call is a no-op).  Adds a deb-src twin of the Debian sources if
# none exists.  Set QLUN_TCMU_SRC to an unpacked tree to skip the download.
set -eu
dest=${1:?usage: fetch-tcmu-headers.sh DESTDIR}
want_version=1.5.4
mkdir -p "$dest"
out="$dest/tcmu-src"
if [ -f "$out/tcmu-runner.h" ]; then
    exit 0
fi
if [ -n "${QLUN_TCMU_SRC:-}" ]; then
    rm -rf "$out"
    cp -r "$QLUN_TCMU_SRC" "$out"
    exit 0
fi

# The Debian source package lives in the deb-src archives.
if ! grep -rqs '^Types:.*deb-src\|^deb-src' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
        sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources \
            > /etc/apt/sources.list.d/qlun-deb-src.sources
    else
        grep '^deb ' /etc/apt/sources.list | sed 's/^deb /deb-src /' \
            > /etc/apt/sources.list.d/qlun-deb-src.list
    fi
    apt-get update -q >/dev/null
fi
command -v dpkg-source >/dev/null || apt-get install -y -q dpkg-dev >/dev/null

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
if ! apt-get source --download-only -q tcmu >/dev/null 2>&1; then
    apt-get update -q >/dev/null
    apt-get source --download-only -q tcmu >/dev/null
fi
# The runner we build against is the one Debian installs: same version.
dsc=
for f in tcmu_"$want_version"-*.dsc; do
    [ -e "$f" ] && { dsc=$f; break; }
done
if [ -z "$dsc" ]; then
    echo "fetch-tcmu-headers: Debian's source is not tcmu $want_version:" \
         tcmu_*.dsc >&2
    exit 1
fi
dpkg-source -x "$dsc" src >/dev/null
mv src "$out.tmp"
mv "$out.tmp" "$out"
echo "tcmu-runner $want_version headers unpacked in $out"
