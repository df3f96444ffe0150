#!/usr/bin/python3
"""Per-process and per-thread counters of a process, for runner-prof.sh.

  runner_counters.py snap PID FILE      write a snapshot (JSON) of PID's
                                        counters and each thread's
  runner_counters.py diff A B IOS LABEL print one JSON line: what changed
                                        between snapshots A and B, per 1000
                                        I/Os, in total and by thread group

Counters: utime/stime and minflt/majflt from /proc/PID/stat (the kernel
sums them over the threads), voluntary and non-voluntary context switches
from each /proc/PID/task/TID/status (/proc/PID/status has the main
thread's alone).  A thread group is the thread's name without its device
suffix (tcmu-runner names them "cmdproc-uio0", "aio-uio0", ...), so the
64 workers of a LUN show as one line.
"""
import json
import os
import re
import sys

HZ = os.sysconf("SC_CLK_TCK")


def stat_fields(path):
    with open(path) as f:
        s = f.read()
    comm = s[s.index("(") + 1:s.rindex(")")]
    rest = s[s.rindex(")") + 2:].split()
    # rest[0] is field 3 (state): minflt 10, majflt 12, utime 14, stime 15
    return comm, {"minflt": int(rest[7]), "majflt": int(rest[9]),
                  "utime": int(rest[11]), "stime": int(rest[12])}


def status_switches(path):
    out = {"vcs": 0, "nvcs": 0}
    with open(path) as f:
        for line in f:
            if line.startswith("voluntary_ctxt_switches:"):
                out["vcs"] = int(line.split()[1])
            elif line.startswith("nonvoluntary_ctxt_switches:"):
                out["nvcs"] = int(line.split()[1])
    return out


def snap(pid):
    _, proc = stat_fields("/proc/%s/stat" % pid)
    threads = {}
    for tid in os.listdir("/proc/%s/task" % pid):
        base = "/proc/%s/task/%s" % (pid, tid)
        try:
            comm, t = stat_fields(base + "/stat")
            t.update(status_switches(base + "/status"))
        except OSError:
            continue            # the thread ended between listdir and open
        t["comm"] = comm
        threads[tid] = t
    return {"proc": proc, "threads": threads}


def group(comm):
    return re.sub(r"-uio\d+$|\d+$", "", comm) or comm


def diff(a, b, ios, label):
    per = 1000.0 / max(ios, 1)
    p = {k: b["proc"][k] - a["proc"][k] for k in b["proc"]}
    out = {"label": label, "ios": ios,
           "user_ms": p["utime"] * 1000.0 / HZ * per,
           "sys_ms": p["stime"] * 1000.0 / HZ * per,
           "minflt": p["minflt"] * per, "majflt": p["majflt"] * per,
           "vcs": 0.0, "nvcs": 0.0, "groups": {}}
    for tid, t in b["threads"].items():
        t0 = a["threads"].get(tid, {k: 0 for k in t if k != "comm"})
        g = out["groups"].setdefault(group(t["comm"]), {
            "threads": 0, "user_ms": 0.0, "sys_ms": 0.0,
            "vcs": 0.0, "nvcs": 0.0, "minflt": 0.0})
        d = {k: t[k] - t0.get(k, 0) for k in t if k != "comm"}
        g["threads"] += 1
        g["user_ms"] += d["utime"] * 1000.0 / HZ * per
        g["sys_ms"] += d["stime"] * 1000.0 / HZ * per
        g["vcs"] += d["vcs"] * per
        g["nvcs"] += d["nvcs"] * per
        g["minflt"] += d["minflt"] * per
        out["vcs"] += d["vcs"] * per
        out["nvcs"] += d["nvcs"] * per
    return out


def main(argv):
    if len(argv) == 4 and argv[1] == "snap":
        with open(argv[3], "w") as f:
            json.dump(snap(argv[2]), f)
    elif len(argv) == 6 and argv[1] == "diff":
        with open(argv[2]) as f:
            a = json.load(f)
        with open(argv[3]) as f:
            b = json.load(f)
        print(json.dumps(diff(a, b, int(argv[4]), argv[5])))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
