#!/usr/bin/env bash
# Serving on one GPU against the engine offline (issue 13, item 4): starts `troupe serve`
# (cluster-config/examples/gpu-single.yaml: the Llama-3.1-8B shape, random bf16 weights, one
# node process, the head and its HTTP gateway), streams tools/loadgen.py's requests at
# concurrency 1, 16, 64 and 256 (128-token prompts, 128 output tokens, ignore_eos) and then a
# mixed-length set (prompts 32-2048 tokens, outputs 16-512), and prints one table beside
# `troupe_gpu bench` at the same batch sizes (offline decode steps, same binary, same GPU).
#   here:   tools/gpu/bundle.sh                 (carry .gpu)
#   device: bash tools/gpu/serve_bench.sh        (results under $OUT: serve.json, mixed.json, serve.md)
# Options (environment): SERVE_CONCURRENCY (1,16,64,256), SERVE_PROMPTS_PER_CONC (2: requests per
# pass = max(32, this x concurrency)), MIXED_PROMPTS (512; 0 skips the mixed set), MIXED_CONCURRENCY
# (128), OFFLINE (1), SERVE_SET (cluster-file overrides for troupe serve, space-separated
# key=value, e.g. "scheduler.graph_warmup_context=0").
# The table's last column is the server's own steps over each pass (troupe_step_duration_seconds:
# decode / mixed / prefill steps, count x mean ms, and the bucket bound of their p99).
# TROUPE_SLOW_STEP_MS (50): the node logs every step slower than that (slow_steps.txt).
# Exit status: 0 every request succeeded, 1 otherwise (or the server did not start).
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=$PWD/.gpu/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
source tools/gpu/unpack.sh
export PYTHONUNBUFFERED=1
# The node logs each step slower than this with its shape (the served outliers: gpu-notes.md).
export TROUPE_SLOW_STEP_MS="${TROUPE_SLOW_STEP_MS:-50}"
out="${OUT:-/tmp/troupe-serve}"; mkdir -p "$out"
dir=/tmp/servebench; rm -rf "$dir"; mkdir -p "$dir"
conc="${SERVE_CONCURRENCY:-1,16,64,256}"
# Its own model directory, always with the tokenizer (padded to the model's vocabulary, so
# every sampled id has text: tools/gpu/make_model.py); /tmp/l8b may lack one.
model=/tmp/l8b-serve
python3 tools/gpu/make_model.py --shape llama3-8b --out $model --tokenizer .gpu/hf/tokenizer.json > "$dir/make_model.log" 2>&1 || {
  echo "serve_bench: make_model.py failed"; cat "$dir/make_model.log"; exit 1; }
status=0
if [ "${OFFLINE:-1}" = 1 ]; then
  timeout 200 .gpu/bin/troupe_gpu bench --random --model $model --batches "$conc" --prompt-lens 1000000 \
    --max-batch-tokens 8192 --gen 64 > "$out/offline.json" 2> "$dir/offline.log" || status=1
fi
sets=(--set model.path=$model)
for kv in ${SERVE_SET:-}; do sets+=(--set "$kv"); done
start_ms=$(( $(date +%s%N) / 1000000 ))
.gpu/bin/troupe serve --config cluster-config/examples/gpu-single.yaml "${sets[@]}" > "$dir/serve.out" 2> "$dir/serve.log" &
serve=$!
ready=0
for _ in $(seq 900); do grep -q "serving:" "$dir/serve.log" && { ready=1; break; }; kill -0 $serve 2>/dev/null || break; sleep 0.2; done
if [ "$ready" != 1 ]; then
  echo "serve_bench: the server did not start"; tail -20 "$dir/serve.log"; kill $serve 2>/dev/null; exit 1
fi
echo "serve_bench: serving $(( $(date +%s%N) / 1000000 - start_ms )) ms after the start (${SERVE_SET:-no overrides})" | tee "$out/start.txt"
grep -m1 -o "connected ([0-9]* decode graphs captured)" "$dir/serve.log" | tee -a "$out/start.txt"
cp "$dir/serve.log" "$out/serve.log" 2>/dev/null
base=http://127.0.0.1:8000
per="${SERVE_PROMPTS_PER_CONC:-2}"
: > "$out/serve.jsonl"
for c in ${conc//,/ }; do
  n=$(( c * per > 32 ? c * per : 32 ))
  timeout 400 python3 tools/loadgen.py --base-url $base --concurrency "$c" --num-prompts "$n" --input-len 128 \
    --output-len 128 --warmup 2 --quiet --json "$dir/c$c.json" > "$dir/c$c.txt" 2>&1 || status=1
  [ -f "$dir/c$c.json" ] && python3 -c "import json,sys; [print(json.dumps(r)) for r in json.load(open(sys.argv[1]))['runs']]" "$dir/c$c.json" >> "$out/serve.jsonl"
done
# The mixed set: prompt and output lengths drawn uniformly (seeded), as a loadgen dataset.
if [ "${MIXED_PROMPTS:-512}" != 0 ]; then
python3 - "$dir/mixed.jsonl" "${MIXED_PROMPTS:-512}" <<'PY'
import json, random, sys
path, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(7)
words = ["alpha", "beta", "gamma", "delta", "river", "stone", "cloud", "light", "north", "paper"]
with open(path, "w") as f:
    for _ in range(n):
        p = rng.randint(32, 2048)
        f.write(json.dumps({"prompt": " ".join(rng.choice(words) for _ in range(p)), "max_tokens": rng.randint(16, 512)}) + "\n")
PY
timeout 400 python3 tools/loadgen.py --base-url $base --concurrency "${MIXED_CONCURRENCY:-128}" --dataset "$dir/mixed.jsonl" \
  --num-prompts "${MIXED_PROMPTS:-512}" --warmup 1 --quiet --json "$out/mixed.json" > "$dir/mixed.txt" 2>&1 || status=1
fi
kill -INT $serve 2>/dev/null; timeout 60 tail --pid=$serve -f /dev/null
grep -E "error|fail" -i "$dir/serve.log" | head -5
slow=$(grep -c "slow step" "$dir/serve.log")
echo "steps slower than ${TROUPE_SLOW_STEP_MS} ms: $slow (the slowest five below; all in $out/slow_steps.txt)"
grep -e "slow step" -e "idle gap" "$dir/serve.log" > "$out/slow_steps.txt"
echo "idle gaps of ${TROUPE_SLOW_STEP_MS} ms to 1 s between steps: $(grep -c "idle gap" "$dir/serve.log")"
grep -oP "slow step \d+: [0-9.]+ ms.*" "$out/slow_steps.txt" | sort -t: -k2 -g -r | head -5
python3 - "$out" <<'PY' | tee "$out/serve.md"
import json, os, sys
out = sys.argv[1]
runs = [json.loads(l) for l in open(os.path.join(out, "serve.jsonl")) if l.strip()]
off = {}
p = os.path.join(out, "offline.json")
if os.path.exists(p):
    for l in open(p):
        if l.strip().startswith("{"):
            for d in json.loads(l)["decode"]:
                off[d["batch"]] = d
print("| load | requests ok/failed | output tok/s | TTFT p50 / p99 ms | ITL p50 / p99 ms | p99/p50 | offline tok/s (ms/step) at that batch | server steps: count x mean ms (p99 <=) |")
print("|---|---|---|---|---|---|---|---|")
def steps(r):
    s = r.get("steps") or {}
    b = lambda v: "-" if v is None else f"{v:g}"
    return "; ".join(f"{k} {v['count']} x {v['mean_ms']:.2f} ({b(v['p99_ms'])})" for k, v in sorted(s.items())) or "-"

def row(label, r, o):
    itl = r["itl_ms"]; ttft = r["ttft_ms"]
    ratio = itl["p99"] / itl["p50"] if itl.get("p50") else float("nan")
    offc = f"{o['tokens_per_s']:.0f} ({o['ms_per_step']:.2f})" if o else "-"
    print(f"| {label} | {r['ok']}/{r['failed']} | {r['output_throughput']:.0f} | {ttft['p50']:.0f} / {ttft['p99']:.0f} | "
          f"{itl['p50']:.2f} / {itl['p99']:.2f} | {ratio:.2f} | {offc} | {steps(r)} |")
for r in runs:
    row(f"c={r['concurrency']}, 128 in / 128 out", r, off.get(r["concurrency"]))
m = os.path.join(out, "mixed.json")
if os.path.exists(m):
    for r in json.load(open(m))["runs"]:
        row(f"c={r['concurrency']}, mixed (in 32-2048, out 16-512)", r, None)
PY
exit $status
