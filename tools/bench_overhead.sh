#!/usr/bin/env bash
# Runtime overhead of the actor path at batch 1: for each example topology, generates
# G tokens greedily through router -> replica -> shards and prints, per decode step, the
# actor messages, the replica's wall time, the kernel time (per stage, the slowest
# rank's compute outside the communicator calls, summed over stages), the time not in
# kernels (communicator transfers and waits, actor messages, scheduling) and, of that,
# the wall time beyond the busiest shard's run() (messages and scheduling alone).
# Markdown, for docs/benchmarks.md.
#   tools/bench_overhead.sh [--gen-tokens G] [--runs R] [--max-overhead PCT] [--set KEY=VALUE ...] [topology.yaml ...]
# --set: cluster-file overrides for every run (e.g. scheduler.overlap=true); they label the rows.
# --max-overhead PCT: exit 1 (after the table) when a topology's time not in kernels is
# above PCT % of its step; the goal of docs/benchmarks.md is checked with
#   tools/bench_overhead.sh --max-overhead 2 cluster-config/examples/{single,pipeline2}.yaml
# Needs a build (tools/setup.sh); uses the example files' ports (7100-7104).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${TROUPE_BUILD:-$root/build}"
venv="${TROUPE_VENV:-$root/.venv}"
gen=64 runs=3 max_overhead="" files=() sets=() label=""
while [ $# -gt 0 ]; do
  case "$1" in
    --gen-tokens) gen="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --max-overhead) max_overhead="$2"; shift 2 ;;
    --set) sets+=(--set "$2"); label+=" $2"; shift 2 ;;
    -h|--help) sed -n '2,13p' "${BASH_SOURCE[0]}"; exit 0 ;;
    -*) echo "bench_overhead.sh: unknown option '$1'" >&2; exit 2 ;;
    *) files+=("$1"); shift ;;
  esac
done
[ ${#files[@]} -gt 0 ] || files=("$root/cluster-config/examples/single.yaml"
  "$root/cluster-config/examples/pipeline2.yaml" "$root/cluster-config/examples/tensor2.yaml")
[ -x "$build/bin/troupe" ] || { echo "bench_overhead.sh: build first (tools/setup.sh)" >&2; exit 1; }
python="$venv/bin/python"
[ -x "$python" ] || python=python3

out=$(mktemp)
trap 'rm -f "$out"' EXIT
for f in "${files[@]}"; do
  for _ in $(seq "$runs"); do
    "$build/bin/troupe" generate --config "$f" ${sets[@]+"${sets[@]}"} --prompt "The capital of France is" \
      --max-tokens "$gen" --ignore-eos --temperature 0 --output json 2>/dev/null |
      tail -n 1 | sed "s|^|$(basename "$f" .yaml)${label}\t|" >>"$out"
  done
done

"$python" - "$out" "$max_overhead" <<'EOF'
import json, sys
bound = float(sys.argv[2]) if sys.argv[2] else None
rows = {}
for line in open(sys.argv[1]):
    name, _, js = line.rstrip("\n").partition("\t")
    r = json.loads(js)["replicas"][0]
    acc = rows.setdefault(name, {"steps": 0, "wall": 0, "kernel": 0, "busy": 0, "msgs": 0})
    acc["steps"] += r["decode_steps"]; acc["wall"] += r["decode_wall_us"]
    acc["kernel"] += r["decode_kernel_us"]; acc["busy"] += r["decode_busy_us"]
    acc["msgs"] += r["step_messages"]
print("| topology | decode steps | actor messages / step | step (ms) | in kernels (ms) | not in kernels (ms) | not in kernels | beyond the busiest shard (ms) |")
print("|---|---|---|---|---|---|---|---|")
for name, a in rows.items():
    n = max(a["steps"], 1)
    wall, kern, busy = a["wall"] / n / 1e3, a["kernel"] / n / 1e3, a["busy"] / n / 1e3
    # + 2: the token event replica -> router and router -> client of the one sequence.
    print(f"| {name} | {a['steps']} | {a['msgs'] / n + 2:.0f} | {wall:.3f} | {kern:.3f} | {wall - kern:.3f} | "
          f"{100 * (wall - kern) / wall:.2f}% | {wall - busy:.3f} |")
if bound is not None:
    over = [(name, 100 * (a["wall"] - a["kernel"]) / max(a["wall"], 1)) for name, a in rows.items()]
    over = [(name, share) for name, share in over if rows[name]["steps"] == 0 or share > bound]
    for name, share in over:
        print(f"bench_overhead.sh: {name}: {share:.2f}% of the step not in kernels, over the {bound:g}% bound"
              if rows[name]["steps"] else f"bench_overhead.sh: {name}: no decode step measured", file=sys.stderr)
    print(f"\n{len(rows) - len(over)} of {len(rows)} topologies within {bound:g}% not in kernels")
    sys.exit(1 if over else 0)
EOF
