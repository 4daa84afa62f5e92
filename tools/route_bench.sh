#!/usr/bin/env bash
# Cache-aware routing against least-loaded routing, in one command: for each replica count
# it writes a cluster file (one node, one CPU shard per replica, 1 thread each), starts
# `troupe serve` once per router.policy (least_loaded, then cache_aware), runs the same
# multi-turn chat workload (tools/loadgen.py --multiturn: conversations over shared system
# prompts whose histories grow turn by turn) and writes into OUTDIR:
#   routing.md          markdown: machine, command, table (for docs/benchmarks.md)
#   R-POLICY.json       every figure of a run (tools/loadgen.py --json)
#   R-POLICY.log        the server's log; cluster-R.yaml the cluster file
#
#   tools/route_bench.sh OUTDIR [--replicas "2 4"] [--conversations 12] [--turns 4]
#                        [--concurrency 4] [--output-len 16] [--system-prompts 2]
#                        [--system-len 200] [--user-len 24] [--kv-tokens 8192]
# Environment: TROUPE_BUILD (default <repo>/build), TROUPE_VENV (default <repo>/.venv).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
usage() { sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[ $# -ge 1 ] || usage
case "$1" in -h|--help) usage ;; -*) echo "route_bench.sh: the first argument is OUTDIR, got '$1'" >&2; exit 2 ;; esac
out="$1"; shift
invocation="tools/route_bench.sh OUTDIR $*"
replicas="2 4" conversations=12 turns=4 concurrency=4 output=16 systems=2 system_len=200 user_len=24 kv=8192
while [ $# -gt 0 ]; do
  [ $# -ge 2 ] || { echo "route_bench.sh: option '$1' needs a value" >&2; exit 2; }
  case "$1" in
    --replicas) replicas="$2" ;;
    --conversations) conversations="$2" ;;
    --turns) turns="$2" ;;
    --concurrency) concurrency="$2" ;;
    --output-len) output="$2" ;;
    --system-prompts) systems="$2" ;;
    --system-len) system_len="$2" ;;
    --user-len) user_len="$2" ;;
    --kv-tokens) kv="$2" ;;
    *) echo "route_bench.sh: unknown option '$1'" >&2; exit 2 ;;
  esac
  shift 2
done
for r in $replicas; do
  [[ "$r" =~ ^[1-9][0-9]*$ ]] || { echo "route_bench.sh: --replicas: expected counts like \"2 4\", got '$replicas'" >&2; exit 2; }
done
build="${TROUPE_BUILD:-$root/build}"
py="${TROUPE_VENV:-$root/.venv}/bin/python"
troupe="$build/bin/troupe"
[ -x "$troupe" ] || { echo "route_bench.sh: no troupe binary at $troupe (build first, or set TROUPE_BUILD)" >&2; exit 1; }
[ -x "$py" ] || { echo "route_bench.sh: no Python venv at ${py%/bin/python} (tools/venv.sh, or set TROUPE_VENV)" >&2; exit 1; }
mkdir -p "$out"

free_ports() {  # two free ports: the head's and the node's
  "$py" - <<'PY'
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])
PY
}

write_cluster() {  # write_cluster R FILE: R replicas of one CPU shard (1 thread) on one node
  local devices
  devices=$(printf 'cpu, %.0s' $(seq 1 "$1")); devices="[${devices%, }]"
  cat >"$2" <<YAML
# tools/route_bench.sh: $1 replicas of the default model, one CPU shard (1 thread) each.
model:
  path: default
parallel:
  replicas: $1
nodes:
  - name: local
    host: 127.0.0.1
    devices: $devices
    threads: 1
scheduler:
  kv_tokens: $kv
YAML
}

pid=""
stop_server() {
  [ -n "$pid" ] || return 0
  kill -TERM -- "-$pid" 2>/dev/null || { pid=""; return 0; }
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || { pid=""; return 0; }; sleep 0.2; done
  kill -KILL -- "-$pid" 2>/dev/null || true
  pid=""
}
trap stop_server EXIT

run_one() {  # run_one R POLICY
  local r="$1" policy="$2" log="$out/$1-$2.log" head_port node_port port=""
  read -r head_port node_port < <(free_ports)
  : >"$log"
  setsid "$troupe" serve --config "$out/cluster-$r.yaml" --set router.policy="$policy" --set server.port=0 \
    --set head.port="$head_port" --set "nodes[0].port=$node_port" >>"$log" 2>&1 &
  pid=$!
  for _ in $(seq 1 1200); do
    port=$(sed -n 's/.*http: listening on [0-9.]*:\([0-9]*\).*/\1/p' "$log" | head -n 1)
    [ -n "$port" ] && break
    kill -0 "$pid" 2>/dev/null || { echo "route_bench.sh: troupe serve exited; see $log" >&2; tail -n 20 "$log" >&2; exit 1; }
    sleep 0.25
  done
  [ -n "$port" ] || { echo "route_bench.sh: troupe serve did not report its HTTP port in 300 s; see $log" >&2; exit 1; }
  echo "route_bench.sh: $r replicas, $policy: troupe serve (pid $pid) on port $port" >&2
  "$py" "$root/tools/loadgen.py" --base-url "http://127.0.0.1:$port" --multiturn "$conversations" --turns "$turns" \
    --system-prompts "$systems" --system-len "$system_len" --user-len "$user_len" --concurrency "$concurrency" \
    --output-len "$output" --wait-ready 600 --warmup 1 --json "$out/$r-$policy.json" --quiet >&2
  stop_server
}

for r in $replicas; do
  write_cluster "$r" "$out/cluster-$r.yaml"
  for policy in least_loaded cache_aware; do run_one "$r" "$policy"; done
done

cpu="$(lscpu | sed -n 's/^Model name: *//p' | head -n 1)"
{
  echo "Cache-aware routing: \`tools/route_bench.sh\` on $(date -u +%Y-%m-%d), $cpu, $(nproc) cores;"
  echo "one CPU shard (1 thread) per replica, scheduler.kv_tokens $kv; $conversations conversations x $turns turns"
  echo "over $systems shared system prompts ($system_len words), user messages of $user_len words, $output"
  echo "tokens per answer (greedy, ignore_eos), $concurrency conversations at once, streamed chat requests."
  echo "Load average when the runs ended: $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min)."
  echo
  "$py" - "$out" $replicas <<'PY'
import json, sys
out, counts = sys.argv[1], sys.argv[2:]
print("| replicas | policy | ok/err | prefix hit rate | TTFT p50 (ms) | TTFT p99 (ms) | out tok/s | req/s | routed (cache / balance / least loaded) |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for r in counts:
    for policy in ("least_loaded", "cache_aware"):
        run = json.load(open(f"{out}/{r}-{policy}.json"))["runs"][0]
        c = run.get("cache") or {}
        rate = c.get("prefix_hit_rate")
        routed = c.get("routed", {})
        print(f"| {r} | {policy} | {run['ok']}/{run['failed']} | {'-' if rate is None else f'{100 * rate:.1f}%'} "
              f"| {run['ttft_ms']['p50']:.0f} | {run['ttft_ms']['p99']:.0f} | {run['output_throughput']:.2f} "
              f"| {run['request_throughput']:.3f} | {routed.get('cache', 0)} / {routed.get('balance', 0)} / "
              f"{routed.get('least_loaded', 0)} |")
PY
  echo
  echo "Command: \`$invocation\`"
} >"$out/routing.md"
cat "$out/routing.md"
echo "route_bench.sh: results in $out (routing.md, R-POLICY.json, R-POLICY.log)" >&2
