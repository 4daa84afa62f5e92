#!/usr/bin/env python3
"""Per-kernel decode time from tools/gpu/profile.sh's Nsight Compute logs.

Usage: profile_table.py OUT_DIR BATCH [BATCH ...]
Reads OUT_DIR/ncu_b<BATCH>.csv (ncu --csv, metric gpu__time_duration.sum) and
OUT_DIR/bench_b<BATCH>.json (the unprofiled bench). The kernel sequence is cut into steps
at each sampling kernel (argmax or sample); a step whose attention ran the decode kernels
and no prefill kernel is a decode step. Prints, per batch, the kernels of a decode step
grouped by name and grid, their time per step, and the sum against the unprofiled step's
device time (the difference is the time between kernels).
"""
import csv
import json
import os
import sys

STEP_END = ("argmax_merge_kernel", "argmax_kernel", "sample_kernel")
DECODE = ("grouped_kernel", "decode_kernel")
PREFILL = ("prefill_kernel", "flash")


def short(name):
    """The kernel's name without its template arguments and parameters."""
    name = name.replace("void ", "").replace("(anonymous namespace)::", "").replace("<unnamed>::", "")
    for cut in ("<", "("):
        i = name.find(cut)
        if i > 0:
            name = name[:i]
    return name.split("::")[-1][:70]


def kernels(path):
    """(name, grid, microseconds) of every profiled kernel, in launch order."""
    rows = []
    with open(path, newline="") as f:
        lines = [l for l in f if l.startswith('"')]
    for r in csv.DictReader(lines):
        if r.get("Metric Name") != "gpu__time_duration.sum":
            continue
        value = float(r["Metric Value"].replace(",", ""))
        unit = r.get("Metric Unit", "nsecond")
        us = value / 1000.0 if unit.startswith("n") else value * 1000.0 if unit.startswith("m") else value
        rows.append((short(r["Kernel Name"]), r.get("Grid Size", ""), us))
    return rows


def attention_rows(step):
    """Rows of the step's decode attention (its grid's y), or 0 when it ran none."""
    for name, grid, _ in step:
        if any(d in name for d in DECODE):
            dims = grid.strip("()").split(",")
            return int(dims[1]) if len(dims) > 1 else 0
    return 0


def decode_steps(rows, batch):
    """The steps in which all `batch` sequences decode (the bench's timed steps)."""
    steps, cur = [], []
    for row in rows:
        cur.append(row)
        if any(row[0].endswith(s) for s in STEP_END):
            names = [n for n, _, _ in cur]
            if attention_rows(cur) == batch and not any(any(p in n for p in PREFILL) for n in names):
                steps.append(cur)
            cur = []
    return steps


def table(out, batch):
    path = os.path.join(out, f"ncu_b{batch}.csv")
    if not os.path.exists(path):
        print(f"batch {batch}: no {path}")
        return False
    steps = decode_steps(kernels(path), int(batch))
    if not steps:
        print(f"batch {batch}: no step of {batch} decoding sequences in {path} (raise GEN)")
        return False
    steps = steps[1:] if len(steps) > 2 else steps  # the first may be the eager warm-up
    per = {}
    for step in steps:
        for name, grid, us in step:
            key = (name, grid)
            n, t = per.get(key, (0, 0.0))
            per[key] = (n + 1, t + us)
    total = sum(t for _, t in per.values()) / len(steps)
    dev = None
    bench = os.path.join(out, f"bench_b{batch}.json")
    if os.path.exists(bench):
        for line in open(bench):
            if line.strip().startswith("{"):
                j = json.loads(line)
                dev = j["decode"][0].get("device_ms")
    print(f"\n### batch {batch}: {len(steps)} decode steps, kernels {total / 1000:.3f} ms/step"
          + (f", unprofiled device {dev:.3f} ms/step (gaps {dev - total / 1000:.3f} ms)" if dev else ""))
    print("| kernel | grid | launches/step | us/step | us/launch | % |")
    print("|---|---|---|---|---|---|")
    for (name, grid), (n, t) in sorted(per.items(), key=lambda kv: -kv[1][1]):
        ps = t / len(steps)
        if ps < 0.005 * total:
            continue
        print(f"| {name} | {grid} | {n / len(steps):.0f} | {ps:.1f} | {t / n:.2f} | {ps / total * 100:.1f} |")
    return True


def main():
    out, batches = sys.argv[1], sys.argv[2:]
    ok = all([table(out, b) for b in batches])
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
