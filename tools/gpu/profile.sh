#!/usr/bin/env bash
# Where a decode step's GPU time goes: Nsight Compute (ncu, on the GPU machine's image) times
# every kernel of a short `troupe_gpu bench` (Llama-3.1-8B shape, random bf16 weights, no
# prefill lengths) at each batch size, and tools/gpu/profile_table.py sums the times per
# kernel and shape over the decode steps. ncu runs the kernels one at a time, so the sum is
# the step's kernel time without the gaps between kernels: the bench's own device_ms beside
# it (same batch, no profiler) tells how much the gaps cost.
#   here:   tools/gpu/bundle.sh                    (carry .gpu)
#   device: bash tools/gpu/profile.sh               (tables under $OUT)
# Options (environment): PROFILE_BATCHES ("1 64 256"), GEN (12 decode steps a run),
# PROFILE_KERNELS (1: also `troupe_gpu kernels`, the per-op timings).
# Exit status: 0 every batch profiled, 1 a run failed, 77 no ncu on this machine (skipped).
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=$PWD/.gpu/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
source tools/gpu/unpack.sh
out="${OUT:-/tmp/troupe-profile}"
mkdir -p "$out"
bin=.gpu/bin
ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
if [ -z "$ncu" ]; then
  echo "profile: skipped: no ncu on this machine"
  exit 77
fi
[ -f /tmp/l8b/config.json ] || python3 tools/gpu/make_model.py --shape llama3-8b --out /tmp/l8b > "$out/profile.log" 2>&1
status=0
if [ "${PROFILE_KERNELS:-1}" = 1 ]; then
  timeout 150 "$bin/troupe_gpu" kernels --random --model /tmp/l8b > "$out/kernels.jsonl" 2>> "$out/profile.log" || status=1
fi
for b in ${PROFILE_BATCHES:-1 64 256}; do
  # Unprofiled first: the step's device time with the gaps, for the comparison.
  timeout 120 "$bin/troupe_gpu" bench --random --model /tmp/l8b --batches "$b" --prompt-lens 1000000 \
    --max-batch-tokens 8192 --gen 32 2>> "$out/profile.log" > "$out/bench_b$b.json" || status=1
  # --clock-control none: leave the clocks alone (the machine's rule); caches are flushed
  # before each kernel (ncu's default), as weights streaming past L2 are in a real step.
  timeout 300 "$ncu" --clock-control none --metrics gpu__time_duration.sum --csv --print-units base \
    --log-file "$out/ncu_b$b.csv" "$bin/troupe_gpu" bench --random --model /tmp/l8b --batches "$b" \
    --prompt-lens 1000000 --max-batch-tokens 8192 --gen "${GEN:-12}" >> "$out/profile.log" 2>&1 || status=1
done
python3 tools/gpu/profile_table.py "$out" ${PROFILE_BATCHES:-1 64 256} | tee "$out/profile.md" || status=1
exit $status
