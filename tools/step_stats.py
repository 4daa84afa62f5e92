"""The server's scheduler steps over a load pass, from troupe_step_duration_seconds on /metrics.

parse() reads the histogram's cumulative buckets, sums and counts per step kind (decode,
mixed, prefill; summed over replicas) from a Prometheus text page; summary() turns the
difference of two pages into per-kind step counts, mean durations and bucket-bound
percentiles (the upper bound of the bucket holding the quantile, so p99 is "at most").
A server without the metric gives {} (it still gets measured by the client).
"""
import math
from typing import Dict, Optional

from prom_text import METRIC_LINE, label  # tools/prom_text.py, beside this file

NAME = "troupe_step_duration_seconds"

def parse(text: str) -> Dict[str, dict]:
    """kind -> {"buckets": {upper bound: cumulative count}, "sum": seconds, "count": steps}."""
    out: Dict[str, dict] = {}
    for line in text.splitlines():
        m = METRIC_LINE.match(line.strip())
        if not m or not m.group(1).startswith(NAME):
            continue
        name, labels, value = m.group(1), m.group(2) or "", float(m.group(3))
        kind = label(labels, "kind")
        if kind is None:
            continue
        k = out.setdefault(kind, {"buckets": {}, "sum": 0.0, "count": 0.0})
        if name == NAME + "_bucket":
            le = label(labels, "le")
            bound = math.inf if le == "+Inf" else float(le)
            k["buckets"][bound] = k["buckets"].get(bound, 0.0) + value
        elif name == NAME + "_sum":
            k["sum"] += value
        elif name == NAME + "_count":
            k["count"] += value
    return out


def _quantile_bound(buckets: Dict[float, float], count: float, q: float) -> Optional[float]:
    for bound in sorted(buckets):
        if buckets[bound] >= q * count:
            return bound
    return None


def summary(before: Dict[str, dict], after: Dict[str, dict]) -> Dict[str, dict]:
    """Per kind over the pass: count, mean_ms, p50_ms and p99_ms (bucket upper bounds, None
    beyond the last finite bucket); kinds with no step in the pass are left out."""
    out: Dict[str, dict] = {}
    for kind, a in after.items():
        b = before.get(kind, {"buckets": {}, "sum": 0.0, "count": 0.0})
        n = a["count"] - b["count"]
        if n <= 0:
            continue
        buckets = {k: v - b["buckets"].get(k, 0.0) for k, v in a["buckets"].items()}
        ms = lambda s: None if s is None or math.isinf(s) else 1000.0 * s  # noqa: E731
        out[kind] = {"count": int(n), "mean_ms": 1000.0 * (a["sum"] - b["sum"]) / n,
                     "p50_ms": ms(_quantile_bound(buckets, n, 0.5)), "p99_ms": ms(_quantile_bound(buckets, n, 0.99))}
    return out
