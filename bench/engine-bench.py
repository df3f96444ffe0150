#!/usr/bin/python3
"""Compare qlun's image engine with QEMU's on the same images, same run.

    bench/engine-bench.py [--build DIR] [--dir DIR] [--runs N] [--quick]
                          [--only SUBSTRING]

Each scenario makes fresh, identical images with qemu-img, then times
`qlun-bench` (qlun's image interface, N threads) and `qemu-img bench`
(QEMU's block layer, queue depth N) twice: with `-i threads` and with
`-i io_uring` (reported as n/a, with the reason, if this qemu-img cannot).
All three do the same requests: same sizes, same count, and the same
offsets: qemu-img bench's sequence (first OFFSET, then previous + STEP
modulo the image size, or modulo image size - request size from QEMU 10.1),
which qlun-bench reproduces; each scenario first checks that qlun-bench's
offsets equal this script's model of qemu-img's loop.  Prints the median of
several runs, the ratios qlun/QEMU (below 1 = qlun faster) against both
QEMU modes, and each side's peak memory (max RSS).  Machines are noisy:
read the ratios, not the seconds.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

MiB = 1 << 20


def sh(*args):
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)


def timed(maxrss, cmd):
    """Run cmd under bench/maxrss; return (seconds, max RSS in MiB)."""
    t0 = time.monotonic()
    p = subprocess.run([maxrss] + cmd, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True)
    secs = time.monotonic() - t0
    if p.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{p.stderr}")
    kib = int(p.stderr.rsplit("maxrss:", 1)[1])
    return secs, kib / 1024


def fill(path, fmt, size, byte):
    """Write a pattern over the whole image (qemu-io caps one request)."""
    chunk = 256 * MiB
    cmds = []
    for off in range(0, size, chunk):
        cmds += ["-c", f"write -P {byte} {off} {min(chunk, size - off)}"]
    sh("qemu-io", "-f", fmt, *cmds, path)


def make_image(path, kind, size, cluster):
    if os.path.exists(path):
        os.unlink(path)
    if kind == "overlay":
        base = path + ".base"
        sh("qemu-img", "create", "-q", "-f", "raw", base, str(size))
        fill(base, "raw", size, 0x5a)
        sh("qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b",
           os.path.basename(base), "-o", f"cluster_size={cluster}", path)
        return
    sh("qemu-img", "create", "-q", "-f", "qcow2", "-o",
       f"cluster_size={cluster}", path, str(size))
    if kind == "filled":
        fill(path, "qcow2", size, 0x33)


GiB = 1 << 30
TABLE_SPAN = 512 * MiB  # guest bytes one 64 KiB-cluster L2 table maps


def make_spread(path, size, cluster):
    """An image of `size` whose every L2 table exists (one 4 KiB write per
    table's span): scattered reads over it cost L2 lookups, not data I/O,
    so they show how much of the disk the L2 cache maps."""
    sh("qemu-img", "create", "-q", "-f", "qcow2", "-o",
       f"cluster_size={cluster}", path, str(size))
    cmds = []
    for off in range(0, size, TABLE_SPAN):
        cmds += ["-c", f"write -P 7 {off} 4k"]
    sh("qemu-io", "-f", "qcow2", *cmds, path)


# name, image kind, write?, request size, count, depth, step[, options]
# options: cache (mode), size (fixed virtual size, also under --quick)
SCENARIOS = [
    ("alloc seq 64k write", "empty", True, 64 * 1024, 8192, 4, 64 * 1024),
    ("alloc scattered 4k write", "empty", True, 4096, 8192, 4, 65536 * 3 + 4096),
    ("in-place scattered 4k write", "filled", True, 4096, 30000, 4, 4096 * 1031),
    ("scattered 4k read", "filled", False, 4096, 30000, 4, 4096 * 1031),
    ("seq 1M read", "filled", False, MiB, 512, 2, MiB),
    ("COW 4k write on overlay", "overlay", True, 4096, 8192, 4, 65536 * 3 + 4096),
    ("alloc seq 1M write, cache=none", "empty", True, MiB, 512, 2, MiB,
     {"cache": "none"}),
    # 128 L2 tables (8 MiB); consecutive requests visit them in turn, so an
    # L2 cache smaller than the disk's tables misses on every request.
    ("scattered 4k read, 64 GiB disk", "spread", False, 4096, 30000, 4,
     TABLE_SPAN + 4096 * 3, {"size": 64 * GiB}),
    # The same without the page cache: a miss is a real 64 KiB table read.
    ("scattered 4k read, 64 GiB disk, cache=none", "spread", False, 4096,
     30000, 4, TABLE_SPAN + 4096 * 3, {"size": 64 * GiB, "cache": "none"}),
]


def qemu_version():
    out = subprocess.run(["qemu-img", "--version"], capture_output=True,
                         text=True).stdout.split()
    return out[2] if len(out) > 2 else "?"


def wrap_rule(version):
    """qemu-img bench wraps offsets modulo the image size up to QEMU 10.0,
    modulo image size - request size from 10.1 (commit ff2ab634)."""
    try:
        major, minor = (int(x) for x in version.split(".")[:2])
    except ValueError:
        return "usable"
    return "usable" if (major, minor) >= (10, 1) else "image"


def qemu_offsets(offset, step, count, bufsize, image_size, rule):
    """qemu-img bench's submission loop: use the offset, then advance it."""
    out = []
    for _ in range(count):
        out.append(offset)
        offset += step
        if rule == "image":
            offset %= image_size
        else:
            offset = 0 if image_size <= bufsize else offset % (image_size - bufsize)
    return out


def check_offsets(qb, img, common, count, rsize, step, size, rule):
    """qlun-bench must issue exactly qemu-img bench's offsets."""
    p = subprocess.run([qb, "-f", "qcow2", "--wrap", rule, "--print-offsets"]
                       + common + [img], capture_output=True, text=True)
    got = [int(x) for x in p.stdout.split()]
    want = qemu_offsets(0, step, count, rsize, size, rule)
    if p.returncode != 0 or got != want:
        first = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b),
                     min(len(got), len(want)))
        sys.exit(f"qlun-bench offsets differ from qemu-img bench's at request "
                 f"{first} ({p.stderr.strip()})")
    if any(o + rsize > size for o in want):
        sys.exit("a request would cross the image end: qemu-img bench fails it")


def io_uring_works(work):
    """None if `qemu-img bench -i io_uring` runs here, else why not."""
    probe = os.path.join(work, "probe.qcow2")
    sh("qemu-img", "create", "-q", "-f", "qcow2", probe, "1M")
    p = subprocess.run(["qemu-img", "bench", "-f", "qcow2", "-i", "io_uring",
                        "-c", "1", "-q", probe], capture_output=True, text=True)
    os.unlink(probe)
    if p.returncode == 0:
        return None
    return (p.stderr.strip().splitlines() or ["exit %d" % p.returncode])[-1]


def bench_cmd(who, qb, cache, common, img, rule):
    if who == "qlun":
        return [qb, "-f", "qcow2", "-t", cache, "--wrap", rule] + common + [img]
    aio = "threads" if who == "qemu" else "io_uring"
    return ["qemu-img", "bench", "-f", "qcow2", "-t", cache, "-i", aio,
            "-q"] + common + [img]


def ratio(a, b):
    return f"{a / b:5.2f}" if a and b else "  n/a"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--build", default=os.path.join(here, "..", "build"))
    ap.add_argument("--dir", default="/var/tmp")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="one run, small counts")
    ap.add_argument("--only", help="run the scenarios whose name contains this")
    a = ap.parse_args()
    qb = os.path.join(a.build, "bench", "qlun-bench")
    maxrss = os.path.join(a.build, "bench", "maxrss")
    if not os.access(qb, os.X_OK):
        sys.exit(f"{qb} not built (scripts/build.sh --handler-only)")
    runs = 1 if a.quick else a.runs
    default_size = 512 * MiB if a.quick else 2048 * MiB
    version = qemu_version()
    rule = wrap_rule(version)
    work = tempfile.mkdtemp(prefix="qlun-bench-", dir=a.dir)
    img = os.path.join(work, "img.qcow2")
    sides = ["qlun", "qemu", "qemu-uring"]
    why = io_uring_works(work)
    if why:
        print(f"qemu-img {version} cannot bench with -i io_uring ({why}): "
              "that column is n/a", flush=True)
        sides.remove("qemu-uring")
    rows = []
    try:
        for name, kind, write, rsize, count, depth, step, *more in SCENARIOS:
            if a.only and a.only not in name:
                continue
            opts = more[0] if more else {}
            cache = opts.get("cache", "writeback")
            size = opts.get("size", default_size)
            if a.quick:
                count = max(count // 8, 64)
            common = ["-s", str(rsize), "-c", str(count), "-d",
                      str(depth), "-S", str(step)] + (["-w"] if write else [])
            res = {who: [] for who in sides}
            rss = {who: 0.0 for who in sides}
            for r in range(runs):
                for who in sides:
                    if kind == "spread":
                        if os.path.exists(img):
                            os.unlink(img)
                        make_spread(img, size, 65536)
                    else:
                        make_image(img, kind, size, 65536)
                    if r == 0 and who == "qlun":
                        check_offsets(qb, img, common, count, rsize, step,
                                      size, rule)
                    # Filling an image leaves up to 2 GiB dirty in the page
                    # cache; without this the next fdatasync (whoever runs
                    # next) pays for writing it out.
                    os.sync()
                    s, m = timed(maxrss, bench_cmd(who, qb, cache, common, img,
                                                   rule))
                    res[who].append(s)
                    rss[who] = max(rss[who], m)
                    if write:
                        subprocess.run(["qemu-img", "check", "-q", img], check=True)
            med = {who: statistics.median(res[who]) for who in sides}
            q, e, u = med["qlun"], med["qemu"], med.get("qemu-uring")
            rows.append((name, size, q, e, u, rss))
            print(f"{name:32} qlun {q:7.3f} s  qemu threads {e:7.3f} s  "
                  f"io_uring {u or 0:7.3f} s  ratio {ratio(q, e)} / "
                  f"{ratio(q, u)}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    print(f"qcow2 engine, {default_size // MiB} MiB images unless the scenario "
          f"says, 64 KiB clusters, median of {runs} run(s); ratio = qlun / "
          f"QEMU {version} (offsets wrap modulo the "
          f"{'image size' if rule == 'image' else 'image size - request size'})")
    print("| scenario | qlun s | QEMU threads s | QEMU io_uring s | ratio "
          "vs threads | ratio vs io_uring | max RSS MiB qlun / threads / "
          "io_uring |")
    print("|---|---|---|---|---|---|---|")
    for n, size, q, e, u, rss in rows:
        us = f"{u:.3f}" if u else "n/a"
        mem = " / ".join(f"{rss[w]:.0f}" if w in rss else "n/a"
                         for w in ("qlun", "qemu", "qemu-uring"))
        print(f"| {n} | {q:.3f} | {e:.3f} | {us} | {ratio(q, e).strip()} | "
              f"{ratio(q, u).strip()} | {mem} |")


if __name__ == "__main__":
    main()
