#!/usr/bin/python3
"""Helpers for the thin-LUN e2e tests (guest side; see lib-thin.sh).

  lib-thin.py layout SIZE COUNT           -> "OFFSET LENGTH PATTERN" lines: a
      deterministic scattered data layout (non-overlapping, 4 KiB aligned,
      some extents not cluster aligned, first at 0, last ending at SIZE)
  lib-thin.py qemu-io-cmds EXTENTS        -> one qemu-io "write -P" per line
  lib-thin.py datasize EXTENTS            -> sum of the lengths
  lib-thin.py stat JSON KEY...            -> values (KEY: a top-level field, or
      cmd:NAME for commands[NAME]; missing -> 0)
  lib-thin.py deltas OLD.json NEW.json KEY... -> NEW-OLD per KEY, one line
  lib-thin.py mapnorm [--size N] < map.json -> coalesced "START LENGTH data|zero|other"
      extents of `qemu-img map --output=json` (offsets, depth, present dropped)
  lib-thin.py verify DEV EXTENTS [--zero OFF:LEN]... RANGE...
      read each RANGE (OFF:LEN) of DEV with O_DIRECT and compare with what the
      layout says (PATTERN inside an extent, 0 outside; --zero ranges must read
      as 0).  Prints the first difference; exit 1 on a difference.
  lib-thin.py samples EXTENTS SIZE N WIN  -> N ranges of WIN bytes inside the
      zero runs plus the 4 KiB on either side of every extent boundary
"""
import json
import mmap
import os
import random
import sys


def read_extents(path):
    ext = []
    with open(path) as f:
        for line in f:
            p = line.split()
            if len(p) >= 3:
                ext.append((int(p[0]), int(p[1]), int(p[2], 0)))
    ext.sort()
    return ext


def cmd_layout(size, count):
    size, count = int(size), int(count)
    rnd = random.Random(0x9C3200)
    lens = [1 << 20, 4 << 20, 8 << 20, 12 << 20, 16 << 20, (3 << 20) + 4096,
            (5 << 20) + 12288, 65536, (7 << 20) + 28672, 10 << 20]
    slot = size // count
    slot -= slot % 65536
    out = []
    for i in range(count):
        ln = lens[i % len(lens)]
        base = i * slot
        if i == 0:
            off = 0
        elif i == count - 1:
            off = size - ln
        else:
            room = slot - ln - 65536
            off = base + 65536 + rnd.randrange(0, room // 4096) * 4096
        assert off >= base and off + ln <= (base + slot if i < count - 1 else size)
        out.append((off, ln, 0x11 + (i * 7) % 0xee))
    for off, ln, pat in out:
        print(off, ln, "0x%02x" % pat)


def cmd_qemu_io_cmds(path):
    for off, ln, pat in read_extents(path):
        print("write -q -P 0x%02x %d %d" % (pat, off, ln))


def cmd_datasize(path):
    print(sum(e[1] for e in read_extents(path)))


def cmd_stat(path, *keys):
    with open(path) as f:
        d = json.load(f)
    for k in keys:
        if k.startswith("cmd:"):
            print(d.get("commands", {}).get(k[4:], 0))
        else:
            print(d.get(k, 0))


def cmd_deltas(old, new, *keys):
    def load(path):
        try:
            with open(path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}
    a, b = load(old), load(new)

    def get(d, k):
        if k.startswith("cmd:"):
            return int(d.get("commands", {}).get(k[4:], 0))
        return int(d.get(k, 0))
    print(" ".join(str(get(b, k) - get(a, k)) for k in keys))


def cmd_mapnorm(*args):
    size = None
    if len(args) == 2 and args[0] == "--size":
        size = int(args[1])
    ext = json.load(sys.stdin)
    out = []
    for e in ext:
        if e.get("data"):
            kind = "data"
        elif e.get("zero"):
            kind = "zero"
        else:
            kind = "other"
        start, ln = int(e["start"]), int(e["length"])
        if size is not None:
            if start >= size:
                continue
            ln = min(ln, size - start)
        if out and out[-1][2] == kind and out[-1][0] + out[-1][1] == start:
            out[-1][1] += ln
        else:
            out.append([start, ln, kind])
    for s, ln, k in out:
        print(s, ln, k)


def parse_range(text):
    o, l = text.split(":")
    return int(o, 0), int(l, 0)


def expected(ext, zeros, off, ln):
    buf = bytearray(ln)
    for eo, el, pat in ext:
        a, b = max(eo, off), min(eo + el, off + ln)
        if a < b:
            buf[a - off:b - off] = bytes([pat]) * (b - a)
    for zo, zl in zeros:
        a, b = max(zo, off), min(zo + zl, off + ln)
        if a < b:
            buf[a - off:b - off] = bytes(b - a)
    return buf


def cmd_verify(dev, extpath, *args):
    ext = read_extents(extpath)
    zeros, ranges = [], []
    it = iter(args)
    for a in it:
        if a == "--zero":
            zeros.append(parse_range(next(it)))
        else:
            ranges.append(parse_range(a))
    fd = os.open(dev, os.O_RDONLY | os.O_DIRECT)
    chunk = 4 << 20
    buf = mmap.mmap(-1, chunk)
    total = 0
    try:
        for off, ln in ranges:
            # O_DIRECT: widen to 4 KiB
            a = off - off % 4096
            b = off + ln
            b += (-b) % 4096
            pos = a
            while pos < b:
                n = min(chunk, b - pos)
                got = os.preadv(fd, [memoryview(buf)[:n]], pos)
                if got != n:
                    print("short read at %d: %d of %d" % (pos, got, n))
                    return 1
                want = expected(ext, zeros, pos, n)
                have = buf[:n]
                if have != want:
                    i = next(i for i in range(n) if have[i] != want[i])
                    print("DIFFER at byte %d: device 0x%02x, expected 0x%02x (range %d:%d)"
                          % (pos + i, have[i], want[i], off, ln))
                    return 1
                pos += n
                total += n
    finally:
        os.close(fd)
    print("identical: %d ranges, %d bytes read" % (len(ranges), total))
    return 0


def cmd_samples(extpath, size, n, win):
    ext = read_extents(extpath)
    size, n, win = int(size), int(n), int(win)
    out = []
    for eo, el, _ in ext:
        for p in (eo, eo + el):
            a, b = max(0, p - 4096), min(size, p + 4096)
            if a < b:
                out.append((a, b - a))
    gaps = []
    prev = 0
    for eo, el, _ in ext:
        if eo - prev >= win:
            gaps.append((prev, eo))
        prev = eo + el
    if size - prev >= win:
        gaps.append((prev, size))
    rnd = random.Random(7)
    for _ in range(n):
        ga, gb = gaps[rnd.randrange(len(gaps))]
        o = ga + rnd.randrange(0, (gb - ga - win) // 4096 + 1) * 4096
        out.append((o, win))
    for o, l in out:
        print("%d:%d" % (o, l))


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    fn = {"layout": cmd_layout, "qemu-io-cmds": cmd_qemu_io_cmds,
          "datasize": cmd_datasize, "stat": cmd_stat, "deltas": cmd_deltas, "mapnorm": cmd_mapnorm,
          "verify": cmd_verify, "samples": cmd_samples}[cmd]
    sys.exit(fn(*args) or 0)


if __name__ == "__main__":
    main()
