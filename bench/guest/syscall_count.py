#!/usr/bin/python3
"""Count system calls from `perf script -F tid,comm,trace` of
raw_syscalls:sys_enter, by thread group and name, per 1000 I/Os.

  perf script ... | syscall_count.py NAMES_FILE IOS

NAMES_FILE has "NUMBER NAME" lines (from asm/unistd_64.h).  A thread group
is the thread's name without its device suffix ("aio-uio0" -> "aio").
"""
import collections
import re
import sys


def main(argv):
    if len(argv) != 3:
        raise SystemExit(__doc__)
    names = {}
    with open(argv[1]) as f:
        for line in f:
            n, name = line.split()
            names[int(n)] = name
    ios = max(int(argv[2]), 1)
    counts = collections.Counter()
    for line in sys.stdin:
        m = re.match(r"\s*(.*?)\s+(\d+)\s+.*?NR (\d+)", line)
        if not m:
            continue
        comm = re.sub(r"-uio\d+$|\d+$", "", m.group(1)) or m.group(1)
        counts[(comm, names.get(int(m.group(3)), m.group(3)))] += 1
    total = sum(counts.values())
    print("all %.0f per 1000 I/Os (%d calls, %d I/Os)" % (total * 1000.0 / ios, total, ios))
    by_group = collections.Counter()
    for (g, _), c in counts.items():
        by_group[g] += c
    print("by thread: " + ", ".join("%s %.0f" % (g, c * 1000.0 / ios)
                                    for g, c in by_group.most_common()))
    for (g, name), c in counts.most_common(25):
        print("%-10s %-20s %8.0f" % (g, name, c * 1000.0 / ios))


if __name__ == "__main__":
    main(sys.argv)
