#!/usr/bin/env bash
# Decode at the roofline: one device call that runs the CUDA tests,
# per-op decode timings (cuBLASLt vs the skinny GEMV at every projection shape), troupe's
# benchmark on the Llama-3.1-8B shape (random bf16 weights, one GPU: decode at batch 1, 16,
# 64 and 256 with the device time and GPU idle time per step, prefill of 1k, 2k and 8k
# prompts; PERF_ABLATION=1 adds the earlier forwards), the PyTorch peer
# (tools/gpu/peer_bench.py) in the same call, and a short table last.
#   here:   TROUPE_GPU_BUILD=build-gpu tools/gpu/bundle.sh     (carry .gpu)
#   device: bash tools/gpu/perf.sh                              (results under $OUT)
# Options (environment): PERF_PARTS="tests kernels bench peer" (default all), GEN (64),
# PEER_BATCHES (1,64,256), PEER_PREFILL (1024,2048,8192), PERF_ABLATION (1: the earlier
# forwards too), PERF_ATTN_COMPARE (1: batch 64 and 256 with the CUDA-core decode attention),
# PERF_TUNE_COMPARE (1: batch 16, 64 and 256 with cuBLASLt's candidates timed, TROUPE_GEMM_TUNE=1),
# PERF_GEMV_VARIANTS (e.g. "3 4,1": batch 1 again with each TROUPE_GEMV_VARIANT pinned),
# PERF_OVERLAP (1: the decode batches again with overlapped steps, troupe_gpu bench --overlap),
# PERF_PIPELINE (1, the default: the decode batches again with pipelined steps, troupe_gpu bench
# --pipeline, as troupe serve runs them; 0 leaves them out),
# PERF_FUSION_COMPARE (1: batch 1 with the one-row fusions, TROUPE_FUSE_NORM=1, alone and pipelined,
# and batch 1, 64 and 256 without the decode attention workspace, TROUPE_ATTN_WORKSPACE=0;
# and all of them with the attention splits merged in their last split, TROUPE_ATTN_FUSED_MERGE=1).
# The part "chain" (not in the default) times one row's 32 layers as a kernel chain in one
# graph, with op groups left out and under each GEMV tiling (troupe_gpu chain).
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=$PWD/.gpu/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
source tools/gpu/unpack.sh
export PYTHONUNBUFFERED=1
out="${OUT:-/tmp/troupe-perf}"
mkdir -p "$out"
parts="${PERF_PARTS:-tests kernels bench peer}"
gen="${GEN:-64}"
bin=.gpu/bin
has() { [[ " $parts " == *" $1 "* ]]; }
log="$out/perf.log"
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm,clocks.mem --format=csv,noheader | tee "$out/card.txt"
python3 tools/gpu/make_model.py --shape llama3-8b --out /tmp/l8b >> "$log" 2>&1
status=0
if has tests; then
  echo "== CUDA tests ($(date +%T))" | tee -a "$log"
  timeout 300 "$bin/troupe_cuda_tests" "${PERF_TESTS:-[cuda]}" > "$out/tests.txt" 2>&1 || status=1
  tail -4 "$out/tests.txt"
fi
if has kernels; then
  echo "== per-op timings ($(date +%T))" | tee -a "$log"
  timeout 120 "$bin/troupe_gpu" kernels --random --model /tmp/l8b > "$out/kernels.jsonl" 2>> "$log" || status=1
fi
if has chain; then
  echo "== layer chain ($(date +%T))" | tee -a "$log"
  timeout 240 "$bin/troupe_gpu" chain --random --model /tmp/l8b > "$out/chain.jsonl" 2>> "$log" || status=1
fi
if has bench; then
  echo "== troupe bench ($(date +%T))" | tee -a "$log"
  : > "$out/bench.jsonl"
  run() {  # label, env..., then bench args after --
    local label=$1; shift
    local envs=()
    while [ "$1" != "--" ]; do envs+=("$1"); shift; done; shift
    env "${envs[@]}" timeout 200 "$bin/troupe_gpu" bench --random --model /tmp/l8b "$@" 2>> "$log" |
      python3 -c "import json,sys; [print(json.dumps(dict(json.loads(l), variant='$label'))) for l in sys.stdin if l.strip()]" \
      | tee -a "$out/bench.jsonl" | cut -c1-300 || status=1
  }
  # PERF_ABLATION=1 adds the earlier forwards (docs/gpu-notes.md's v0 and v1) for comparison.
  if [ "${PERF_ABLATION:-0}" = 1 ]; then
    run old TROUPE_FUSE=0 TROUPE_GEMV_MAX_ROWS=0 -- --batches 1,64 --prompt-lens 1024 --gen "$gen"
    run fused_cublas TROUPE_GEMV_MAX_ROWS=0 -- --batches 1,64 --prompt-lens 1024 --gen "$gen"
  fi
  for v in ${PERF_GEMV_VARIANTS:-}; do
    run "gemv_$v" TROUPE_GEMV_VARIANT="$v" -- --batches 1 --gen "$gen"
  done
  run default -- --batches 1,16,64,256 --prompt-lens 1024,2048,8192 --max-batch-tokens 8192 --gen "$gen"
  # PERF_ATTN_COMPARE=1 adds batch 64 and 256 with the CUDA-core decode attention pinned
  # (TROUPE_ATTN_VARIANT=3: the kernel before the tensor-core one), to compare in one call.
  if [ "${PERF_ATTN_COMPARE:-0}" = 1 ]; then
    run attn_cuda_core TROUPE_ATTN_VARIANT=3 -- --batches 64,256 --gen "$gen"
  fi
  # PERF_TUNE_COMPARE=1 adds the decode batches with cuBLASLt's candidates timed once per shape
  # (TROUPE_GEMM_TUNE=1, off by default), to compare with the heuristic's pick in one call.
  if [ "${PERF_TUNE_COMPARE:-0}" = 1 ]; then
    run tuned TROUPE_GEMM_TUNE=1 -- --batches 16,64,256 --gen "$gen"
  fi
  # PERF_FUSION_COMPARE=1: the same binary with and without each of the changes written on
  # 2026-12-05 without a GPU (docs/gpu-notes.md, "Next device calls").
  if [ "${PERF_FUSION_COMPARE:-0}" = 1 ]; then
    run fused_norm TROUPE_FUSE_NORM=1 -- --batches 1 --gen "$gen"
    run fused_pipelined TROUPE_FUSE_NORM=1 -- --pipeline --batches 1,64,256 --gen "$gen"
    run fused_all TROUPE_FUSE_NORM=1 TROUPE_ATTN_FUSED_MERGE=1 -- --pipeline --batches 1,4,64 --gen "$gen"
    run no_workspace TROUPE_ATTN_WORKSPACE=0 -- --batches 1,64,256 --gen "$gen"
    run default_again -- --batches 1,64,256 --gen "$gen"
  fi
  # The decode batches with each step enqueued on the device before the one before it ends
  # (troupe_gpu bench --pipeline: its tokens fed on the device), as `troupe serve` runs them
  # by default; PERF_PIPELINE=0 leaves them out.
  if [ "${PERF_PIPELINE:-1}" = 1 ]; then
    run pipeline -- --pipeline --batches 1,16,64,256 --gen "$gen"
  fi
  # PERF_OVERLAP=1 adds the decode batches with each step planned while the one before it
  # runs (scheduler.overlap): the GPU idle column shows what the host still costs.
  if [ "${PERF_OVERLAP:-0}" = 1 ]; then
    run overlap -- --overlap --batches 1,16,64,256 --gen "$gen"
  fi
fi
if has peer; then
  echo "== PyTorch peer ($(date +%T))" | tee -a "$log"
  timeout 420 python3 tools/gpu/peer_bench.py --config /tmp/l8b --batches "${PEER_BATCHES:-1,64,256}" \
    --prefill "${PEER_PREFILL:-1024,2048,8192}" --gen "$gen" 2>> "$log" | tee "$out/peer.txt" | grep -v '^{' || status=1
fi
python3 - "$out" <<'PY' | tee "$out/table.md"
import json, os, sys
out = sys.argv[1]
def lines(name):
    p = os.path.join(out, name)
    return [json.loads(l) for l in open(p) if l.strip().startswith("{")] if os.path.exists(p) else []
kern = lines("kernels.jsonl")
if kern:
    print("| op | m | cuBLASLt us (GB/s) | GEMV us (GB/s) |")
    print("|---|---|---|---|")
    for r in kern:
        if r.get("kind") == "matmul" and r["m"] in (1, 8, 64):
            g = f"{r['gemv_us']:.1f} ({r['gemv_GBps']:.0f})" if "gemv_us" in r else "-"
            v = " ".join(f"v{i} {r[f'gemv_v{i}_GBps']:.0f}" for i in (1, 2) if f"gemv_v{i}_GBps" in r)
            print(f"| {r['op']} | {r['m']} | {r['cublas_us']:.1f} ({r['cublas_GBps']:.0f}) | {g} {v} |")
    cold = [r for r in kern if r.get("kind") == "cold_plan"]
    for warm in (False, True):
        c = [r for r in cold if r.get("plan_rows_warm", False) == warm]
        if c:
            print(("after its plan row count ran" if warm else "first product at an unseen row count") +
                  " / second (us): " + ", ".join(f"{r['op']} m={r['m']} {r['first_us']:.0f}/{r['second_us']:.0f}" for r in c))
    for r in kern:
        if r.get("kind") == "ops":
            print("ops m=%d: " % r["m"] + ", ".join(f"{k[:-3]} {v:.1f}" for k, v in r.items() if k.endswith("_us")))
chain = lines("chain.jsonl")
if chain:
    print("| chain | GEMV variant (short k, long k) | us a layer | weight GB/s | % copy |")
    print("|---|---|---|---|---|")
    for r in chain:
        if r.get("kind") == "chain":
            pct = f"{r['GBps']:.0f} | {r['pct_copy']:.1f}" if "GBps" in r else "- | -"
            print(f"| {r['chain']} | {r['short_variant']}, {r['long_variant']} | {r['us_per_layer']:.2f} | {pct} |")
bench = lines("bench.jsonl")
peer = lines("peer.txt")
print("\n| engine | batch | ms/step | tokens/s | % roofline | device ms | GPU idle ms |")
print("|---|---|---|---|---|---|---|")
for b in bench:
    for d in b["decode"]:
        frac = b["roofline_ms"] / d["ms_per_step"] * 100
        idle = f"{d['device_ms']:.3f} | {d['gpu_idle_ms']:.3f}" if "device_ms" in d else "- | -"
        print(f"| troupe {b['variant']} | {d['batch']} | {d['ms_per_step']:.3f} | {d['tokens_per_s']:.0f} | {frac:.1f} | {idle} |")
roof = bench[0]["roofline_ms"] if bench else None
for p in peer:
    for d in p["decode"]:
        frac = f"{roof / d['ms_per_step'] * 100:.1f}" if roof else "-"
        print(f"| pytorch peer | {d['batch']} | {d['ms_per_step']:.3f} | {d['tokens_per_s']:.0f} | {frac} | - | - |")
if bench:
    b = next((x for x in bench if x["variant"] == "default"), bench[-1])  # the run with prefill lengths
    print(f"\ncopy {b['copy_rate_GBps']:.0f} GB/s, weights {b['weight_GB_per_gpu']:.2f} GB, roofline {b['roofline_ms']:.3f} ms, gemm {b['gemm_TFLOPs']:.0f} TFLOP/s")
    print("troupe prefill: " + ", ".join(f"{x['prompt']}: {x['ttft_ms']:.1f} ms" if "ttft_ms" in x else f"{x['prompt']}: {x['error']}" for x in b["prefill"]))
for p in peer:
    print("peer prefill: " + ", ".join(f"{x['prompt']}: {x['ms']:.1f} ms" for x in p["prefill"]) + f"; peer weights {p['weight_GB']:.2f} GB")
PY
exit $status
