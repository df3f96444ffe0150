#!/usr/bin/python3
"""Figures of bench/stack-bench.sh: one cell in, one table out.

  stack-report.py cell --rep N --job J --backstore B (--fio FILE | --secs S
                  --bytes N | --error WHY | --na WHY) [--cpu SECONDS]
      one JSON line (a cell's figures) on stdout
  stack-report.py table RESULTS.jsonl [--text FILE] [--json FILE]
                  [--runtime S] [--repeat N] [--note TEXT]
      the table: per job and backstore the median over the repetitions with
      the min-max spread, p50/p99 latency, the serving process's CPU, and each
      qlun figure's ratio to fileio and to qemu-nbd

Figures per kind of job:
  4k random (and alloc) jobs  IOPS (reads + writes), latency of the reads
                              (writes for write-only jobs), CPU s per 100k I/Os
  sequential jobs             MiB/s, latency, CPU s per GiB
  flush-*                     the reader's p99 latency (the figure; lower is
                              better), its IOPS, CPU s per 100k I/Os
  blkdiscard*, convert        seconds for the whole LUN (lower is better),
                              CPU s per GiB of LUN
"""
import argparse
import json
import statistics
import sys

GiB = 1 << 30


def fio_side(job, side):
    d = job[side]
    pct = d.get("clat_ns", {}).get("percentile", {})
    return {"ios": d["total_ios"], "bytes": d["io_bytes"], "runtime_ms": d["runtime"],
            "iops": d["iops"], "bw_bytes": d["bw_bytes"],
            "p50_us": pct.get("50.000000", 0) / 1000.0,
            "p99_us": pct.get("99.000000", 0) / 1000.0}


def cell_from_fio(path, jobname):
    with open(path) as f:
        text = f.read()
    # fio may print notes before the JSON object
    data = json.loads(text[text.index("{"):])
    jobs = {j["jobname"]: j for j in data["jobs"]}
    if jobname.startswith("flush-"):
        r = fio_side(jobs["reader"], "read")
        w = fio_side(jobs["writer"], "write")
        return {"kind": "flush", "value": r["p99_us"], "unit": "us p99",
                "iops": r["iops"], "p50_us": r["p50_us"], "p99_us": r["p99_us"],
                "writer_iops": w["iops"], "ios": r["ios"] + w["ios"]}
    j = jobs[jobname]
    rd, wr = fio_side(j, "read"), fio_side(j, "write")
    lat = rd if rd["ios"] else wr
    out = {"ios": rd["ios"] + wr["ios"], "bytes": rd["bytes"] + wr["bytes"],
           "p50_us": lat["p50_us"], "p99_us": lat["p99_us"]}
    if jobname.startswith("seq"):
        out.update(kind="seq", value=(rd["bw_bytes"] + wr["bw_bytes"]) / (1 << 20), unit="MiB/s")
    else:
        out.update(kind="iops", value=rd["iops"] + wr["iops"], unit="IOPS")
    return out


def cmd_cell(a):
    cell = {"rep": a.rep, "job": a.job, "backstore": a.backstore}
    if a.na:
        cell["na"] = a.na
    elif a.error:
        cell["error"] = a.error
    elif a.fio:
        cell.update(cell_from_fio(a.fio, a.job))
    else:
        cell.update(kind="time", value=a.secs, unit="s", bytes=a.bytes)
    if a.cpu not in (None, ""):
        cpu = float(a.cpu)
        cell["cpu_s"] = cpu
        if "error" not in cell and "na" not in cell:
            if cell["kind"] in ("iops", "flush"):
                cell["cpu_norm"] = cpu / max(cell["ios"], 1) * 1e5
                cell["cpu_unit"] = "s/100k IO"
            else:
                cell["cpu_norm"] = cpu / max(cell["bytes"], 1) * GiB
                cell["cpu_unit"] = "s/GiB"
    print(json.dumps(cell, sort_keys=True))


def med(xs):
    return statistics.median(xs) if xs else None


def fmt(x, unit=""):
    if x is None:
        return "-"
    if unit == "us p99" or unit == "us":
        return "%.0f" % x if x >= 100 else "%.1f" % x
    if abs(x) >= 100:
        return "%.0f" % x
    if abs(x) >= 10:
        return "%.1f" % x
    return "%.2f" % x


def summarise(cells):
    """(job, backstore) -> summary over the repetitions"""
    groups = {}
    order_jobs, order_bs = [], []
    for c in cells:
        key = (c["job"], c["backstore"])
        groups.setdefault(key, []).append(c)
        if c["job"] not in order_jobs:
            order_jobs.append(c["job"])
        if c["backstore"] not in order_bs:
            order_bs.append(c["backstore"])
    summary = {}
    for key, cs in groups.items():
        good = [c for c in cs if "error" not in c and "na" not in c]
        s = {"job": key[0], "backstore": key[1], "reps": len(cs),
             "errors": [c["error"] for c in cs if "error" in c],
             "na": sorted({c["na"] for c in cs if "na" in c})}
        if good:
            vals = [c["value"] for c in good]
            s.update(unit=good[0]["unit"], kind=good[0]["kind"], median=med(vals),
                     min=min(vals), max=max(vals),
                     p50_us=med([c["p50_us"] for c in good if "p50_us" in c]),
                     p99_us=med([c["p99_us"] for c in good if "p99_us" in c]),
                     cpu_norm=med([c["cpu_norm"] for c in good if "cpu_norm" in c]),
                     cpu_unit=good[0].get("cpu_unit"))
            if good[0]["kind"] == "flush":
                s["reader_iops"] = med([c["iops"] for c in good])
                s["writer_iops"] = med([c["writer_iops"] for c in good])
        summary[key] = s
    return summary, order_jobs, order_bs


def ratio(s, ref):
    if not ref or ref.get("median") in (None, 0) or s.get("median") is None:
        return None
    return s["median"] / ref["median"]


def cmd_table(a):
    with open(a.results) as f:
        cells = [json.loads(line) for line in f if line.strip()]
    summary, jobs, backstores = summarise(cells)
    head = ["job", "backstore", "median", "unit", "min-max", "p50 us", "p99 us",
            "CPU", "CPU unit", "/fileio", "/qemu-nbd"]
    rows = []
    for j in jobs:
        for b in backstores:
            s = summary.get((j, b))
            if s is None:
                continue
            if s.get("median") is None:
                if s["errors"]:
                    rows.append([j, b, "ERROR", "", "; ".join(s["errors"])] + [""] * 6)
                else:
                    rows.append([j, b, "n/a", "", "; ".join(s["na"])] + [""] * 6)
                continue
            is_qlun = b.startswith("qlun-")
            rf = ratio(s, summary.get((j, "fileio"))) if is_qlun else None
            rq = ratio(s, summary.get((j, "qemu-nbd"))) if is_qlun else None
            spread = "%s-%s" % (fmt(s["min"], s["unit"]), fmt(s["max"], s["unit"]))
            if s["errors"]:
                spread += " (+%d ERROR)" % len(s["errors"])
            unit = s["unit"]
            if s["kind"] == "flush":
                unit += " (rd %s IOPS, wr %s)" % (fmt(s["reader_iops"]), fmt(s["writer_iops"]))
            rows.append([j, b, fmt(s["median"], s["unit"]), unit, spread,
                         fmt(s["p50_us"], "us"), fmt(s["p99_us"], "us"),
                         fmt(s["cpu_norm"]), s["cpu_unit"] or "-",
                         fmt(rf) if rf is not None else "", fmt(rq) if rq is not None else ""])
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    lines = ["stack-bench: median of %s repetition(s), %s s per fio job; %s" % (a.repeat, a.runtime, a.note),
             "ratios: qlun figure / fileio's and / qemu-nbd's (IOPS, MiB/s: above 1 = qlun faster;"
             " s and us p99: below 1 = qlun faster). CPU: the serving user-space process"
             " (tcmu-runner, qemu-nbd); '-' = in the kernel.", ""]
    lines.append("  ".join(h.ljust(w) for h, w in zip(head, widths)))
    lines.append("  ".join("-" * w for w in widths))
    prev = None
    for r in rows:
        if prev is not None and r[0] != prev:
            lines.append("")
        prev = r[0]
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text) if not a.text else open(a.text, "w").write(text)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"runtime": a.runtime, "repeat": a.repeat, "note": a.note,
                       "cells": [summary[k] for k in summary]}, f, indent=1, sort_keys=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("cell")
    c.add_argument("--rep", type=int, required=True)
    c.add_argument("--job", required=True)
    c.add_argument("--backstore", required=True)
    c.add_argument("--fio")
    c.add_argument("--secs", type=float)
    c.add_argument("--bytes", type=int)
    c.add_argument("--error")
    c.add_argument("--na", help="the backstore cannot do this job (shown as n/a)")
    c.add_argument("--cpu")
    t = sub.add_parser("table")
    t.add_argument("results")
    t.add_argument("--text")
    t.add_argument("--json")
    t.add_argument("--runtime", default="?")
    t.add_argument("--repeat", default="?")
    t.add_argument("--note", default="")
    a = p.parse_args()
    cmd_cell(a) if a.cmd == "cell" else cmd_table(a)


if __name__ == "__main__":
    main()
