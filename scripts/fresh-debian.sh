#!/bin/sh
# Check the install steps: run README's two set-up commands, each in a clean
# Debian 12 (bookworm) root of its own, as a fresh machine's root user would,
# with no sudo and nothing installed but what our own scripts install.
#
#   scripts/fresh-debian.sh [--fresh] [--no-demo] [--no-e2e]
#                           [--variant minbase|buildd|default] [--src TREE] [DIR]
#
# 1. debootstraps bookworm (--variant=minbase unless --variant says otherwise)
#    from the Debian mirror configured on this machine, once, and caches the
#    result as DIR/bookworm-<variant>.tar; later runs unpack that tarball
#    (--fresh: debootstrap again).  Installs debootstrap here if missing.
# 2. makes a root afresh from it for each command, DIR/root-demo and then
#    DIR/root (an installed root is never reused, not even by the other
#    command: it would hide a missing install step), gives it this
#    machine's Debian apt sources and resolv.conf;
# 3. git-clones TREE (default: the clone this script is in) at its HEAD into
#    /root/qlun: only committed files go in, as in CI;
# 4. mounts /proc, /sys, /dev and /dev/pts in the root (unmounted on exit);
# 5. runs README's command in /root/qlun with chroot, as root, without sudo,
#    in an empty environment: `scripts/demo.sh` (the main job; in the chroot
#    it boots the VM rig, as on any host without LIO; --no-demo leaves it
#    out) in DIR/root-demo, then `scripts/test-all.sh` in DIR/root;
# 6. checks (in DIR/root) that every package listed by install-deps.sh/install-rig-deps.sh
#    is installed and that the commands the VM rig and the e2e tests call
#    exist in the root;
# 7. prints a summary: time, result, what was and was not run.
#
# The full run includes the end-to-end tests: the VM rig works in the chroot
# (QEMU TCG with the chroot's kernel, its "/" exported over 9p).  It takes
# about an hour or more; on a busy 2-CPU machine the rig's own time limits
# (600-900 s per test) may expire, which is a load problem, not an install
# one (the test's log shows how far it got).  --no-e2e
# sets QLUN_SKIP_E2E=1 for test-all.sh: install steps, build and the
# ASan/UBSan unit and interop tests only, and the summary says the e2e stage
# was NOT run.
#
# DIR defaults to /var/tmp/qlun-fresh-debian.  The roots are kept after the
# run for inspection (about 2-3 GB each); the next run replaces them.  Output
# of the commands also goes to DIR/demo.log and DIR/test-all.log.  Run as root.
set -eu

usage() { sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

fresh=0 skip_e2e=0 skip_demo=0 variant=minbase src='' dir=/var/tmp/qlun-fresh-debian
while [ $# -gt 0 ]; do
    case "$1" in
        --fresh) fresh=1 ;;
        --no-e2e) skip_e2e=1 ;;
        --no-demo) skip_demo=1 ;;
        --variant) variant=${2:?--variant needs a value}; shift ;;
        --variant=*) variant=${1#--variant=} ;;
        --src) src=${2:?--src needs a value}; shift ;;
        --src=*) src=${1#--src=} ;;
        -h|--help) usage; exit 0 ;;
        -*) echo "fresh-debian.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
        *) dir=$1 ;;
    esac
    shift
done

say() { echo "fresh-debian.sh: $*"; }
die() { echo "fresh-debian.sh: ERROR: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, mount, chroot)"
case "$variant" in
    minbase|buildd) vopt=--variant=$variant ;;
    default) vopt= ;;   # debootstrap's own default: required + important
    *) die "--variant: minbase, buildd or default, not $variant" ;;
esac
start=$(date +%s)

[ -n "$src" ] || src=$(cd "$(dirname "$0")/.." && pwd)
src=$(cd "$src" && git rev-parse --show-toplevel) || die "$src is not a git tree"
rev=$(git -C "$src" rev-parse HEAD)
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
case "$dir" in /) die "DIR must not be /" ;; esac
tarball=$dir/bookworm-$variant.tar
log=$dir/test-all.log

# ---- the Debian mirror this machine uses -----------------------------------
# First URI of a deb822 stanza (debian.sources) or one-line "deb" entry
# (sources.list) whose suite is exactly bookworm.
mirror=
if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    mirror=$(awk '
        function flush() { if (deb && suite && uri != "" && out == "") out = uri
                           deb = suite = 0; uri = "" }
        /^[ \t]*$/ { flush(); next }
        /^Types:/ { for (i = 2; i <= NF; i++) if ($i == "deb") deb = 1 }
        /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == "bookworm") suite = 1 }
        /^URIs:/ { uri = $2 }
        END { flush(); print out }' /etc/apt/sources.list.d/debian.sources)
fi
if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
    mirror=$(sed -n 's/^deb[ \t]\{1,\}\(\[[^]]*\][ \t]\{1,\}\)\{0,1\}\([^ \t]\{1,\}\)[ \t]\{1,\}bookworm[ \t].*/\2/p' \
             /etc/apt/sources.list | head -n1)
fi
[ -n "$mirror" ] || die "no 'bookworm' Debian mirror in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list"

# ---- mounts and cleanup -----------------------------------------------------
mounted=
umount_all() {
    for m in $mounted; do
        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null ||
            echo "fresh-debian.sh: WARNING: cannot unmount $m" >&2
    done
    mounted=
}
# mount points at or below $1, deepest first
mounts_under() {
    awk -v p="$1" '$5 == p || index($5, p "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r
}
# Remove a root only when nothing is mounted in it (a bound /dev would
# otherwise lose the host's device nodes); --one-file-system as a backstop.
remove_root() {
    for m in $(mounts_under "$1"); do
        umount "$m" 2>/dev/null || umount -l "$m" || true
    done
    [ -z "$(mounts_under "$1")" ] || die "still mounted under $1: $(mounts_under "$1" | tr '\n' ' ')"
    rm -rf --one-file-system "$1"
}
trap 'umount_all' EXIT
trap 'exit 130' INT TERM

# ---- step 1: the cached debootstrap ------------------------------------------
t0=$(date +%s)
if [ "$fresh" = 1 ] || [ ! -s "$tarball" ]; then
    if ! command -v debootstrap >/dev/null; then
        say "installing debootstrap on this machine"
        DEBIAN_FRONTEND=noninteractive apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=600 --no-install-recommends debootstrap
    fi
    say "debootstrap $vopt bookworm from $mirror"
    remove_root "$dir/base.tmp"
    # shellcheck disable=SC2086
    debootstrap $vopt bookworm "$dir/base.tmp" "$mirror" >"$dir/debootstrap.log" 2>&1 ||
        { tail -n 30 "$dir/debootstrap.log" >&2; die "debootstrap failed (log: $dir/debootstrap.log)"; }
    # no package cache in the tarball: the run must download like a new machine
    rm -f "$dir/base.tmp"/var/cache/apt/archives/*.deb
    tar -C "$dir/base.tmp" --numeric-owner -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
    remove_root "$dir/base.tmp"
    base_how="debootstrap --variant=$variant (new, cached as $tarball)"
else
    base_how="cached debootstrap --variant=$variant ($tarball, $(date -u -r "$tarball" '+%Y-%m-%d %H:%M UTC'); --fresh to redo)"
fi

# ---- steps 2-5, once per README command, each in a root of its own ---------------
# (one root for both would let the second command use what the first
# installed, hiding a missing install step of its own)
in_root() {
    chroot "$root" /usr/bin/env -i HOME=/root USER=root LOGNAME=root SHELL=/bin/sh \
        TERM="${TERM:-dumb}" PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        "$@"
}

# new_root NAME: a fresh root DIR/NAME from the tarball, with this machine's
# apt sources, the repository's HEAD in /root/qlun, and the mounts.
new_root() {
    umount_all
    root=$dir/$1
    say "new root $root from $tarball"
    remove_root "$root"
    mkdir -p "$root"
    tar -C "$root" --numeric-owner -xpf "$tarball"
    # This machine's Debian sources (as a fresh install of it would have them).
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
        rm -f "$root/etc/apt/sources.list"
        cp /etc/apt/sources.list.d/debian.sources "$root/etc/apt/sources.list.d/debian.sources"
    else
        cp /etc/apt/sources.list "$root/etc/apt/sources.list"
    fi
    cp -L /etc/resolv.conf "$root/etc/resolv.conf"
    # The usual chroot guard: package scripts must not start daemons (iscsid,
    # dbus, tcmu-runner) here, where they would run outside any VM.
    printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
    chmod 755 "$root/usr/sbin/policy-rc.d"
    # The repository, committed files only.
    git clone -q --no-hardlinks "$src" "$root/root/qlun"
    git -C "$root/root/qlun" checkout -q --detach "$rev"
    mount -t proc proc "$root/proc" && mounted="$root/proc $mounted"
    mount -t sysfs sysfs "$root/sys" && mounted="$root/sys $mounted"
    mount --bind /dev "$root/dev" && mounted="$root/dev $mounted"
    mount --bind /dev/pts "$root/dev/pts" && mounted="$root/dev/pts $mounted"
}

# run_readme NAME COMMAND [VAR=VALUE...]: COMMAND (a README set-up command)
# in /root/qlun of the current root, as root, no sudo, in an empty
# environment but for the VARs; output shown and kept in DIR/NAME.log, exit
# status in DIR/NAME.rc.
run_readme() {
    name=$1 cmd=$2
    shift 2
    rm -f "$dir/$name.rc"
    # (set -e holds in the pipeline's subshell too: keep the status, do not exit)
    { st=0
      in_root "$@" /bin/sh -c "cd /root/qlun && exec $cmd" 2>&1 || st=$?
      echo "$st" >"$dir/$name.rc"; } | tee "$dir/$name.log"
}
readme_rc() { cat "$dir/$1.rc" 2>/dev/null || echo none; }

if [ -n "$(git -C "$src" status --porcelain --untracked-files=no)" ]; then
    say "WARNING: $src has uncommitted changes; they are NOT copied (HEAD only)"
fi
say "source: $(git -C "$src" log -1 --format='%h %s' "$rev")"
t_base=$(( $(date +%s) - t0 ))

demo_rc=skipped t_demo=0
if [ "$skip_demo" = 0 ]; then
    new_root root-demo
    say "running README's main command scripts/demo.sh in $root"
    t0=$(date +%s)
    run_readme demo scripts/demo.sh
    demo_rc=$(readme_rc demo)
    t_demo=$(( $(date +%s) - t0 ))
fi

new_root root
if [ "$skip_e2e" = 1 ]; then
    e2e_env=QLUN_SKIP_E2E=1
    say "running scripts/test-all.sh WITHOUT the end-to-end stage (--no-e2e)"
else
    e2e_env=QLUN_SKIP_E2E=0
    say "running scripts/test-all.sh (all of it, e2e included) in the root"
fi
t0=$(date +%s)
run_readme test-all scripts/test-all.sh "$e2e_env"
rc=$(readme_rc test-all)
t_test=$(( $(date +%s) - t0 ))

# ---- step 6: is everything the tests use installed? ---------------------------------
# Packages the install scripts list, and the commands rig.sh and the e2e tests
# call.  After a full run the e2e results already show it; after --no-e2e this
# is the only evidence for the rig's part of the install steps.
say "checking packages and commands in the root"
check_rc=0
in_root /bin/sh -s <<'EOF' || check_rc=1
cd /root/qlun || exit 1
bad=0
pkgs=$(for f in scripts/install-deps.sh scripts/install-rig-deps.sh; do
           sed -n '/^ *PKGS="/,/"/p' "$f" | sed 's/.*PKGS="//; s/"//'
       done)
[ -n "$pkgs" ] || { echo "  cannot read the package lists"; exit 1; }
for p in $pkgs; do
    if ! dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
        echo "  MISSING package $p"; bad=1
    fi
done
for c in qemu-system-x86_64 busybox cpio gzip xz zstd file mkfs.ext4 debugfs timeout \
         qemu-img qemu-io python3 tcmu-runner targetcli iscsiadm iscsid \
         sg_inq sg_vpd sg_readcap sg_raw sg_sync fio iscsi-test-cu iscsi-inq \
         dbus-daemon dbus-send modprobe insmod losetup blockdev blkdiscard fstrim \
         fallocate mount ip pidof od cmp md5sum awk jq; do
    command -v "$c" >/dev/null || { echo "  MISSING command $c"; bad=1; }
done
[ -e /usr/lib/x86_64-linux-gnu/qemu/block-iscsi.so ] ||
    { echo "  MISSING QEMU's iSCSI block driver (qemu-block-extra)"; bad=1; }
k=
for f in /boot/vmlinuz-*; do
    [ -e "$f" ] || continue
    v=${f#/boot/vmlinuz-}
    ls /lib/modules/"$v"/kernel/drivers/target/target_core_user.ko* >/dev/null 2>&1 && k=$v
done
[ -n "$k" ] || { echo "  MISSING a /boot/vmlinuz-* with target_core_user"; bad=1; }
[ "$bad" = 0 ] && echo "  all $(echo $pkgs | wc -w) listed packages installed; rig and e2e commands present; rig kernel $k"
exit $bad
EOF

umount_all

# ---- step 7: summary ------------------------------------------------------------------
wall=$(( $(date +%s) - start ))
if [ "$rc" = 0 ] && [ "$check_rc" = 0 ] &&
   { [ "$demo_rc" = 0 ] || [ "$demo_rc" = skipped ]; }; then result=PASS; else result=FAIL; fi
echo
echo "================ fresh-debian.sh summary ================"
echo "source:      $src @ $(git -C "$src" log -1 --format=%h "$rev") (committed files only)"
echo "root:        $root; base: $base_how"
echo "mirror:      $mirror"
if [ "$skip_demo" = 1 ]; then
    echo "NOT RUN:     README's main command scripts/demo.sh (--no-demo)"
else
    echo "demo.sh:     exit status $demo_rc ($t_demo s, in its own new root $dir/root-demo; log $dir/demo.log)"
    tail -n 25 "$dir/demo.log" | sed "s/^/             | /"
fi
echo "ran:         scripts/test-all.sh as root in chroot, no sudo: install-deps.sh +"
echo "             install-rig-deps.sh, build.sh, ASan/UBSan unit+interop ctest"
if [ "$skip_e2e" = 1 ]; then
    echo "NOT RUN:     the end-to-end tests in the VM rig (--no-e2e, QLUN_SKIP_E2E=1);"
    echo "             only their packages and commands were checked"
else
    echo "             + the end-to-end tests in the VM rig (QEMU TCG inside the chroot)"
fi
echo "test-all.sh: exit status $rc ($t_test s; log $log)"
grep -E '^[0-9]+% tests passed|^The following tests FAILED|^[[:space:]]+[0-9]+ - |^test-all.sh: ' "$log" |
    sed 's/^/             /' || true
echo "checks:      packages and rig/e2e commands: $([ "$check_rc" = 0 ] && echo ok || echo MISSING, see above)"
echo "time:        ${wall} s wall (cached debootstrap ready in ${t_base} s)"
echo "RESULT:      $result"
[ "$result" = PASS ]
