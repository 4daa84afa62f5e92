#!/usr/bin/env bash
# tools/bench_overhead.sh on the GPU machine's CPU side (an idle 16-core host), where the
# GGUF model cannot travel: makes SmolLM2-135M's shape with random F32 weights through
# transformers (from the carried config.json and tokenizer files in .gpu/hf/) and runs
# the overhead table at 4, 1 and 2 threads per node. Run from the repository root there:
#   bundle here: tools/gpu/bundle_libs.sh .gpu build/bin/troupe && mkdir -p .gpu/hf &&
#     cp ~/.cache/troupe/models/SmolLM2-135M-Instruct-hf/{config.json,tokenizer*.json} .gpu/hf/
#   device call (carry .gpu): bash tools/bench_overhead_device.sh
set -e
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=$PWD/.gpu/lib:/usr/local/cuda/lib64:$LD_LIBRARY_PATH
python3 - <<'PY'
import json, torch, transformers, shutil
cfg = transformers.AutoConfig.from_pretrained(".gpu/hf")
torch.manual_seed(0)
m = transformers.LlamaForCausalLM(cfg).to(torch.float32)
m.save_pretrained("/tmp/m", safe_serialization=True)
for f in ("tokenizer.json", "tokenizer_config.json"): shutil.copy(".gpu/hf/" + f, "/tmp/m/" + f)
print("model written")
PY
mkdir -p /tmp/cfg
for f in single pipeline2 tensor2; do  # 4 threads per node (single: all cores)
  sed -e 's|path: default|path: /tmp/m|' -e 's|threads: 1 |threads: 4 |' cluster-config/examples/$f.yaml > /tmp/cfg/$f.yaml
  grep -q "threads:" /tmp/cfg/$f.yaml || sed -i 's|devices: \[cpu\]|devices: [cpu]\n    threads: 4|' /tmp/cfg/$f.yaml
done
grep -n "threads\|path" /tmp/cfg/*.yaml
nproc; uptime
TROUPE_BUILD=$PWD/.gpu TROUPE_VENV=/nonexistent tools/bench_overhead.sh --runs 3 --gen-tokens 64 /tmp/cfg/single.yaml /tmp/cfg/pipeline2.yaml /tmp/cfg/tensor2.yaml | tee "${OUT:-.}/overhead.md"
for t in 1 2; do sed -i "s|threads: [0-9]*|threads: $t|" /tmp/cfg/*.yaml; echo "threads $t"; TROUPE_BUILD=$PWD/.gpu TROUPE_VENV=/nonexistent tools/bench_overhead.sh --runs 2 --gen-tokens 64 /tmp/cfg/single.yaml /tmp/cfg/pipeline2.yaml /tmp/cfg/tensor2.yaml | tee -a "${OUT:-.}/overhead.md"; done
