"""loadgen.py's report of its passes: the text table, the markdown table and the PNG plot."""
import math
from typing import List, Optional


def fmt(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:.1f}"


def load_label(run: dict) -> str:
    if run.get("concurrency") is not None:
        return f"c={run['concurrency']}"
    return f"rate={run['request_rate']:g}"


def table(runs: List[dict]) -> str:
    head = ["load", "ok", "err", "req/s", "out tok/s"]
    for m in ("TTFT", "ITL", "E2E"):
        head += [f"{m} p50", f"{m} p90", f"{m} p99"]
    rows = [head]
    for r in runs:
        row = [load_label(r), str(r["ok"]), str(r["failed"]), f"{r['request_throughput']:.2f}",
               f"{r['output_throughput']:.1f}"]
        for key in ("ttft_ms", "itl_ms", "e2e_ms"):
            row += [fmt(r[key]["p50"]), fmt(r[key]["p90"]), fmt(r[key]["p99"])]
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines) + "\n(latencies in ms)"


def markdown(runs: List[dict]) -> str:
    """The table in markdown (latencies in ms), for docs/benchmarks.md."""
    head = "| load | ok | err | req/s | out tok/s | TTFT p50/p90/p99 | ITL p50/p90/p99 | E2E p50/p90/p99 |"
    lines = [head, "|" + " --- |" * 8]
    for r in runs:
        cells = [load_label(r), str(r["ok"]), str(r["failed"]), f"{r['request_throughput']:.2f}",
                 f"{r['output_throughput']:.1f}"]
        cells += [" / ".join(fmt(r[k][q]) for q in ("p50", "p90", "p99")) for k in ("ttft_ms", "itl_ms", "e2e_ms")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(runs: List[dict], path: str, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    by_conc = runs[0].get("concurrency") is not None
    xs = [r["concurrency"] if by_conc else r["request_rate"] for r in runs]
    finite = [x for x in xs if not math.isinf(x)]
    inf_x = (max(finite) * 2 if finite else 1.0)
    xs = [inf_x if math.isinf(x) else x for x in xs]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for ax, key, name in zip(axes, ("ttft_ms", "itl_ms", "e2e_ms"),
                             ("time to first token", "inter-token latency", "end-to-end latency")):
        for q, style in (("p50", "o-"), ("p99", "s--")):
            ys = [r[key][q] if r[key][q] is not None else float("nan") for r in runs]
            ax.plot(xs, ys, style, label=q)
        ax.set_title(name)
        ax.set_xlabel("concurrency" if by_conc else "request rate (req/s; rightmost = inf)")
        ax.set_ylabel("ms")
        if len(xs) > 1 and min(xs) > 0 and max(xs) / min(xs) >= 4:
            ax.set_xscale("log", base=2)
        ax.set_xticks(xs)
        ax.set_xticklabels(["inf" if x == inf_x and len(finite) < len(xs) else f"{x:g}" for x in xs])
        ax.minorticks_off()
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
