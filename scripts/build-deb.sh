#!/bin/sh
# Build the Debian package qlun_<version>_amd64.deb with dpkg-buildpackage
# (debhelper, CMake) and check it with lintian.  Installs its build
# dependencies; run as root.
#
#   scripts/build-deb.sh [OUTDIR]      (default: <repo>/build-deb)
#
# The tracked files of the working tree are built in a copy under OUTDIR,
# so the checkout is left alone.  Prints the package's path, its file list
# and lintian's findings; exits non-zero if the build fails or lintian
# reports an error.
set -eu
repo=$(cd "$(dirname "$0")/.." && pwd)
out=$(mkdir -p "${1:-$repo/build-deb}" && cd "${1:-$repo/build-deb}" && pwd)

# git: the tracked files are what is built (git ls-files below)
PKGS="build-essential debhelper dpkg-dev lintian cmake pkgconf python3
      zlib1g-dev libzstd-dev libglib2.0-dev libjson-glib-dev git"
# shellcheck disable=SC2086
"$(dirname "$0")/apt-install.sh" build-deb.sh $PKGS

# tcmu-runner's headers (no -dev package): fetched once, outside the
# package build, which must not touch apt.
"$repo/scripts/fetch-tcmu-headers.sh" "$out/tcmu"
export QLUN_TCMU_SRC="$out/tcmu/tcmu-src"

version=$(dpkg-parsechangelog -l "$repo/debian/changelog" -S Version)
src="$out/src/qlun-$version"
rm -rf "$out/src"
mkdir -p "$src"
(cd "$repo" && git ls-files -z | xargs -0 tar cf - 2>/dev/null) | (cd "$src" && tar xf -)

(cd "$src" && dpkg-buildpackage -us -uc -b) >"$out/build.log" 2>&1 || {
    tail -n 40 "$out/build.log"
    echo "build-deb.sh: dpkg-buildpackage failed (log: $out/build.log)" >&2
    exit 1
}
deb="$out/qlun_${version}_amd64.deb"
mv "$out/src/qlun_${version}_amd64.deb" "$deb"

echo "package: $deb"
dpkg-deb --info "$deb" | sed -n '/Package:/,$p'
echo "files:"
dpkg-deb --contents "$deb" | awk '{ $1 = $2 = $3 = $4 = $5 = ""; sub(/^ +/, ""); print "  " $0 }'
echo "lintian:"
status=0
# lintian warns when run as root (this script must be, for apt-get).
lintian --info "$deb" 2>&1 | grep -v 'running with root privileges' >"$out/lintian.txt" || true
lintian "$deb" >/dev/null 2>&1 || status=$?
sed 's/^/  /' "$out/lintian.txt"
[ -s "$out/lintian.txt" ] || echo "  (no findings)"
if grep -q '^E:' "$out/lintian.txt"; then
    echo "build-deb.sh: lintian reports errors" >&2
    exit 1
fi
[ "$status" = 0 ] || [ "$status" = 2 ] || { echo "build-deb.sh: lintian failed ($status)" >&2; exit 1; }
