#!/usr/bin/python3
"""Compare qlun's image engine with QEMU's on the same images, same run.

    bench/engine-bench.py [--build DIR] [--dir DIR] [--runs N] [--quick]

Each scenario makes fresh, identical images with qemu-img, then times
`qlun-bench` (qlun's image interface, N threads) and `qemu-img bench`
(QEMU's block layer, queue depth N) doing the same requests: same sizes,
same offsets (offset + i*step), same count.  Prints the median of several
runs, the ratio qlun/QEMU (below 1 = qlun faster), and each side's peak
memory (max RSS).  Machines are noisy: read the ratios, not the seconds.
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


# name, image kind, write?, request size, count, depth, step[, cache mode]
SCENARIOS = [
    ("alloc seq 64k write", "empty", True, 64 * 1024, 8192, 4, 64 * 1024),
    ("alloc scattered 4k write", "empty", True, 4096, 8192, 4, 65536 * 3 + 4096),
    ("in-place scattered 4k write", "filled", True, 4096, 30000, 4, 4096 * 1031),
    ("scattered 4k read", "filled", False, 4096, 30000, 4, 4096 * 1031),
    ("seq 1M read", "filled", False, MiB, 512, 2, MiB),
    ("COW 4k write on overlay", "overlay", True, 4096, 8192, 4, 65536 * 3 + 4096),
    ("alloc seq 1M write, cache=none", "empty", True, MiB, 512, 2, MiB, "none"),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--build", default=os.path.join(here, "..", "build"))
    ap.add_argument("--dir", default="/var/tmp")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="one run, small counts")
    a = ap.parse_args()
    qb = os.path.join(a.build, "bench", "qlun-bench")
    maxrss = os.path.join(a.build, "bench", "maxrss")
    if not os.access(qb, os.X_OK):
        sys.exit(f"{qb} not built (scripts/build.sh --handler-only)")
    runs = 1 if a.quick else a.runs
    size = 512 * MiB if a.quick else 2048 * MiB
    work = tempfile.mkdtemp(prefix="qlun-bench-", dir=a.dir)
    img = os.path.join(work, "img.qcow2")
    rows = []
    try:
        for name, kind, write, rsize, count, depth, step, *mode in SCENARIOS:
            cache = mode[0] if mode else "writeback"
            if a.quick:
                count = max(count // 8, 64)
            res = {"qlun": [], "qemu": []}
            rss = {"qlun": 0.0, "qemu": 0.0}
            for _ in range(runs):
                for who in ("qlun", "qemu"):
                    make_image(img, kind, size, 65536)
                    # Filling an image leaves up to 2 GiB dirty in the page
                    # cache; without this the next fdatasync (whoever runs
                    # next) pays for writing it out.
                    os.sync()
                    common = ["-s", str(rsize), "-c", str(count), "-d",
                              str(depth), "-S", str(step)] + (["-w"] if write else [])
                    if who == "qlun":
                        cmd = [qb, "-f", "qcow2", "-t", cache] + common + [img]
                    else:
                        cmd = ["qemu-img", "bench", "-f", "qcow2", "-t",
                               cache, "-i", "threads", "-q"] + common + [img]
                    s, r = timed(maxrss, cmd)
                    res[who].append(s)
                    rss[who] = max(rss[who], r)
                    if write:
                        subprocess.run(["qemu-img", "check", "-q", img], check=True)
            q, e = statistics.median(res["qlun"]), statistics.median(res["qemu"])
            rows.append((name, q, e, q / e, rss["qlun"], rss["qemu"]))
            print(f"{name:30} qlun {q:7.3f} s  qemu {e:7.3f} s  ratio {q / e:5.2f}",
                  flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    print(f"qcow2 engine, {size // MiB} MiB image, 64 KiB clusters, median of {runs}"
          f" run(s); ratio = qlun / QEMU {subprocess.run(['qemu-img', '--version'], capture_output=True, text=True).stdout.split()[2]}")
    print(f"| scenario | qlun s | QEMU s | ratio | qlun max RSS MiB | QEMU max RSS MiB |")
    print("|---|---|---|---|---|---|")
    for n, q, e, r, mq, me in rows:
        print(f"| {n} | {q:.3f} | {e:.3f} | {r:.2f} | {mq:.0f} | {me:.0f} |")


if __name__ == "__main__":
    main()
