#!/usr/bin/env bash
# kill -9 of one GPU shard process (node gpu1) of a two-GPU replica (Llama-3.1-8B shape, random
# weights) while a client streams: the surviving shard must not hang (its NCCL communicator is
# aborted), the head restarts the node, the replica comes back and the in-flight request
# completes (its tokens are compared with the fault-free run's). Usage:
#   tools/gpu/kill_test.sh [cluster file]   (default cluster-config/examples/gpu-tensor2.yaml;
#   gpu-pipeline2.yaml kills stage 1: a stage-local recovery, stage 0 keeps its KV cache;
#   SERVE_ARGS="--set fault_tolerance.stage_recovery=false" compares the full re-prefill;
#   BATCH_INVARIANT=1 turns on scheduler.batch_invariant and then requires the resumed
#   request's tokens to equal the fault-free run's: with two tensor ranks an all-reduce is one
#   addition per element, so the sum does not depend on the batch either);
#   KILL_NODE names the node killed (default gpu1): on one GPU,
#   `BATCH_INVARIANT=1 KILL_NODE=gpu0 tools/gpu/kill_test.sh cluster-config/examples/gpu-single.yaml`
#   kills the only node, which the head restarts (weights loaded again), and the request
#   resumes by re-prefill)
# Run on the GPU machine after tools/gpu/check.sh's bundle (.gpu/bin/troupe); prints one JSON
# line, writes $OUT/kill-<file>.log.
set -u
config="${1:-cluster-config/examples/gpu-tensor2.yaml}"
name=$(basename "$config" .yaml)
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=$PWD/.gpu/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
source tools/gpu/unpack.sh
out="${OUT:-/tmp/troupe-gpu}"; mkdir -p "$out"
dir=/tmp/killtest; rm -rf "$dir"; mkdir -p "$dir"
troupe=.gpu/bin/troupe
invariant="${BATCH_INVARIANT:-0}"
kill_node="${KILL_NODE:-gpu1}"
serve_args="${SERVE_ARGS:-}"
[ "$invariant" = 1 ] && serve_args="$serve_args --set scheduler.batch_invariant=true"
# The client tokenizes: the model directory needs the tokenizer (perf.sh writes /tmp/l8b without one).
[ -f /tmp/l8b/tokenizer.json ] || python3 tools/gpu/make_model.py --shape llama3-8b --out /tmp/l8b --tokenizer .gpu/hf/tokenizer.json >/dev/null
now() { date +%s.%N; }
"$troupe" serve --config "$config" $serve_args > "$dir/serve.out" 2> "$dir/serve.log" &
serve=$!
for _ in $(seq 600); do grep -q "serving:" "$dir/serve.log" && break; sleep 0.2; done
gen=("$troupe" generate --head 127.0.0.1:7100 --model /tmp/l8b --prompt "Tell me a long story about a lighthouse." -n 256 -t 0 --ignore-eos -o json)
"${gen[@]}" > "$dir/ref.json" 2> "$dir/ref.log"
ref_rc=$?
readys=$(grep -c "replica 0: ready" "$dir/serve.log")
"${gen[@]}" > "$dir/story.json" 2> "$dir/story.log" &
client=$!
sleep 1.5
victim=$(grep -oP "node $kill_node starting \(pid \K[0-9]+" "$dir/serve.log" | tail -1)
t_kill=$(now)
kill -9 "$victim"
t_ready=""
for _ in $(seq 1200); do
  if [ "$(grep -c "replica 0: ready" "$dir/serve.log")" -gt "$readys" ]; then t_ready=$(now); break; fi
  sleep 0.05
done
timeout 180 tail --pid="$client" -f /dev/null; wait "$client"; client_rc=$?
t_done=$(now)
"${gen[@]}" > /dev/null 2>&1; later_rc=$?
kill -TERM "$serve"; timeout 60 tail --pid="$serve" -f /dev/null; wait "$serve"; serve_rc=$?
cat "$dir/serve.log" "$dir/ref.log" "$dir/story.log" > "$out/kill-$name.log"
python3 - "$dir" "$t_kill" "${t_ready:-0}" "$t_done" "$ref_rc" "$client_rc" "$later_rc" "$serve_rc" "$name" "$invariant" "$kill_node" <<'PY'
import json, re, sys
d, t_kill, t_ready, t_done = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
ref_rc, client_rc, later_rc, serve_rc = map(int, sys.argv[5:9])
name, invariant, kill_node = sys.argv[9], sys.argv[10] == "1", sys.argv[11]
def toks(f):
    try:
        return json.load(open(f))["tokens"]
    except Exception:
        return None
ref, got = toks(f"{d}/ref.json"), toks(f"{d}/story.json")
log = open(f"{d}/serve.log").read()
local = re.search(r"stage-local recovery: stage\(s\) (\S+) rebuilt from (\d+) token\(s\) in (\d+) ms.*?(\d+) written", log)
r = {"test": f"kill -9 of node {kill_node} ({name})", "ref_rc": ref_rc, "client_rc": client_rc, "later_rc": later_rc,
     "serve_rc": serve_rc, "tokens_equal": ref is not None and ref == got, "n_tokens": len(got or []),
     "ready_after_kill_s": round(t_ready - t_kill, 2) if t_ready else None,
     "client_done_after_kill_s": round(t_done - t_kill, 2)}
# Without scheduler.batch_invariant the GPU kernels are not batch-invariant (a resumed request
# re-prefills what it had decoded), so equal tokens are reported, not required; no hang, no
# error and a full answer are. With it, equal tokens are required too.
if local:
    r.update({"stage_local": True, "replayed_tokens": int(local.group(2)), "replay_ms": int(local.group(3)),
              "survivor_kv_writes": int(local.group(4))})
r["batch_invariant"] = invariant
r["pass"] = (ref_rc == 0 and client_rc == 0 and later_rc == 0 and r["n_tokens"] == 256 and t_ready > 0
             and (r["tokens_equal"] or not invariant))
print(json.dumps(r))
PY
