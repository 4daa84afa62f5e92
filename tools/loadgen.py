#!/usr/bin/env python3
"""Load generator and serving benchmark for an OpenAI-compatible server (troupe serve).

In the manner of vLLM's benchmarks/benchmark_serving.py: every request is streamed
(SSE) so that time to first token (TTFT), inter-token latency (ITL, per chunk) and
end-to-end latency (E2E) are measured on the client. Load is either a closed loop at a
fixed number of requests in flight (--concurrency 1,4,16 runs one pass per value) or an
open loop of Poisson arrivals (--request-rate R, inf = all at once; also a sweep).

Prompts are either built to a fixed length without a tokenizer (--input-len words that
are each one token in common BPE vocabularies, sent with ignore_eos and max_tokens =
--output-len so the output length is exact) or read from --dataset (jsonl: "prompt" and
an optional "max_tokens" per line).

--multiturn N runs a multi-turn chat workload instead (tools/multiturn.py): N
conversations over a few shared system prompts whose histories grow turn by turn, and
reports the server's prefix-cache hit rate over each pass (from its /metrics).
Every pass also reports the server's scheduler steps (troupe_step_duration_seconds on
/metrics, tools/step_stats.py): per kind, decode / mixed / prefill, their count and mean.

Reports a table (per pass: requests ok/err, req/s, output tok/s, TTFT/ITL/E2E
p50/p90/p99 in ms), and optionally --json FILE and --plot FILE.png.

Examples:
  tools/loadgen.py --base-url http://127.0.0.1:8000 --concurrency 1,4,16 --num-prompts 64
  tools/loadgen.py --base-url http://127.0.0.1:8000 --endpoint chat --request-rate 2,inf \\
      --dataset prompts.jsonl --json out.json --plot out.png

Exit status: 0 when every pass ran (failed requests are counted, not fatal), 1 when the
server cannot be used, 2 on a usage error, 3 with --fail-on-error when a request failed.
"""
import argparse
import asyncio
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional
from urllib.parse import urlparse

import multiturn  # tools/multiturn.py, beside this file
import prom_text  # tools/prom_text.py, beside this file
import step_stats  # tools/step_stats.py, beside this file
from loadgen_report import load_label, markdown, plot, table  # tools/loadgen_report.py

# Words that are a single token (with their leading space) in GPT-2-style BPE
# vocabularies (SmolLM2, Llama 3, Qwen2, Mistral): a prompt of N of them is about N tokens.
WORDS = ("the of and to in is on at it as be by we he an or if so no up do go me my us "
         "one two six ten red big old new day way man art sun sea car dog cat box cup").split()


class UsageError(Exception):
    """A bad command-line value; reported as a message and exit status 2."""


class ServerError(Exception):
    """The server cannot be used (unreachable, no model, first request failed); exit 1."""


@dataclass
class Prompt:
    """One request to send: its text and the number of tokens to ask for."""
    text: str
    max_tokens: int
    input_tokens: int  # estimate; replaced by the server's usage when it reports one
    messages: Optional[list] = None  # chat messages (multi-turn), instead of text


@dataclass
class Result:
    """What one streamed request measured (times in seconds)."""
    ok: bool = False
    error: str = ""             # "" or an HTTP status ("429") or an error kind ("timeout")
    detail: str = ""            # the first part of an error body or exception text
    ttft: float = 0.0
    itl: List[float] = field(default_factory=list)
    e2e: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    text: str = ""              # the generated text (multi-turn: the next turn's history)


# ----------------------------------------------------------------------------- options

def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'")
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'")
    return v


def int_list(text: str) -> List[int]:
    parts = [p.strip() for p in text.split(",")]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of positive integers, got '{text}'")
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of positive integers, got '{text}'")
    return values


def rate_list(text: str) -> List[float]:
    values = []
    for p in text.split(","):
        p = p.strip()
        try:
            v = float(p)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected request rates (requests/s, or inf) separated by commas, got '{text}'")
        if not (v > 0) or math.isnan(v):
            raise argparse.ArgumentTypeError(f"a request rate must be > 0 (or inf), got '{p}'")
        values.append(v)
    return values


def positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got '{text}'")
    if not (v > 0) or math.isinf(v):
        raise argparse.ArgumentTypeError(f"expected a positive number, got '{text}'")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="loadgen", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Exit status: 0 = all passes ran, 1 = server unusable, 2 = usage error, "
               "3 = a request failed (with --fail-on-error).")
    p.add_argument("--base-url", required=True, help="server root, e.g. http://127.0.0.1:8000 (a trailing /v1 is accepted)")
    p.add_argument("--model", help="model name (default: the first of GET /v1/models)")
    p.add_argument("--endpoint", choices=["completions", "chat"], default="completions",
                   help="/v1/completions or /v1/chat/completions (default: completions)")
    load = p.add_mutually_exclusive_group()
    load.add_argument("--concurrency", type=int_list, help="requests in flight, a sweep: 1,4,16 (default: 1)")
    load.add_argument("--request-rate", type=rate_list, help="Poisson arrivals in requests/s, a sweep: 2,8,inf (inf = all at once)")
    p.add_argument("--num-prompts", type=positive_int, default=32, help="requests per pass (default: 32)")
    p.add_argument("--input-len", type=positive_int, default=64, help="prompt length in tokens, approximate (default: 64)")
    p.add_argument("--output-len", type=positive_int, default=32, help="tokens generated per request, exact (default: 32)")
    multiturn.add_arguments(p, positive_int)
    p.add_argument("--dataset", help="jsonl file: one {\"prompt\": ..., \"max_tokens\": ...} per line (instead of --input-len)")
    p.add_argument("--temperature", type=float, default=0.0, help="sampling temperature (default: 0, greedy)")
    p.add_argument("--seed", type=int, default=0, help="seed of the prompt generator and arrival times (default: 0)")
    p.add_argument("--api-key", default=os.environ.get("TROUPE_API_KEY"), help="bearer key (default: $TROUPE_API_KEY)")
    p.add_argument("--timeout", type=positive_float, default=300.0, help="seconds per request (default: 300)")
    p.add_argument("--warmup", type=int, default=1, help="requests sent and discarded before the first pass (default: 1)")
    p.add_argument("--wait-ready", type=float, default=0.0, metavar="S",
                   help="first wait up to S seconds for GET /ready to answer 200 (default: 0, do not wait)")
    p.add_argument("--json", dest="json_path", help="write the results as JSON to this file")
    p.add_argument("--markdown", dest="markdown_path", help="write the table as markdown to this file")
    p.add_argument("--plot", dest="plot_path", help="write a PNG of latency p50/p99 against load to this file")
    p.add_argument("--fail-on-error", action="store_true", help="exit 3 when any request failed")
    p.add_argument("--quiet", action="store_true", help="print only the table")
    return p


def normalize_base_url(url: str) -> str:
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise UsageError(f"--base-url: expected http://HOST:PORT, got '{url}'")
    try:
        parsed.port
    except ValueError as e:
        raise UsageError(f"--base-url: bad port in '{url}': {e}")
    root = url.rstrip("/")
    if root.endswith("/v1"):
        root = root[:-3]
    return root


def check_writable(path: Optional[str], flag: str) -> None:
    if path is None:
        return
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UsageError(f"{flag}: folder '{folder}' does not exist")


def parse_args(argv: List[str]) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    args.base_url = normalize_base_url(args.base_url)
    if args.warmup < 0:
        raise UsageError(f"--warmup: expected 0 or more, got {args.warmup}")
    if not (0.0 <= args.temperature <= 100.0):
        raise UsageError(f"--temperature: expected a value in [0, 100], got {args.temperature}")
    if args.dataset is not None and not os.path.isfile(args.dataset):
        raise UsageError(f"--dataset: no such file '{args.dataset}'")
    if args.wait_ready < 0 or math.isnan(args.wait_ready):
        raise UsageError(f"--wait-ready: expected 0 or more seconds, got {args.wait_ready}")
    check_writable(args.json_path, "--json")
    check_writable(args.markdown_path, "--markdown")
    check_writable(args.plot_path, "--plot")
    if args.plot_path is not None and not args.plot_path.lower().endswith(".png"):
        raise UsageError(f"--plot: expected a .png file name, got '{args.plot_path}'")
    if args.concurrency is None and args.request_rate is None:
        args.concurrency = [1]
    if args.multiturn is not None:
        if args.request_rate is not None or args.dataset is not None:
            raise UsageError("--multiturn: runs conversations in a closed loop; use --concurrency, not "
                             "--request-rate or --dataset")
        args.endpoint = "chat"
    return args


# ----------------------------------------------------------------------------- prompts

def synthetic_prompts(n: int, input_len: int, output_len: int, rng: random.Random) -> List[Prompt]:
    """n prompts of input_len one-token words each; every prompt differs from the first word on."""
    return [Prompt(" ".join(rng.choice(WORDS) for _ in range(input_len)), output_len, input_len) for _ in range(n)]


def load_dataset(path: str, n: int, default_max_tokens: int, rng: random.Random) -> List[Prompt]:
    """n prompts drawn (shuffled, cycling) from a jsonl file; errors name the file and line."""
    rows: List[Prompt] = []
    with open(path, encoding="utf-8", errors="strict") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise UsageError(f"--dataset: {where}: not valid JSON: {e.msg}")
            if not isinstance(obj, dict) or not isinstance(obj.get("prompt"), str) or not obj["prompt"]:
                raise UsageError(f"--dataset: {where}: expected an object with a non-empty string \"prompt\"")
            mt = obj.get("max_tokens", default_max_tokens)
            if isinstance(mt, bool) or not isinstance(mt, int) or mt < 1:
                raise UsageError(f"--dataset: {where}: \"max_tokens\" must be a positive integer, got {mt!r}")
            rows.append(Prompt(obj["prompt"], mt, max(1, len(obj["prompt"]) // 4)))
    if not rows:
        raise UsageError(f"--dataset: {path}: no prompts in the file")
    order = list(range(len(rows)))
    rng.shuffle(order)
    return [rows[order[i % len(rows)]] for i in range(n)]


# ----------------------------------------------------------------------------- requests

def request_body(args: argparse.Namespace, prompt: Prompt) -> dict:
    body = {"model": args.model, "max_tokens": prompt.max_tokens, "temperature": args.temperature,
            "stream": True, "stream_options": {"include_usage": True}}
    if args.dataset is None:
        body["ignore_eos"] = True
    if prompt.messages is not None:
        body["messages"] = prompt.messages
    elif args.endpoint == "chat":
        body["messages"] = [{"role": "user", "content": prompt.text}]
    else:
        body["prompt"] = prompt.text
    return body


def chunk_text(chunk: dict) -> str:
    """The generated text a stream chunk carries (completions or chat), '' if none."""
    choices = chunk.get("choices") or []
    if not choices or not isinstance(choices[0], dict):
        return ""
    c = choices[0]
    if isinstance(c.get("text"), str):
        return c["text"]
    delta = c.get("delta")
    if isinstance(delta, dict) and isinstance(delta.get("content"), str):
        return delta["content"]
    return ""


async def read_stream(resp, start: float, res: Result) -> bool:
    """Consumes an SSE body; fills res; True when it ended with [DONE]."""
    last = None
    chunks = 0
    buffer = b""
    async for data in resp.content.iter_any():
        buffer += data
        while b"\n\n" in buffer:
            event, buffer = buffer.split(b"\n\n", 1)
            for line in event.split(b"\n"):
                line = line.strip()
                if not line.startswith(b"data:"):
                    continue
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    res.output_tokens = res.output_tokens or chunks
                    return True
                now = time.perf_counter()
                chunk = json.loads(payload)
                if isinstance(chunk.get("usage"), dict):
                    res.output_tokens = int(chunk["usage"].get("completion_tokens") or 0)
                    res.input_tokens = int(chunk["usage"].get("prompt_tokens") or res.input_tokens)
                if isinstance(chunk.get("error"), dict):
                    res.detail = str(chunk["error"].get("message", ""))[:200]
                    return False
                text = chunk_text(chunk)
                if text:
                    res.text += text
                    chunks += 1
                    if last is None:
                        res.ttft = now - start
                    else:
                        res.itl.append(now - last)
                    last = now
    return False


async def send_one(session, args: argparse.Namespace, prompt: Prompt) -> Result:
    """Sends one streamed request; never raises (failures are recorded in the Result)."""
    import aiohttp
    path = "/v1/chat/completions" if args.endpoint == "chat" else "/v1/completions"
    res = Result(input_tokens=prompt.input_tokens)
    start = time.perf_counter()
    try:
        async with session.post(args.base_url + path, json=request_body(args, prompt)) as resp:
            if resp.status != 200:
                res.error = str(resp.status)
                res.detail = (await resp.text(errors="replace"))[:200]
                return res
            done = await read_stream(resp, start, res)
            res.e2e = time.perf_counter() - start
            if not done:
                res.error = res.error or "stream_error"
                res.detail = res.detail or "the stream ended without data: [DONE]"
            elif res.ttft == 0.0:
                res.error, res.detail = "empty", "the stream carried no generated text"
            else:
                res.ok = True
    except asyncio.TimeoutError:
        res.error, res.detail = "timeout", f"no complete answer within --timeout {args.timeout:g} s"
    except aiohttp.ClientConnectorError as e:
        res.error, res.detail = "connect_error", str(e)[:200]
    except (aiohttp.ClientError, ConnectionError) as e:
        res.error, res.detail = "connection_error", f"{type(e).__name__}: {e}"[:200]
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as e:
        res.error, res.detail = "bad_chunk", f"unparsable stream chunk: {e}"[:200]
    return res


async def run_concurrency(session, args, prompts: List[Prompt], concurrency: int) -> List[Result]:
    """Closed loop: `concurrency` workers take prompts in order until none are left."""
    queue = list(reversed(prompts))
    results: List[Result] = []

    async def worker():
        while queue:
            results.append(await send_one(session, args, queue.pop()))

    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(prompts)))))
    return results


async def run_rate(session, args, prompts: List[Prompt], rate: float, rng: random.Random) -> List[Result]:
    """Open loop: requests start at Poisson arrival times of `rate` per second (inf = at once)."""
    tasks = []
    for i, prompt in enumerate(prompts):
        tasks.append(asyncio.ensure_future(send_one(session, args, prompt)))
        if not math.isinf(rate) and i + 1 < len(prompts):
            await asyncio.sleep(rng.expovariate(rate))
    return list(await asyncio.gather(*tasks))


# ----------------------------------------------------------------------------- statistics

def percentiles(values_s: List[float]) -> Dict[str, Optional[float]]:
    """mean/p50/p90/p99 in milliseconds (None when there are no values)."""
    if not values_s:
        return {"mean": None, "p50": None, "p90": None, "p99": None}
    import numpy as np
    ms = np.asarray(values_s) * 1000.0
    return {"mean": float(ms.mean()), "p50": float(np.percentile(ms, 50)),
            "p90": float(np.percentile(ms, 90)), "p99": float(np.percentile(ms, 99))}


def summarize(results: List[Result], duration: float, load: dict) -> dict:
    ok = [r for r in results if r.ok]
    errors: Dict[str, int] = {}
    details: Dict[str, str] = {}
    for r in results:
        if not r.ok:
            errors[r.error] = errors.get(r.error, 0) + 1
            details.setdefault(r.error, r.detail)
    out_tokens = sum(r.output_tokens for r in ok)
    return dict(load, **{
        "requests": len(results), "ok": len(ok), "failed": len(results) - len(ok),
        "errors": errors, "error_examples": details, "duration_s": duration,
        "request_throughput": len(ok) / duration if duration > 0 else 0.0,
        "output_throughput": out_tokens / duration if duration > 0 else 0.0,
        "total_input_tokens": sum(r.input_tokens for r in ok), "total_output_tokens": out_tokens,
        # Text chunks the streams carried: fewer than the tokens when a chunk held several
        # (or a token had no text yet), each such ITL then spans more than one step.
        "output_chunks": sum(len(r.itl) + 1 for r in ok if r.ttft > 0),
        "ttft_ms": percentiles([r.ttft for r in ok]),
        "itl_ms": percentiles([x for r in ok for x in r.itl]),
        "e2e_ms": percentiles([r.e2e for r in ok]),
    })


# ----------------------------------------------------------------------------- driver

async def discover_model(session, base_url: str) -> str:
    import aiohttp
    try:
        async with session.get(base_url + "/v1/models") as resp:
            text = await resp.text(errors="replace")
            if resp.status != 200:
                raise ServerError(f"GET {base_url}/v1/models answered {resp.status}: {text[:200]}")
    except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError) as e:
        raise ServerError(f"cannot reach the server at {base_url}: {type(e).__name__}: {e}")
    try:
        data = json.loads(text)["data"]
        return str(data[0]["id"])
    except (ValueError, KeyError, IndexError, TypeError):
        raise ServerError(f"GET {base_url}/v1/models lists no model: {text[:200]}")


async def wait_ready(session, base_url: str, seconds: float) -> None:
    """Polls GET /ready until it answers 200; ServerError after `seconds`."""
    import aiohttp
    deadline = time.monotonic() + seconds
    last = "no answer"
    while True:
        try:
            async with session.get(base_url + "/ready") as resp:
                if resp.status == 200:
                    return
                last = f"status {resp.status}"
        except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError) as e:
            last = f"{type(e).__name__}: {e}"
        if time.monotonic() >= deadline:
            raise ServerError(f"{base_url}/ready did not answer 200 within {seconds:g} s (last: {last})")
        await asyncio.sleep(0.5)


async def run_all(args: argparse.Namespace, prompts: List[Prompt]) -> List[dict]:
    import aiohttp
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=args.timeout)
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, headers=headers) as session:
        if args.wait_ready > 0:
            await wait_ready(session, args.base_url, args.wait_ready)
        if args.model is None:
            args.model = await discover_model(session, args.base_url)
        for _ in range(args.warmup):
            r = await send_one(session, args, prompts[0])
            if not r.ok:
                raise ServerError(f"the warm-up request to {args.base_url} failed ({r.error}): {r.detail}")
        runs = []
        loads = [("concurrency", c) for c in args.concurrency] if args.concurrency else \
                [("request_rate", r) for r in args.request_rate]
        rng = random.Random(args.seed)
        for kind, value in loads:
            if not args.quiet:
                print(f"loadgen: {kind} {value:g}: {len(prompts)} requests ...", file=sys.stderr, flush=True)
            steps_before = await prom_text.fetch(session, args.base_url)
            start = time.perf_counter()
            cache = None
            if args.multiturn is not None:
                results, cache = await run_multiturn(session, args, value, len(runs))
            elif kind == "concurrency":
                results = await run_concurrency(session, args, prompts, value)
            else:
                results = await run_rate(session, args, prompts, value, rng)
            load = {"concurrency": value if kind == "concurrency" else None,
                    "request_rate": value if kind == "request_rate" else None}
            runs.append(summarize(results, time.perf_counter() - start, load))
            runs[-1]["steps"] = step_stats.summary(step_stats.parse(steps_before),
                                                   step_stats.parse(await prom_text.fetch(session, args.base_url)))
            if cache is not None:
                runs[-1]["cache"] = cache
        return runs


async def run_multiturn(session, args, concurrency: int, index: int):
    """One pass of the multi-turn workload: its Results and prefix-cache summary."""
    send = lambda msgs: send_one(session, args, Prompt("", args.output_len, 0, msgs))  # noqa: E731
    return await multiturn.run_pass(session, args, concurrency, random.Random(args.seed * 1000 + index), send)


def json_safe(value):
    """value with infinite rates spelled "inf" (JSON has no infinity)."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return value


def report(args: argparse.Namespace, runs: List[dict]) -> None:
    print(table(runs))
    for r in runs:
        c = r.get("cache")
        if c is not None:
            rate = "-" if c["prefix_hit_rate"] is None else f"{100 * c['prefix_hit_rate']:.1f}%"
            routed = ", ".join(f"{k} {v}" for k, v in c["routed"].items()) or "-"
            print(f"  {load_label(r)}: prefix hit rate {rate}; routed: {routed}")
        if r.get("steps"):
            print(f"  {load_label(r)}: server steps " + ", ".join(
                f"{k} {s['count']} x {s['mean_ms']:.2f} ms" for k, s in sorted(r["steps"].items())))
        for kind, n in sorted(r["errors"].items()):
            print(f"  {load_label(r)}: {n} x {kind}: {r['error_examples'].get(kind, '')}")
    config = {"base_url": args.base_url, "model": args.model, "endpoint": args.endpoint,
              "mode": "concurrency" if args.concurrency else "request_rate",
              "num_prompts": args.num_prompts, "input_len": None if args.dataset else args.input_len,
              "output_len": None if args.dataset else args.output_len, "dataset": args.dataset,
              "multiturn": None if args.multiturn is None else
              {"conversations": args.multiturn, "turns": args.turns, "system_prompts": args.system_prompts,
               "system_len": args.system_len, "user_len": args.user_len},
              "temperature": args.temperature, "seed": args.seed,
              "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if args.json_path:
        with open(args.json_path, "w") as f:
            json.dump(json_safe({"config": config, "runs": runs}), f, indent=2, allow_nan=False)
    if args.markdown_path:
        with open(args.markdown_path, "w") as f:
            f.write(markdown(runs))
    if args.plot_path:
        shape = f"dataset {os.path.basename(args.dataset)}" if args.dataset else \
                f"input {args.input_len} / output {args.output_len} tokens"
        plot(runs, args.plot_path, f"{args.model} via {args.endpoint}, {shape}")


def main(argv: List[str]) -> int:
    try:
        args = parse_args(argv)
        rng = random.Random(args.seed)
        prompts = load_dataset(args.dataset, args.num_prompts, args.output_len, rng) if args.dataset else \
            synthetic_prompts(args.num_prompts, args.input_len, args.output_len, rng)
    except UsageError as e:
        print(f"loadgen: error: {e}", file=sys.stderr)
        return 2
    except (OSError, UnicodeDecodeError) as e:
        print(f"loadgen: error: --dataset: cannot read '{args.dataset}': {e}", file=sys.stderr)
        return 2
    try:
        runs = asyncio.run(run_all(args, prompts))
        report(args, runs)
    except ServerError as e:
        print(f"loadgen: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"loadgen: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("loadgen: interrupted", file=sys.stderr)
        return 130
    if args.fail_on_error and any(r["failed"] for r in runs):
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
