#!/usr/bin/env python3
"""Soak test: a tensor 2 x pipeline 2 cluster under mixed load while nodes die.

Starts `troupe serve` over cluster-config/examples/tensor2_pipeline2.yaml (four local node
processes, the real default model) on free ports, then for --duration seconds runs
--concurrency clients that each send, at random:

  well-formed  chat and completions, streaming and not, n = 1 or 2, stop strings,
               seeded sampling and greedy
  cancels      a stream closed by the client after its first chunk
  disconnects  a request whose connection is closed before any answer
  malformed    bad JSON, a wrong type, n = 0, max_tokens = -1, an unknown model,
               a prompt token id outside the vocabulary

while a killer sends SIGKILL to a random node process every --kill-min..--kill-max
seconds (the head restarts it; the next kill waits until the replica is ready again).
A 503 (no replica ready: the only replica is being rebuilt; the gateway answers 503
before it reads the body) is retried for up to 120 s with backoff, as the OpenAI SDKs
retry 5xx; the summary counts those retries. At the end, with the load stopped, it asserts:

  * every well-formed request succeeded (200, the right number of choices, each with
    a finish reason; streams end with [DONE]);
  * every malformed request got a 4xx;
  * no leaked KV block: troupe_kv_cache_usage_ratio (blocks held by live sequences,
    /metrics) is 0 for every replica once idle;
  * the head's memory is back near its baseline: VmRSS after the run is at most the
    baseline (taken after a warm-up, before the first kill) plus --rss-margin-mib;
  * the head and every node stop on SIGTERM and leave no process behind.

Exit status 0 when every assertion holds, 1 otherwise, 2 on a usage error. A JSON summary
goes to stdout, to WORKDIR/summary.json and to --json FILE. docs/reliability.md ("Soak") records runs.

  tools/soak.py --duration 1800            # the 30-minute soak
  tools/soak.py --duration 180             # the CI version (ctest -L soak)
"""
import argparse
import asyncio
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NODES = ["stage0-a", "stage0-b", "stage1-a", "stage1-b"]
PROMPTS = ["Tell me a story about a dragon.", "Write a poem about the sea.", "How do bees make honey?",
           "List five fruits.", "Explain how a steam engine works.", "What makes a good friend?"]


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--duration", type=float, default=180, help="seconds of load (default 180)")
    p.add_argument("--troupe", default=str(ROOT / "build" / "bin" / "troupe"), help="the troupe binary")
    p.add_argument("--config", default=str(ROOT / "cluster-config" / "examples" / "tensor2_pipeline2.yaml"))
    p.add_argument("--workdir", default=None, help="logs go here (default: a fresh folder under /tmp)")
    p.add_argument("--concurrency", type=int, default=6, help="clients sending at once (default 6)")
    p.add_argument("--kill-min", type=float, default=20, help="shortest time between node kills, s")
    p.add_argument("--kill-max", type=float, default=45, help="longest time between node kills, s")
    p.add_argument("--rss-margin-mib", type=float, default=64, help="allowed head RSS growth, MiB (default 64)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="an extra cluster-file override for troupe serve (repeatable)")
    p.add_argument("--json", default=None, help="also write the summary here")
    a = p.parse_args(argv)
    if a.duration <= 0 or a.concurrency <= 0 or not 0 < a.kill_min <= a.kill_max:
        p.error("--duration and --concurrency must be positive, 0 < --kill-min <= --kill-max")
    return a


_held_blocks = []  # open lock files: a reserved block stays ours until this process exits


def free_ports(n):
    """n consecutive free ports on 127.0.0.1, as the C++ tests reserve them (tests/test_support.h,
    reserve_ports): a block of 16 in 20000..31999, below Linux's ephemeral range, that no
    other test process holds (an flock on /tmp/troupe-test-ports/<block>)."""
    import fcntl
    lock_dir = Path("/tmp/troupe-test-ports")
    lock_dir.mkdir(exist_ok=True)
    first, blocks = 20000, 750
    for i in range(blocks):
        block = (os.getpid() + i) % blocks
        base = first + block * 16
        f = open(lock_dir / str(block), "a")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            continue
        if all(port_is_free(p) for p in range(base, base + n)):
            _held_blocks.append(f)
            return list(range(base, base + n))
        f.close()
    raise RuntimeError("no free block of 16 ports in 20000..31999")


def port_is_free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def node_pid(log_text, name):
    """The pid node NAME last registered from ('node NAME registered (pid N' in the head's
    log; the pid the head launched can differ when two launches race); 0 when none."""
    found = re.findall(r"node " + re.escape(name) + r" registered \(pid (\d+)", log_text)
    return int(found[-1]) if found else 0


class Cluster:
    """`troupe serve` on free ports, in a process group of its own."""

    def __init__(self, args, workdir):
        head, server, *nodes = free_ports(2 + len(NODES))
        self.base_url = f"http://127.0.0.1:{server}"
        self.log = workdir / "serve.log"
        sets = [f"head.port={head}", f"server.port={server}", "fault_tolerance.max_restarts=100000"]
        sets += [f"nodes[{i}].port={p}" for i, p in enumerate(nodes)] + args.set
        cmd = [args.troupe, "serve", "--config", args.config]
        for s in sets:
            cmd += ["--set", s]
        self.marker = f"head.port={head}"
        self.proc = subprocess.Popen(cmd, stdout=open(workdir / "serve.out", "w"), stderr=open(self.log, "w"),
                                     start_new_session=True)

    def log_text(self):
        return self.log.read_text(errors="replace")

    def leftovers(self):
        """Live processes whose command line carries this cluster's head port."""
        out = []
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    if self.marker in (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                        out.append(int(d.name))
                except OSError:
                    pass
        return out

    def stop(self):
        """SIGTERM, then SIGKILL of the group after 30 s; True when the head exited by itself."""
        if self.proc.poll() is not None:
            return False
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
            clean = True
        except subprocess.TimeoutExpired:
            clean = False
        for pid in self.leftovers():
            os.kill(pid, signal.SIGKILL)
        self.proc.wait()
        return clean


RETRY_503_S = 120  # how long a client retries a 503 (no replica ready) before it gives up


class Tally:
    def __init__(self):
        self.counts = {}
        self.failures = []
        self.retries_503 = 0

    def add(self, kind, ok, detail=""):
        c = self.counts.setdefault(kind, {"ok": 0, "failed": 0})
        c["ok" if ok else "failed"] += 1
        if not ok and len(self.failures) < 50:
            self.failures.append(f"{kind}: {detail}"[:500])


async def http_json(session, method, url, **kw):
    async with session.request(method, url, **kw) as r:
        return r.status, await r.text()


async def post_retrying(session, url, tally, **kw):
    """POST, retried while the answer is 503 (no replica ready: a recovery of the only
    replica is under way) for up to RETRY_503_S seconds, as the OpenAI SDKs retry 5xx; the
    caller reads the last response (an async context manager)."""
    deadline, delay = time.monotonic() + RETRY_503_S, 0.25
    while True:
        r = await session.post(url, **kw)
        if r.status != 503 or time.monotonic() > deadline:
            return r
        r.release()
        tally.retries_503 += 1
        await asyncio.sleep(delay)
        delay = min(2 * delay, 2.0)


def well_formed_body(rng, model):
    chat = rng.random() < 0.6
    body = {"model": model, "max_tokens": rng.randint(8, 40), "seed": rng.randint(1, 10**6),
            "temperature": rng.choice([0.0, 0.8])}
    if chat:
        body["messages"] = [{"role": "user", "content": rng.choice(PROMPTS)}]
    else:
        body["prompt"] = rng.choice(PROMPTS)
    if rng.random() < 0.3:
        body["n"] = 2
    if rng.random() < 0.3:
        body["stop"] = rng.choice(["\n\n", ["."], [" the", "!"]])
    if rng.random() < 0.5:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return ("/v1/chat/completions" if chat else "/v1/completions"), body


async def well_formed(session, base, rng, model, tally):
    path, body = well_formed_body(rng, model)
    kind = ("stream " if body.get("stream") else "") + path
    n = body.get("n", 1)
    try:
        async with await post_retrying(session, base + path, tally, json=body) as r:
            if r.status != 200:
                return tally.add(kind, False, f"status {r.status}: {await r.text()}")
            if not body.get("stream"):
                j = await r.json()
                done = [c for c in j["choices"] if c.get("finish_reason") in ("stop", "length")]
                return tally.add(kind, len(done) == n, json.dumps(j)[:300])
            finished, ended = set(), False
            async for raw in r.content:
                line = raw.decode().strip()
                if line == "data: [DONE]":
                    ended = True
                elif line.startswith("data: "):
                    ev = json.loads(line[6:])
                    if "error" in ev:
                        return tally.add(kind, False, line)
                    for c in ev.get("choices", []):
                        if c.get("finish_reason"):
                            finished.add(c["index"])
            tally.add(kind, ended and len(finished) == n, f"ended {ended}, finished {sorted(finished)} of {n}")
    except Exception as e:  # a dropped connection or a timeout fails the request
        tally.add(kind, False, repr(e))


async def cancel(session, base, rng, model, tally):
    body = {"model": model, "messages": [{"role": "user", "content": rng.choice(PROMPTS)}],
            "max_tokens": 64, "stream": True, "n": rng.choice([1, 2])}
    try:
        async with await post_retrying(session, base + "/v1/chat/completions", tally, json=body) as r:
            if r.status == 200:
                await r.content.readline()
            r.close()  # the client goes away mid-stream
        tally.add("cancel", True)
    except Exception as e:
        tally.add("cancel", False, repr(e))


async def disconnect(base, rng, model, tally):
    host, port = base.split("//")[1].split(":")
    body = json.dumps({"model": model, "prompt": rng.choice(PROMPTS), "max_tokens": 32}).encode()
    try:
        _, w = await asyncio.open_connection(host, int(port))
        w.write(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        await w.drain()
        await asyncio.sleep(rng.random() * 0.2)
        w.close()  # gone before the answer
        tally.add("disconnect", True)
    except Exception as e:
        tally.add("disconnect", False, repr(e))


MALFORMED = [
    ("/v1/chat/completions", '{"model": "M", "messages": [{"role": "user", "content": "hi"}'),
    ("/v1/chat/completions", '{"model": "M", "messages": "hi"}'),
    ("/v1/chat/completions", '{"model": "M", "messages": [{"role": "user", "content": "hi"}], "n": 0}'),
    ("/v1/completions", '{"model": "M", "prompt": "hi", "max_tokens": -1}'),
    ("/v1/completions", '{"model": "no-such-model", "prompt": "hi"}'),
    ("/v1/completions", '{"model": "M", "prompt": [1, 2, 999999999]}'),
    ("/v1/completions", '{"model": "M", "prompt": "hi", "temperature": "hot"}'),
]


async def malformed(session, base, rng, model, tally):
    path, text = rng.choice(MALFORMED)
    try:
        async with await post_retrying(session, base + path, tally, data=text.replace('"M"', json.dumps(model)),
                                       headers={"Content-Type": "application/json"}) as r:
            status, answer = r.status, await r.text()
        tally.add("malformed", 400 <= status < 500, f"status {status} for {text}: {answer[:200]}")
    except Exception as e:
        tally.add("malformed", False, repr(e))


async def client(session, base, rng, model, tally, until):
    while time.monotonic() < until:
        x = rng.random()
        if x < 0.70:
            await well_formed(session, base, rng, model, tally)
        elif x < 0.80:
            await cancel(session, base, rng, model, tally)
        elif x < 0.88:
            await disconnect(base, rng, model, tally)
        else:
            await malformed(session, base, rng, model, tally)


async def killer(cluster, rng, args, until, kills, problems):
    while True:
        wait = rng.uniform(args.kill_min, args.kill_max)
        if time.monotonic() + wait >= until:
            return
        await asyncio.sleep(wait)
        name = rng.choice(NODES)
        log = cluster.log_text()
        pid, marks = node_pid(log, name), recovery_marks(log)
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError) as e:
            problems.append(f"kill of {name} (pid {pid}): {e!r}")
            return
        kills.append({"t": round(time.monotonic() - (until - args.duration), 1), "node": name, "pid": pid})
        deadline = time.monotonic() + 180
        while True:  # a new process for the node, and the replica ready again (rebuilt or stage-local)
            log = cluster.log_text()
            if node_pid(log, name) not in (0, pid) and recovery_marks(log) > marks:
                break
            if time.monotonic() > deadline:
                problems.append(f"{name} was not restarted and recovered 180 s after its kill")
                return
            await asyncio.sleep(0.5)
        kills[-1]["ready_after_s"] = round(time.monotonic() - deadline + 180, 1)


def recovery_marks(log_text):
    """How often the head logged a replica ready or a stage-local recovery finished."""
    return log_text.count(": ready (") + log_text.count("stage-local recovery: stage")


def kv_usage(metrics_text):
    return {m.group(1): float(m.group(2))
            for m in re.finditer(r'^troupe_kv_cache_usage_ratio\{replica="([^"]*)"\} (\S+)$', metrics_text, re.M)}


async def wait_ready(session, base, proc, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"troupe serve exited with status {proc.returncode}")
        try:
            if (await http_json(session, "GET", base + "/ready"))[0] == 200:
                return
        except Exception:
            pass
        await asyncio.sleep(0.5)
    raise RuntimeError(f"not ready after {seconds} s")


async def idle_kv(session, base, seconds):
    """The KV usage per replica once it is 0 everywhere, or the last reading after `seconds`."""
    deadline, usage = time.monotonic() + seconds, {}
    while time.monotonic() < deadline:
        usage = kv_usage((await http_json(session, "GET", base + "/metrics"))[1])
        if usage and all(v == 0 for v in usage.values()):
            break
        await asyncio.sleep(1)
    return usage


async def soak(args, cluster, summary):
    import aiohttp
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        base = cluster.base_url
        await wait_ready(session, base, cluster.proc, 300)
        model = json.loads((await http_json(session, "GET", base + "/v1/models"))[1])["data"][0]["id"]
        rng = random.Random(args.seed)
        warm = Tally()
        await asyncio.gather(*(well_formed(session, base, random.Random(i), model, warm) for i in range(8)))
        await idle_kv(session, base, 30)
        summary["head_rss_baseline_mib"] = round(rss_mib(cluster.proc.pid), 1)
        tally, kills, problems = Tally(), [], []
        start = time.monotonic()
        until = start + args.duration
        clients = [client(session, base, random.Random(args.seed * 1000 + i), model, tally, until)
                   for i in range(args.concurrency)]
        await asyncio.gather(killer(cluster, rng, args, until, kills, problems), *clients)
        summary["load_s"] = round(time.monotonic() - start, 1)
        summary["kv_usage_idle"] = await idle_kv(session, base, 60)
        summary["head_rss_after_mib"] = round(rss_mib(cluster.proc.pid), 1)
        summary.update(requests=tally.counts, retries_503=tally.retries_503, failures=tally.failures, kills=kills,
                       problems=problems)
        summary["warmup_failures"] = warm.failures


def verdict(summary, args):
    errors = list(summary.get("problems", []))
    for kind, c in summary.get("requests", {}).items():
        if c["failed"]:
            errors.append(f"{c['failed']} {kind} requests failed")
    if summary.get("warmup_failures"):
        errors.append("warm-up requests failed")
    usage = summary.get("kv_usage_idle", {})
    if not usage or any(v != 0 for v in usage.values()):
        errors.append(f"KV blocks still held when idle: {usage}")
    if summary.get("head_rss_after_mib", 1e9) > summary.get("head_rss_baseline_mib", 0) + args.rss_margin_mib:
        errors.append("head RSS grew by more than the margin")
    if not summary.get("kills"):
        errors.append("no node was killed")
    if not summary.get("stopped_cleanly") or summary.get("leftover_processes"):
        errors.append("the cluster did not stop cleanly")
    return errors


def main(argv):
    args = parse_args(argv)
    workdir = Path(args.workdir or f"/tmp/troupe-soak-{os.getpid()}")
    workdir.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(args, workdir)
    summary = {"duration_s": args.duration, "concurrency": args.concurrency, "seed": args.seed,
               "rss_margin_mib": args.rss_margin_mib, "workdir": str(workdir)}
    try:
        asyncio.run(soak(args, cluster, summary))
    except Exception as e:
        summary.setdefault("problems", []).append(f"soak aborted: {e!r}")
    finally:
        summary["stopped_cleanly"] = cluster.stop()
        summary["leftover_processes"] = cluster.leftovers()
    summary["errors"] = verdict(summary, args)
    text = json.dumps(summary, indent=2)
    print(text)
    (workdir / "summary.json").write_text(text + "\n")
    if args.json:
        Path(args.json).write_text(text + "\n")
    if summary["errors"]:
        print("soak: FAILED: " + "; ".join(summary["errors"]) + f" (logs in {workdir})", file=sys.stderr)
        return 1
    print(f"soak: passed ({sum(c['ok'] for c in summary['requests'].values())} requests, "
          f"{len(summary['kills'])} node kills)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
