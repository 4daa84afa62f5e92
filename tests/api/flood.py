#!/usr/bin/env python3
"""Flood test: thousands of concurrent clients against one troupe gateway.

  flood.py --base-url http://127.0.0.1:PORT --server-pid PID --connections 5000 [--timeout 120]

Opens --connections TCP connections at once (all are connected before any sends), then
each sends one small POST /v1/completions (max_tokens 4, Connection: close). Every
response must be either
  - 200 with a well-formed text_completion (choices[0].text a string, a finish_reason,
    usage with at most 4 completion tokens), or
  - 429 with a Retry-After header (a whole number of seconds).
Anything else fails the test: another status (any 5xx), a malformed 200, a connection
refused, reset or closed without a response, no answer within --timeout, or the server
process (--server-pid) dying.

Memory: a warm-up flood of the same size runs first (so the allocator's arenas and the
gateway's pools reach their working size), the server settles, and its resident set
(VmRSS of /proc/PID/status) is the baseline. After the measured flood the RSS must come
back to within max(--rss-tolerance-pct of the baseline, --rss-tolerance-mib) of the
baseline within --settle seconds. Peak RSS is sampled during the flood.

Finally one ordinary completion must still succeed. Prints a summary (ok, 429, other,
wall time, RSS before/peak/after) and exits 0 on pass, 1 on failure, 2 on a usage error.
"""
import argparse
import asyncio
import json
import os
import resource
import sys
import time
from collections import Counter
from typing import Optional, Tuple
from urllib.parse import urlparse


class Usage(Exception):
    """A bad command-line value."""


def parse_args(argv):
    p = argparse.ArgumentParser(prog="flood.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--base-url", required=True, help="http://127.0.0.1:PORT (a trailing /v1 is accepted)")
    p.add_argument("--server-pid", type=int, required=True, help="pid of the troupe serve process (its RSS is checked)")
    p.add_argument("--connections", type=int, default=5000, help="concurrent connections per flood (default: 5000)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds each flood may take in all (default: 120)")
    p.add_argument("--warmup", type=int, default=None, help="connections of the warm-up flood (default: --connections; 0 = none)")
    p.add_argument("--settle", type=float, default=30.0, help="seconds the RSS may take to come back (default: 30)")
    p.add_argument("--rss-tolerance-pct", type=float, default=20.0, help="allowed RSS growth in percent (default: 20)")
    p.add_argument("--rss-tolerance-mib", type=float, default=30.0, help="allowed RSS growth in MiB (default: 30)")
    p.add_argument("--model", help="model name (default: the first of GET /v1/models)")
    p.add_argument("--api-key", help="bearer key, when the server needs one")
    p.add_argument("--json", dest="json_path", help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    u = urlparse(args.base_url)
    if u.scheme != "http" or not u.hostname:
        raise Usage(f"--base-url: expected http://HOST:PORT, got '{args.base_url}'")
    try:
        args.host, args.port = u.hostname, u.port or 80
    except ValueError as e:
        raise Usage(f"--base-url: bad port in '{args.base_url}': {e}")
    if args.connections < 1:
        raise Usage(f"--connections: expected a positive number, got {args.connections}")
    if args.timeout <= 0 or args.settle < 0:
        raise Usage("--timeout must be > 0 and --settle >= 0")
    if args.warmup is None:
        args.warmup = args.connections
    if not os.path.exists(f"/proc/{args.server_pid}/status"):
        raise Usage(f"--server-pid: no process {args.server_pid}")
    return args


def raise_fd_limit(needed: int) -> int:
    """Raises RLIMIT_NOFILE to `needed` (the hard limit too when allowed); the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, max(hard, needed)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# ----------------------------------------------------------------------------- the server process

def proc_status(pid: int) -> dict:
    try:
        with open(f"/proc/{pid}/status") as f:
            return dict(line.split(":", 1) for line in f if ":" in line)
    except OSError:
        return {}


def alive(pid: int) -> bool:
    state = proc_status(pid).get("State", "").strip()
    return bool(state) and not state.startswith("Z")


def rss_mib(pid: int) -> Optional[float]:
    v = proc_status(pid).get("VmRSS")
    return int(v.split()[0]) / 1024.0 if v else None


# ----------------------------------------------------------------------------- HTTP

def parse_response(raw: bytes) -> Tuple[int, dict, bytes]:
    """(status, lower-cased headers, body) of a complete HTTP/1.1 response; ValueError if malformed."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        raise ValueError("no end of headers")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        raise ValueError(f"bad status line {lines[0][:80]!r}")
    status = int(parts[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = dechunk(body)
    elif "content-length" in headers:
        n = int(headers["content-length"])
        if len(body) < n:
            raise ValueError(f"body of {len(body)} bytes, Content-Length {n}")
        body = body[:n]
    return status, headers, body


def dechunk(data: bytes) -> bytes:
    out = b""
    while True:
        size_line, sep, data = data.partition(b"\r\n")
        if not sep:
            raise ValueError("truncated chunked body")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return out
        if len(data) < size + 2:
            raise ValueError("truncated chunk")
        out, data = out + data[:size], data[size + 2:]


def check_completion(body: bytes) -> str:
    """'' when body is a well-formed text_completion of at most 4 tokens, else what is wrong."""
    try:
        j = json.loads(body)
        choice = j["choices"][0]
        if j.get("object") != "text_completion":
            return f"object is {j.get('object')!r}"
        if not isinstance(choice["text"], str):
            return "choices[0].text is not a string"
        if choice.get("finish_reason") not in ("length", "stop"):
            return f"finish_reason {choice.get('finish_reason')!r}"
        if not 0 <= int(j["usage"]["completion_tokens"]) <= 4:
            return f"usage.completion_tokens {j['usage']['completion_tokens']}"
    except (ValueError, KeyError, IndexError, TypeError) as e:
        return f"malformed completion ({type(e).__name__}: {e})"
    return ""


def request_bytes(args, model: str, prompt: str) -> bytes:
    body = json.dumps({"model": model, "prompt": prompt, "max_tokens": 4, "temperature": 0}).encode()
    auth = f"Authorization: Bearer {args.api_key}\r\n" if args.api_key else ""
    return (f"POST /v1/completions HTTP/1.1\r\nHost: {args.host}:{args.port}\r\n{auth}"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            ).encode() + body


async def one_client(args, payload: bytes, go: asyncio.Event, connected: list, deadline: float) -> Tuple[str, str]:
    """(outcome, detail): outcome is 'ok', '429' or a failure kind."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(args.host, args.port),
                                                max(0.1, deadline - time.monotonic()))
    except asyncio.TimeoutError:
        return "connect_timeout", "no connection before the deadline"
    except OSError as e:
        return "connect_error", f"{type(e).__name__}: {e}"
    connected[0] += 1
    try:
        await go.wait()
        writer.write(payload)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(-1), max(0.1, deadline - time.monotonic()))
    except asyncio.TimeoutError:
        return "timeout", "no complete response before the deadline"
    except OSError as e:
        return "reset", f"{type(e).__name__}: {e}"
    finally:
        writer.close()
    if not raw:
        return "closed", "connection closed without a response"
    try:
        status, headers, body = parse_response(raw)
    except ValueError as e:
        return "malformed", str(e)
    if status == 200:
        problem = check_completion(body)
        return ("ok", "") if not problem else ("bad_200", problem)
    if status == 429:
        ra = headers.get("retry-after", "")
        return ("429", "") if ra.isdigit() else ("429_without_retry_after", f"Retry-After {ra!r}")
    return f"status_{status}", body[:160].decode("utf-8", "replace")


async def sample_rss(pid: int, peak: list, stop: asyncio.Event) -> None:
    while not stop.is_set():
        r = rss_mib(pid)
        if r is not None:
            peak[0] = max(peak[0], r)
        try:
            await asyncio.wait_for(stop.wait(), 0.1)
        except asyncio.TimeoutError:
            pass


async def flood(args, model: str, n: int, label: str) -> dict:
    """Runs one flood of n connections; counts of outcomes, examples, wall time, peak RSS."""
    start = time.monotonic()
    deadline = start + args.timeout
    go, stop, connected, peak = asyncio.Event(), asyncio.Event(), [0], [rss_mib(args.server_pid) or 0.0]
    sampler = asyncio.ensure_future(sample_rss(args.server_pid, peak, stop))
    tasks = [asyncio.ensure_future(one_client(args, request_bytes(args, model, f"Request {i}: hello"), go,
                                              connected, deadline)) for i in range(n)]
    while connected[0] + sum(t.done() for t in tasks) < n and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    connect_s = time.monotonic() - start
    print(f"flood[{label}]: {connected[0]} of {n} connections open after {connect_s:.1f} s; sending", flush=True)
    go.set()
    results = await asyncio.gather(*tasks)
    wall = time.monotonic() - start
    stop.set()
    await sampler
    counts = Counter(kind for kind, _ in results)
    examples = {}
    for kind, detail in results:
        if kind not in ("ok", "429"):
            examples.setdefault(kind, detail)
    return {"connections": n, "connected": connected[0], "connect_s": connect_s, "wall_s": wall,
            "counts": dict(counts), "examples": examples, "peak_rss_mib": peak[0]}


async def simple_request(args, payload: bytes, timeout: float) -> Tuple[int, dict, bytes]:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(args.host, args.port), timeout)
    try:
        writer.write(payload)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(-1), timeout)
    finally:
        writer.close()
    return parse_response(raw)


async def discover_model(args) -> str:
    auth = f"Authorization: Bearer {args.api_key}\r\n" if args.api_key else ""
    req = f"GET /v1/models HTTP/1.1\r\nHost: {args.host}\r\n{auth}Connection: close\r\n\r\n".encode()
    status, _, body = await simple_request(args, req, 30)
    if status != 200:
        raise RuntimeError(f"GET /v1/models answered {status}: {body[:200]!r}")
    return json.loads(body)["data"][0]["id"]


async def final_completion(args, model: str) -> str:
    """'' when one ordinary completion succeeds (retrying 429s for up to 60 s), else why not."""
    until = time.monotonic() + 60
    while True:
        status, headers, body = await simple_request(args, request_bytes(args, model, "After the flood"), 60)
        if status == 200:
            return check_completion(body)
        if status != 429 or time.monotonic() > until:
            return f"answered {status}: {body[:160]!r}"
        await asyncio.sleep(min(5.0, float(headers.get("retry-after", "1") or 1)))


async def settle(args, baseline: float, limit_mib: float) -> float:
    """Waits up to --settle seconds for the RSS to come within limit_mib of baseline; the last RSS."""
    until = time.monotonic() + args.settle
    while True:
        r = rss_mib(args.server_pid) or 0.0
        if r - baseline <= limit_mib or time.monotonic() >= until or not alive(args.server_pid):
            return r
        await asyncio.sleep(0.5)


async def quiet_rss(args, seconds: float = 2.0) -> float:
    """RSS once it stops moving (within 1 MiB over `seconds`, at most 15 s)."""
    last, since, until = rss_mib(args.server_pid) or 0.0, time.monotonic(), time.monotonic() + 15
    while time.monotonic() < until:
        await asyncio.sleep(0.25)
        r = rss_mib(args.server_pid) or 0.0
        if abs(r - last) > 1.0:
            last, since = r, time.monotonic()
        elif time.monotonic() - since >= seconds:
            break
    return last


def failures_of(run: dict) -> int:
    return sum(n for kind, n in run["counts"].items() if kind not in ("ok", "429"))


def print_run(label: str, run: dict) -> None:
    c = run["counts"]
    print(f"flood[{label}]: {run['connections']} connections: ok {c.get('ok', 0)}, 429 {c.get('429', 0)}, "
          f"other {failures_of(run)}; wall {run['wall_s']:.1f} s (connect {run['connect_s']:.1f} s); "
          f"peak RSS {run['peak_rss_mib']:.1f} MiB", flush=True)
    for kind, detail in run["examples"].items():
        print(f"  FAIL {c[kind]} x {kind}: {detail}")


async def main_async(args) -> int:
    model = args.model or await discover_model(args)
    report = {"model": model, "server_pid": args.server_pid, "rss_initial_mib": rss_mib(args.server_pid)}
    print(f"RSS before any flood: {report['rss_initial_mib']:.1f} MiB", flush=True)
    failed = False
    if args.warmup:
        report["warmup"] = await flood(args, model, args.warmup, "warm-up")
        print_run("warm-up", report["warmup"])
        failed |= failures_of(report["warmup"]) > 0
    if not alive(args.server_pid):
        print(f"FAIL: the server process {args.server_pid} died during the warm-up flood")
        return 1
    baseline = await quiet_rss(args)
    limit = max(baseline * args.rss_tolerance_pct / 100.0, args.rss_tolerance_mib)
    run = await flood(args, model, args.connections, "measured")
    print_run("measured", run)
    failed |= failures_of(run) > 0
    if not alive(args.server_pid):
        print(f"FAIL: the server process {args.server_pid} died during the flood")
        return 1
    after = await settle(args, baseline, limit)
    report.update(measured=run, rss_baseline_mib=baseline, rss_peak_mib=run["peak_rss_mib"],
                  rss_after_mib=after, rss_limit_mib=baseline + limit)
    print(f"RSS: baseline {baseline:.1f} MiB, peak {run['peak_rss_mib']:.1f} MiB, after {after:.1f} MiB "
          f"(limit {baseline + limit:.1f} MiB = baseline + max({args.rss_tolerance_pct:g}%, "
          f"{args.rss_tolerance_mib:g} MiB))")
    if after - baseline > limit:
        print("FAIL: the RSS did not return to its baseline")
        failed = True
    problem = await final_completion(args, model)
    report["final_completion"] = problem or "ok"
    print(f"after the flood: one completion {'ok' if not problem else 'FAILED: ' + problem}")
    failed |= bool(problem) or not alive(args.server_pid)
    if args.json_path:
        with open(args.json_path, "w") as f:
            json.dump(report, f, indent=2)
    print("flood: PASS" if not failed else "flood: FAIL")
    return 1 if failed else 0


def main(argv) -> int:
    try:
        args = parse_args(argv)
    except Usage as e:
        print(f"flood.py: error: {e}", file=sys.stderr)
        return 2
    limit = raise_fd_limit(max(args.connections, args.warmup) + 256)
    if limit < args.connections + 64:
        print(f"flood.py: error: cannot open {args.connections} sockets: RLIMIT_NOFILE is {limit}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(main_async(args))
    except (OSError, asyncio.TimeoutError, RuntimeError, ValueError, KeyError, IndexError) as e:
        print(f"flood: FAIL: {type(e).__name__}: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
