#!/usr/bin/env bash
# The GPU machine's one command (docs/benchmarks.md, "GPU"): CUDA kernel and forward tests,
# the transformers agreement (Llama-3.1-8B shape, 4 layers, at tensor 1, tensor 2 and
# pipeline 2), and the benchmark table (Llama-3.1-8B shape with random weights at tensor 1,
# 2 and 4, Llama-3.1-70B shape at tensor 4 when 4 GPUs are there, transformers' eager
# generate as the baseline), all in one device call. Run from the repository root there,
# with the bundle made here:
#   here:   tools/gpu/bundle.sh            (builds troupe_gpu + troupe_cuda_tests with CUDA, bundles .gpu/)
#   device: bash tools/gpu/check.sh        (carry .gpu; results under $OUT)
# The part `smollm` runs the default model, SmolLM2-135M-Instruct, against transformers on
# the same weights (tools/gpu/smollm_check.py: teacher-forced argmax >= 97%, free-running
# agreement >= transformers' own bf16) once its GGUF has come over in parts on the calls
# before (tools/gpu/carry_model.sh here prints them; tools/gpu/model_parts.sh joins them
# there); without the parts it is skipped (77), never passed.
# Options (environment): CHECK_PARTS="tests agreement bench hf smollm" (default all), GEN (64),
# SMOLLM_ARGS (more tools/gpu/smollm_check.py options, e.g. "--prompts 4").
# Exit status: 0 when everything ran and passed, 1 when anything failed, 77 when nothing
# failed but a CUDA test case, an agreement topology or the smollm part was skipped (a skip
# never counts as a pass: tests.txt and the agreement table count passed, failed and
# skipped apart).
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=$PWD/.gpu/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
source tools/gpu/unpack.sh
out="${OUT:-/tmp/troupe-gpu}"
mkdir -p "$out"
parts="${CHECK_PARTS:-tests agreement bench hf smollm}"
gen="${GEN:-64}"
bin=.gpu/bin
tok=.gpu/hf/tokenizer.json
log="$out/check.log"
n_gpus=$(nvidia-smi -L | wc -l)
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | head -1 | tee "$out/card.txt"
status=0
has() { [[ " $parts " == *" $1 "* ]]; }
source "$(dirname "${BASH_SOURCE[0]}")/verdicts.sh"

if has tests; then
  echo "== CUDA tests (each case on its own, 120 s at most)" | tee -a "$log"
  : > "$out/tests.txt"
  { "$bin/troupe_cuda_tests" --list-test-names-only || true; } | grep -v -e "^$" -e "test cases" > /tmp/cuda_tests.txt
  while read -r name; do
    t0=$(date +%s%N)
    # Catch2 reads ',' as "or" and '[ ]' as tags in a test spec: escape them as ctest does
    # (a spec that matches no case exits 1 and is counted as a failure, never a pass).
    spec=$(printf '%s' "$name" | sed 's/[],[]/\\&/g')
    timeout 120 "$bin/troupe_cuda_tests" "$spec" > /tmp/case.out 2>&1; rc=$?
    ms=$(( ($(date +%s%N) - t0) / 1000000 ))
    verdict=$(case_verdict "$rc")
    [ "$verdict" = pass ] || tail -30 /tmp/case.out >> "$log"
    printf "%s\t%6d ms\t%s\n" "$verdict" "$ms" "$name" | tee -a "$log" "$out/tests.txt"
  done < /tmp/cuda_tests.txt
  tests_summary "$out/tests.txt" | tee -a "$log" "$out/tests.txt"
  tests_status "$out/tests.txt" || status=$(worse "$status" $?)
fi
if has agreement; then
  echo "== transformers agreement" | tee -a "$log"
  python3 tools/gpu/make_model.py --shape llama3-8b --layers 4 --weights --out /tmp/l8b4 --tokenizer "$tok" >> "$log" 2>&1
  topo="tp1,pp2"; [ "$n_gpus" -ge 2 ] && topo="tp1,tp2,pp2"
  python3 tools/gpu/agreement.py --model /tmp/l8b4 --troupe "$bin/troupe_gpu" --topologies "$topo" \
    --gen "$gen" --out "$out/agreement.json" 2>>"$log" | tee -a "$log"
  rc=${PIPESTATUS[0]}
  [ "$rc" -eq 0 ] || status=$(worse "$status" "$([ "$rc" -eq 77 ] && echo 77 || echo 1)")
fi
if has bench; then
  echo "== benchmark" | tee -a "$log"
  python3 tools/gpu/make_model.py --shape llama3-8b --out /tmp/l8b --tokenizer "$tok" >> "$log" 2>&1
  : > "$out/bench.jsonl"
  for tp in 1 2 4; do
    [ "$n_gpus" -ge "$tp" ] || continue
    "$bin/troupe_gpu" bench --random --model /tmp/l8b --tp "$tp" --gen "$gen" 2>>"$log" | tee -a "$out/bench.jsonl" || status=1
  done
  if [ "$n_gpus" -ge 4 ]; then
    python3 tools/gpu/make_model.py --shape llama3-70b --out /tmp/l70b --tokenizer "$tok" >> "$log" 2>&1
    "$bin/troupe_gpu" bench --random --model /tmp/l70b --tp 4 --batches 1,16,64 --prompt-lens 1024 --gen "$gen" \
      2>>"$log" | tee -a "$out/bench.jsonl" || status=1
  fi
fi
if has hf; then
  echo "== transformers baseline" | tee -a "$log"
  [ -f /tmp/l8b/config.json ] || python3 tools/gpu/make_model.py --shape llama3-8b --out /tmp/l8b >> "$log" 2>&1
  python3 tools/gpu/hf_bench.py --config /tmp/l8b --gen 32 2>>"$log" | tee "$out/hf.json" || status=1
fi
smollm_md=/tmp/troupe-smollm.md
rm -f "$smollm_md"
if has smollm; then
  echo "== SmolLM2-135M-Instruct against transformers (the 26 golden prompts)" | tee -a "$log"
  gguf=$(bash tools/gpu/model_parts.sh join 2>>"$log"); rc=$?
  if [ "$rc" -eq 0 ]; then
    python3 tools/gpu/smollm_check.py --gguf "$gguf" --troupe "$bin/troupe_gpu" --gen "$gen" ${SMOLLM_ARGS:-} \
      --out "$out/smollm.json" --table "$smollm_md" 2>>"$log" | tee -a "$log"
    rc=${PIPESTATUS[0]}
  else
    grep "^model_parts:" "$log" | tail -2
  fi
  # No table from smollm_check.py (the model's parts missing or bad, or a crash): say so.
  [ -f "$smollm_md" ] || printf "smollm: not run (status %s; check.log says why)\nsmollm: %s\n" "$rc" \
    "$([ "$rc" -eq 77 ] && echo "0 passed, 0 failed, 1 skipped" || echo "0 passed, 1 failed, 0 skipped")" \
    | tee -a "$log" "$smollm_md"
  [ "$rc" -eq 0 ] || status=$(worse "$status" "$([ "$rc" -eq 77 ] && echo 77 || echo 1)")
fi
python3 tools/gpu/table.py "$out" > "$out/table.md"
[ -f "$smollm_md" ] && { echo; cat "$smollm_md"; } >> "$out/table.md"
cat "$out/table.md"
exit $status
