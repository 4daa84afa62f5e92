#!/usr/bin/env bash
# Serving benchmark in one command: starts `troupe serve` (cluster-config/examples/single.yaml
# on free ports), waits until it is ready, runs a load-generator sweep over concurrency
# and writes docs-ready results into OUTDIR:
#   serving.md   markdown: machine, command, table (for docs/benchmarks.md)
#   serving.json every figure (tools/loadgen.py --json)
#   serving.png  latency p50/p99 against concurrency
#   server.log   the server's log
#
#   tools/bench_serving.sh OUTDIR [--concurrency 1,2,4,8] [--num-prompts 16]
#                          [--input-len 64] [--output-len 32] [--endpoint completions|chat]
#                          [--config FILE] [--set KEY=VALUE ...]
# Environment: TROUPE_BUILD (default <repo>/build), TROUPE_VENV (default <repo>/.venv).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
usage() { sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[ $# -ge 1 ] || usage
case "$1" in -h|--help) usage ;; -*) echo "bench_serving.sh: the first argument is OUTDIR, got '$1'" >&2; exit 2 ;; esac
out="$1"; shift
invocation="tools/bench_serving.sh OUTDIR $*"
concurrency=1,2,4,8 prompts=16 input=64 output=32 endpoint=completions
config="$root/cluster-config/examples/single.yaml"
sets=()
while [ $# -gt 0 ]; do
  [ $# -ge 2 ] || { echo "bench_serving.sh: option '$1' needs a value" >&2; exit 2; }
  case "$1" in
    --concurrency) concurrency="$2" ;;
    --num-prompts) prompts="$2" ;;
    --input-len) input="$2" ;;
    --output-len) output="$2" ;;
    --endpoint) endpoint="$2" ;;
    --config) config="$2" ;;
    --set) sets+=(--set "$2") ;;
    *) echo "bench_serving.sh: unknown option '$1'" >&2; exit 2 ;;
  esac
  shift 2
done
build="${TROUPE_BUILD:-$root/build}"
py="${TROUPE_VENV:-$root/.venv}/bin/python"
troupe="$build/bin/troupe"
[ -x "$troupe" ] || { echo "bench_serving.sh: no troupe binary at $troupe (build first, or set TROUPE_BUILD)" >&2; exit 1; }
[ -x "$py" ] || { echo "bench_serving.sh: no Python venv at ${py%/bin/python} (tools/venv.sh, or set TROUPE_VENV)" >&2; exit 1; }
[ -f "$config" ] || { echo "bench_serving.sh: no cluster file $config" >&2; exit 1; }
mkdir -p "$out"

# Two free ports for the head and the node (the HTTP port is chosen by the server: port 0).
read -r head_port node_port < <("$py" - <<'PY'
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])
PY
)

log="$out/server.log"
: >"$log"
setsid "$troupe" serve --config "$config" --set server.port=0 --set head.port="$head_port" \
  --set "nodes[0].port=$node_port" "${sets[@]}" >>"$log" 2>&1 &
pid=$!
stop_server() {
  kill -TERM -- "-$pid" 2>/dev/null || return 0
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
  kill -KILL -- "-$pid" 2>/dev/null || true
}
trap stop_server EXIT

port=""
for _ in $(seq 1 1200); do
  port=$(sed -n 's/.*http: listening on [0-9.]*:\([0-9]*\).*/\1/p' "$log" | head -n 1)
  [ -n "$port" ] && break
  kill -0 "$pid" 2>/dev/null || { echo "bench_serving.sh: troupe serve exited; see $log" >&2; tail -n 20 "$log" >&2; exit 1; }
  sleep 0.25
done
[ -n "$port" ] || { echo "bench_serving.sh: troupe serve did not report its HTTP port in 300 s; see $log" >&2; exit 1; }
url="http://127.0.0.1:$port"
echo "bench_serving.sh: troupe serve (pid $pid) on $url; sweep $concurrency, $prompts prompts, input $input, output $output" >&2

args=(--base-url "$url" --endpoint "$endpoint" --concurrency "$concurrency" --num-prompts "$prompts"
      --input-len "$input" --output-len "$output" --wait-ready 600 --warmup 2
      --json "$out/serving.json" --plot "$out/serving.png" --markdown "$out/table.md")
"$py" "$root/tools/loadgen.py" "${args[@]}" | tee "$out/serving.txt"

cpu="$(lscpu | sed -n 's/^Model name: *//p' | head -n 1)"
{
  echo "Serving benchmark: \`tools/bench_serving.sh\` on $(date -u +%Y-%m-%d), $cpu, $(nproc) cores,"
  echo "\`$(basename "$config")\` (one CPU shard), $endpoint endpoint, input $input tokens, output $output"
  echo "tokens (ignore_eos), $prompts requests per concurrency, streamed; latencies in ms."
  echo "Load average when the sweep ended: $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min)."
  echo
  cat "$out/table.md"
  echo
  echo "Command: \`$invocation\`"
} >"$out/serving.md"
rm -f "$out/table.md"
echo "bench_serving.sh: results in $out (serving.md, serving.json, serving.png, server.log)" >&2
