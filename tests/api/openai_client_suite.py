#!/usr/bin/env python3
"""The official `openai` client against a running troupe gateway.

  openai_client_suite.py --base-url http://127.0.0.1:PORT/v1 [--api-key K] [--troupe PATH]
  openai_client_suite.py --base-url ... --expect-not-ready

Runs one check per feature (completions, chat, streaming of both with usage, n > 1, stop,
seed reproducibility, logprobs, errors as the client's exception types, a client that
drops mid-stream, /metrics through a Prometheus parser) and prints one line per check:
"ok NAME" or "FAIL NAME: why". With --troupe, greedy output must equal
`troupe generate` for the same prompt. With --api-key, a wrong key must raise
AuthenticationError. --expect-not-ready only checks that a server whose replicas are not
ready answers 503 (APIStatusError) and /ready 503 while /health is 200.
Exit status: 0 = every check passed, 1 = a check failed, 2 = usage error.
"""
import argparse
import json
import socket
import subprocess
import sys
import time
import traceback
import urllib.error
import urllib.request
from urllib.parse import urlparse

import openai
from prometheus_client.parser import text_string_to_metric_families

PROMPT = "The capital of France is"
CHAT = [{"role": "user", "content": "Name three colors."}]


class Suite:
    def __init__(self, args):
        self.args = args
        self.client = openai.OpenAI(base_url=args.base_url, api_key=args.api_key or "none", max_retries=0,
                                    timeout=120)
        u = urlparse(args.base_url)
        self.host, self.port = u.hostname, u.port
        self.root = f"http://{u.hostname}:{u.port}"
        self.model = None
        self.failures = 0

    def check(self, name, fn):
        try:
            fn()
            print(f"ok {name}", flush=True)
        except Exception as e:  # noqa: BLE001 - every failure is reported, not raised
            self.failures += 1
            detail = "".join(traceback.format_exception_only(type(e), e)).strip()
            print(f"FAIL {name}: {detail}", flush=True)

    def get(self, path, key=True):
        req = urllib.request.Request(self.root + path)
        if key and self.args.api_key:
            req.add_header("Authorization", f"Bearer {self.args.api_key}")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def complete(self, **kw):
        return self.client.completions.create(model=self.model, **kw)

    def chat(self, **kw):
        return self.client.chat.completions.create(model=self.model, **kw)

    def greedy(self, prompt, n_tokens):
        r = self.complete(prompt=prompt, max_tokens=n_tokens, temperature=0, extra_body={"ignore_eos": True})
        return r.choices[0].text

    # -- checks -------------------------------------------------------------------------

    def models(self):
        ms = self.client.models.list().data
        assert len(ms) == 1, f"expected one model, got {[m.id for m in ms]}"
        self.model = ms[0].id
        assert self.client.models.retrieve(self.model).id == self.model

    def completion(self):
        r = self.complete(prompt=PROMPT, max_tokens=8, temperature=0)
        assert r.object == "text_completion", r.object
        assert len(r.choices) == 1 and isinstance(r.choices[0].text, str)
        assert r.choices[0].finish_reason in ("stop", "length"), r.choices[0].finish_reason
        assert r.usage.prompt_tokens > 0 and 0 < r.usage.completion_tokens <= 8, r.usage
        assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens

    def greedy_equals_cli(self):
        out = subprocess.run([self.args.troupe, "generate", "--prompt", PROMPT, "--temperature", "0",
                              "--ignore-eos", "--max-tokens", "16", "--output", "json"],
                             capture_output=True, text=True, timeout=300, check=True).stdout
        expected = json.loads(out)["text"]
        got = self.greedy(PROMPT, 16)
        assert got == expected, f"API {got!r} != troupe generate {expected!r}"

    def prompt_forms(self):
        text = self.greedy(PROMPT, 6)
        batch = self.complete(prompt=[PROMPT, "Once upon a time"], max_tokens=6, temperature=0,
                              extra_body={"ignore_eos": True})
        assert [c.index for c in batch.choices] == [0, 1]
        assert batch.choices[0].text == text, f"{batch.choices[0].text!r} != {text!r}"
        tokens = self.complete(prompt=[[504, 3458, 282]], max_tokens=4, temperature=0)
        assert tokens.usage.prompt_tokens == 3, tokens.usage

    def chat_completion(self):
        r = self.chat(messages=CHAT, max_tokens=12, temperature=0)
        assert r.object == "chat.completion", r.object
        m = r.choices[0].message
        assert m.role == "assistant" and isinstance(m.content, str) and m.content, m
        parts = self.chat(messages=[{"role": "system", "content": "Be brief."},
                                    {"role": "user", "content": [{"type": "text", "text": "Name three colors."}]}],
                          max_completion_tokens=4, temperature=0)
        assert parts.usage.completion_tokens <= 4, parts.usage

    def stream_completion(self):
        expected = self.greedy(PROMPT, 12)
        chunks = list(self.complete(prompt=PROMPT, max_tokens=12, temperature=0, stream=True,
                                    stream_options={"include_usage": True}, extra_body={"ignore_eos": True}))
        text = "".join(c.choices[0].text for c in chunks if c.choices)
        assert text == expected, f"stream {text!r} != {expected!r}"
        finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        assert finals == ["length"], finals
        assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 12, chunks[-1]

    def stream_chat(self):
        full = self.chat(messages=CHAT, max_tokens=12, temperature=0)
        chunks = list(self.chat(messages=CHAT, max_tokens=12, temperature=0, stream=True,
                                stream_options={"include_usage": True}))
        assert chunks[0].choices[0].delta.role == "assistant", chunks[0]
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == full.choices[0].message.content, f"{text!r} != {full.choices[0].message.content!r}"
        finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        assert finals == [full.choices[0].finish_reason], finals
        assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == full.usage.total_tokens

    def n_choices(self):
        r = self.complete(prompt=PROMPT, max_tokens=6, temperature=1.0, n=3, seed=7)
        assert sorted(c.index for c in r.choices) == [0, 1, 2], r.choices
        assert 3 <= r.usage.completion_tokens <= 18, r.usage
        chunks = list(self.chat(messages=CHAT, max_tokens=5, n=2, seed=3, stream=True))
        seen = {c.choices[0].index for c in chunks if c.choices}
        assert seen == {0, 1}, seen
        again = self.complete(prompt=PROMPT, max_tokens=6, temperature=1.0, n=3, seed=7)
        assert [c.text for c in again.choices] == [c.text for c in r.choices], "n > 1 with a seed is not reproducible"

    def stop(self):
        full = self.greedy(PROMPT, 16)
        words = full.split()
        assert len(words) >= 3, f"greedy text too short to pick a stop string: {full!r}"
        stop = words[2]
        cut = full[:full.index(stop)]
        r = self.complete(prompt=PROMPT, max_tokens=16, temperature=0, stop=[stop], extra_body={"ignore_eos": True})
        assert r.choices[0].text == cut, f"{r.choices[0].text!r} != {cut!r}"
        assert r.choices[0].finish_reason == "stop", r.choices[0].finish_reason

    def seed(self):
        kw = dict(prompt="Write a word:", max_tokens=12, temperature=1.0, extra_body={"ignore_eos": True})
        a = self.complete(seed=1234, **kw).choices[0].text
        b = self.complete(seed=1234, **kw).choices[0].text
        assert a == b, f"same seed, different text: {a!r} vs {b!r}"
        others = {self.complete(seed=s, **kw).choices[0].text for s in (1, 2, 3)}
        assert len(others | {a}) > 1, "different seeds always gave the same text"
        c = self.chat(messages=CHAT, max_tokens=10, temperature=1.0, seed=99).choices[0].message.content
        d = self.chat(messages=CHAT, max_tokens=10, temperature=1.0, seed=99).choices[0].message.content
        assert c == d, f"chat: same seed, different text: {c!r} vs {d!r}"

    def logprobs(self):
        r = self.complete(prompt=PROMPT, max_tokens=5, temperature=0, logprobs=3, extra_body={"ignore_eos": True})
        lp = r.choices[0].logprobs
        assert len(lp.tokens) == 5 == len(lp.token_logprobs) == len(lp.top_logprobs), lp
        assert all(x <= 0 for x in lp.token_logprobs), lp.token_logprobs
        assert all(1 <= len(t) <= 3 for t in lp.top_logprobs), lp.top_logprobs
        assert "".join(lp.tokens) == r.choices[0].text, (lp.tokens, r.choices[0].text)
        c = self.chat(messages=CHAT, max_tokens=4, temperature=0, logprobs=True, top_logprobs=2)
        content = c.choices[0].logprobs.content
        assert len(content) == c.usage.completion_tokens, content
        assert all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in content), content
        s = list(self.chat(messages=CHAT, max_tokens=3, temperature=0, logprobs=True, stream=True))
        n = sum(len(x.choices[0].logprobs.content) for x in s if x.choices and x.choices[0].logprobs)
        assert n == 3, f"streamed logprobs for {n} tokens, expected 3"

    def errors(self):
        expect(openai.BadRequestError, lambda: self.complete(prompt=PROMPT, temperature=-1), "temperature")
        expect(openai.BadRequestError, lambda: self.complete(prompt=PROMPT, max_tokens=0), "max_tokens")
        expect(openai.BadRequestError, lambda: self.chat(messages=[{"role": "wizard", "content": "x"}]),
               "messages[0].role")
        expect(openai.BadRequestError, lambda: self.complete(prompt=PROMPT, max_tokens=10_000_000), "max_tokens")
        expect(openai.NotFoundError, lambda: self.client.completions.create(model="no-such-model", prompt="x"),
               "model")
        # More choices than server.max_queue_requests (256 by default) can ever be admitted.
        expect(openai.RateLimitError,
               lambda: self.complete(prompt=[PROMPT] * 20, n=16, max_tokens=1), None)
        if self.args.api_key:
            bad = openai.OpenAI(base_url=self.args.base_url, api_key="wrong-key", max_retries=0)
            expect(openai.AuthenticationError, lambda: bad.completions.create(model=self.model, prompt="x"), None)
            status, _ = self.get("/v1/models", key=False)
            assert status == 401, f"/v1/models without a key answered {status}"
            assert self.get("/health", key=False)[0] == 200, "/health must need no key"

    def probes(self):
        assert self.get("/health")[0] == 200
        assert self.get("/ready")[0] == 200

    def drop_mid_stream(self):
        before = self.metric("troupe_client_disconnects_total") or 0.0
        body = json.dumps({"model": self.model, "prompt": PROMPT, "max_tokens": 400, "stream": True,
                           "ignore_eos": True}).encode()
        head = (f"POST /v1/completions HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n")
        if self.args.api_key:
            head += f"Authorization: Bearer {self.args.api_key}\r\n"
        s = socket.create_connection((self.host, self.port), timeout=60)
        s.sendall(head.encode() + b"\r\n" + body)
        got = b""
        while got.count(b"data: ") < 3:
            part = s.recv(4096)
            assert part, "the server closed the stream early"
            got += part
        s.close()
        deadline = time.time() + 30
        while time.time() < deadline:
            usage = self.metric("troupe_kv_cache_usage_ratio")
            gone = self.metric("troupe_client_disconnects_total") or 0.0
            if gone >= before + 1 and (usage is None or usage == 0.0) and self.metric("troupe_queue_requests") == 0:
                assert usage is not None, "troupe_kv_cache_usage_ratio is not exported"
                return
            time.sleep(0.2)
        raise AssertionError(f"after the drop: kv usage {self.metric('troupe_kv_cache_usage_ratio')}, "
                             f"disconnects {self.metric('troupe_client_disconnects_total')} (before {before}), "
                             f"queue {self.metric('troupe_queue_requests')}")

    def metric(self, name):
        """Sum of every sample called `name` on /metrics (parsed by prometheus_client); None when absent."""
        status, text = self.get("/metrics", key=False)
        assert status == 200, f"/metrics answered {status}"
        total = None
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name:
                    total = (total or 0.0) + sample.value
        return total

    def metrics_parse(self):
        assert (self.metric("troupe_requests_total") or 0) > 0, "troupe_requests_total not counted"
        assert (self.metric("troupe_time_to_first_token_seconds_count") or 0) > 0, "no TTFT observed"
        assert (self.metric("troupe_generation_tokens_total") or 0) > 0, "no generated tokens counted"
        assert (self.metric("troupe_step_duration_seconds_count") or 0) > 0, "no scheduler step timed"

    def not_ready(self):
        assert self.get("/health")[0] == 200, "/health must answer 200 while loading"
        assert self.get("/ready")[0] == 503, "/ready must answer 503 while no replica is ready"
        model = self.client.models.list().data[0].id
        try:
            self.client.completions.create(model=model, prompt="x", max_tokens=2)
        except openai.APIStatusError as e:
            assert e.status_code == 503, f"expected 503, got {e.status_code}"
            return
        raise AssertionError("a completion succeeded although no replica is ready")


def expect(error_type, fn, param):
    try:
        fn()
    except error_type as e:
        if param is not None:
            got = (e.body or {}).get("param") if isinstance(e.body, dict) else None
            assert got == param, f"{error_type.__name__} named param {got!r}, expected {param!r}"
        return
    except openai.APIStatusError as e:
        raise AssertionError(f"expected {error_type.__name__}, got {type(e).__name__} {e.status_code}: {e.message}")
    raise AssertionError(f"expected {error_type.__name__}, but the call succeeded")


def main(argv):
    p = argparse.ArgumentParser(prog="openai_client_suite.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--base-url", required=True, help="http://127.0.0.1:PORT/v1")
    p.add_argument("--api-key", help="the server's bearer key (also checks that a wrong one is refused)")
    p.add_argument("--troupe", help="troupe executable: greedy output must equal `troupe generate`")
    p.add_argument("--expect-not-ready", action="store_true", help="only check the answers of a loading server")
    args = p.parse_args(argv)
    if urlparse(args.base_url).port is None:
        p.error(f"--base-url needs a port, got {args.base_url}")
    suite = Suite(args)
    if args.expect_not_ready:
        suite.check("a loading server answers 503", suite.not_ready)
    else:
        suite.check("models list the served model", suite.models)
        if suite.model is None:
            return 1
        suite.check("probes answer 200", suite.probes)
        suite.check("completion", suite.completion)
        if args.troupe:
            suite.check("greedy completion equals troupe generate", suite.greedy_equals_cli)
        suite.check("prompt as list, batch and token ids", suite.prompt_forms)
        suite.check("chat completion", suite.chat_completion)
        suite.check("streamed completion with usage", suite.stream_completion)
        suite.check("streamed chat with role and usage", suite.stream_chat)
        suite.check("n > 1", suite.n_choices)
        suite.check("stop strings", suite.stop)
        suite.check("seed reproducibility at temperature 1", suite.seed)
        suite.check("logprobs", suite.logprobs)
        suite.check("errors surface as the client's exception types", suite.errors)
        suite.check("a client dropping mid-stream frees its KV blocks", suite.drop_mid_stream)
        suite.check("metrics parse with a Prometheus parser", suite.metrics_parse)
    print(f"{'FAILED' if suite.failures else 'PASSED'}: {suite.failures} check(s) failed", flush=True)
    return 1 if suite.failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
