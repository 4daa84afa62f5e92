#!/usr/bin/env bash
# Measures troupe and llama.cpp on this machine in one run (same model weights, same
# thread count) and prints a markdown table for docs/benchmarks.md.
#   tools/bench.sh [--threads N] [--prompt-tokens P] [--gen-tokens G] [--batch B]
# Needs: a build (tools/setup.sh) and the reference venv (tools/venv.sh --reference).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
threads=$(nproc) prompt=256 gen=64 batch=8
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) threads="$2"; shift 2 ;;
    --prompt-tokens) prompt="$2"; shift 2 ;;
    --gen-tokens) gen="$2"; shift 2 ;;
    --batch) batch="$2"; shift 2 ;;
    *) echo "bench.sh: unknown option '$1'" >&2; exit 2 ;;
  esac
done
cache="${TROUPE_CACHE:-$HOME/.cache/troupe}"
venv="${TROUPE_VENV:-$root/.venv}"
build="${TROUPE_BUILD:-$root/build}"
q4="$cache/models/SmolLM2-135M-Instruct.Q4_1.gguf"
f32="$cache/models/SmolLM2-135M-Instruct.F32.gguf"
[ -x "$build/bin/troupe_bench" ] || { echo "bench.sh: build first (tools/setup.sh)" >&2; exit 1; }
[ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import llama_cpp" 2>/dev/null ||
  { echo "bench.sh: the reference venv is missing: run tools/venv.sh --reference" >&2; exit 1; }
[ -f "$f32" ] || "$venv/bin/python" "$root/tools/make_f32_gguf.py" "$q4" "$f32"

args=(--threads "$threads" --prompt-tokens "$prompt" --gen-tokens "$gen" --batch "$batch")
out=$(mktemp)
"$build/bin/troupe_bench" --model "$q4" "${args[@]}" | sed 's/^/troupe f32 (from Q4_1)\t/' >>"$out"
"$venv/bin/python" "$root/tools/bench_llamacpp.py" "$f32" "${args[@]}" | sed 's/^/llama.cpp F32\t/' >>"$out"
"$venv/bin/python" "$root/tools/bench_llamacpp.py" "$q4" "${args[@]}" | sed 's/^/llama.cpp Q4_1\t/' >>"$out"
"$venv/bin/python" - "$out" "$(lscpu | sed -n 's/^Model name: *//p')" <<'PY'
import json, sys
rows = [line.split("\t", 1) for line in open(sys.argv[1]) if "\t" in line]
data = [(name, json.loads(js)) for name, js in rows]
b = data[0][1]["batch"]
print(f"CPU: {sys.argv[2]}, threads {data[0][1]['threads']}, prompt {data[0][1].get('prompt_tokens', '?')} tokens\n")
print(f"| engine | prefill tok/s | decode b1 tok/s | decode b{b} tok/s |")
print("| --- | --- | --- | --- |")
for name, d in data:
    print(f"| {name} | {d['prefill_tok_s']:.1f} | {d['decode_b1_tok_s']:.1f} | {d['decode_bB_tok_s']:.1f} |")
t = data[0][1]
for name, d in data[1:]:
    print(f"\ntroupe / {name}: prefill {t['prefill_tok_s']/d['prefill_tok_s']:.2f}x, "
          f"decode b1 {t['decode_b1_tok_s']/d['decode_b1_tok_s']:.2f}x, "
          f"decode b{b} {t['decode_bB_tok_s']/d['decode_bB_tok_s']:.2f}x")
PY
rm -f "$out"
