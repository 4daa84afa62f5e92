#!/usr/bin/env python3
"""HTTP fuzzer: a generated corpus of malformed HTTP requests and JSON bodies.

  fuzz_http.py --host 127.0.0.1 --port PORT --count 1200 [--seed S] [--api-key K]

Each case is sent on a connection of its own. The corpus (at least --count cases, the
first part systematic, the rest drawn at random from the same generators with --seed):
  - JSON bodies for /v1/completions and /v1/chat/completions that are valid except for
    one thing: a field of the wrong type (every field: model, prompt, messages,
    max_tokens, max_completion_tokens, temperature, top_p, top_k, min_p, n, stop, seed,
    presence/frequency/repetition penalty, logprobs, top_logprobs, stream,
    stream_options, ignore_eos, user), a value out of range, a malformed prompt or
    message list, huge numbers, deep nesting, invalid UTF-8, invalid or truncated JSON,
    a body over the size limit;
  - broken HTTP: request lines, header names and values, huge headers, bad
    Content-Length, bad chunked encoding, unknown paths and methods.

What counts as a pass (the policy; docs/api.md states the server side):
  - "request" cases are complete HTTP messages (or complete up to a syntax error the
    parser sees in the head): the answer must be a 4xx status. No answer, a 2xx/3xx/5xx
    or a hang is a failure.
  - "garbage" cases are bytes that never form an HTTP request head (random binary, a
    TLS hello, a head cut off before its blank line) or a request whose body is shorter
    than its Content-Length; the client half-closes after sending. The answer must be a
    4xx status, or the server closes the connection without a response (FIN or RST).
    A hang (no answer within --case-timeout) or a non-4xx status is a failure.
After the corpus: GET /health must answer 200 and a valid completion must succeed.
Prints counts per status and the failing cases; exit 0 on pass, 1 on failure, 2 on a
usage error.
"""
import argparse
import asyncio
import json
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass
from typing import List, Optional, Tuple


@dataclass
class Case:
    """One fuzz input: its name (for reports), its category and the bytes to send."""
    name: str
    data: bytes
    garbage: bool = False     # not (complete) HTTP: a close without a response is accepted
    head: bool = False        # a HEAD request: the response has no body
    half_close: bool = False  # shut down the sending side after the bytes (EOF to the server)
    also_ok: Tuple[int, ...] = ()  # statuses accepted besides 4xx (505 for an unknown version)


# ----------------------------------------------------------------------------- building blocks

def http(method: str, target: str, body: bytes = b"", headers: Optional[List[Tuple[str, str]]] = None,
         version: str = "HTTP/1.1", content_length: bool = True) -> bytes:
    lines = [f"{method} {target} {version}", "Host: fuzz", "Connection: close"]
    for k, v in headers or []:
        lines.append(f"{k}: {v}")
    if content_length and body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


PATHS = {"completions": "/v1/completions", "chat": "/v1/chat/completions"}


class Corpus:
    """Generates cases; `model` is the served model's name, `auth` an optional header."""

    def __init__(self, model: str, api_key: Optional[str], rng: random.Random):
        self.model, self.rng = model, rng
        self.auth = [("Authorization", f"Bearer {api_key}")] if api_key else []
        self.cases: List[Case] = []

    def base(self, endpoint: str) -> dict:
        if endpoint == "chat":
            return {"model": self.model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
        return {"model": self.model, "prompt": "Hello", "max_tokens": 2}

    def post(self, name: str, endpoint: str, body: bytes, headers=None, **kw) -> None:
        hdrs = [("Content-Type", "application/json")] + self.auth + (headers or [])
        self.cases.append(Case(name, http("POST", PATHS[endpoint], body, hdrs, **kw)))

    def post_json(self, name: str, endpoint: str, obj) -> None:
        self.post(name, endpoint, json.dumps(obj).encode())

    def with_field(self, name: str, endpoint: str, key: str, value, extra: Optional[dict] = None) -> None:
        body = self.base(endpoint)
        body.update(extra or {})
        body[key] = value
        self.post_json(f"{endpoint}: {name}", endpoint, body)

    def without(self, endpoint: str, key: str) -> None:
        body = self.base(endpoint)
        del body[key]
        self.post_json(f"{endpoint}: no {key}", endpoint, body)

    def raw(self, name: str, data: bytes, garbage: bool = False, head: bool = False) -> None:
        """Hand-made bytes; the client half-closes after them so no parser waits for more."""
        self.cases.append(Case(name, data, garbage, head, half_close=True))


# ----------------------------------------------------------------------------- JSON field cases

NOT_NUMBER = ["0.5", "abc", "", [], [0.5], {}, {"v": 1}, True, False]
NOT_INTEGER = ["5", "abc", 5.5, 0.001, True, [], [5], {}, {"n": 5}]
NOT_BOOL = ["true", "false", 1, 0, 1.0, [], [True], {}, "yes"]
NOT_STRING = [1, 1.5, True, [], ["x"], {}, {"name": "x"}]
HUGE_INTS = [2 ** 63, 2 ** 64, 2 ** 64 + 7, -(2 ** 63) - 1, 10 ** 30, -(10 ** 30)]  # beyond int64
HUGE_TOKENS = [2 ** 31, 2 ** 32 + 1, -(2 ** 31) - 1] + HUGE_INTS  # beyond int32 too

NUMBER_RANGES = {  # field: values out of its range (the gateway's documented ranges)
    "temperature": [-0.01, -1, 2.01, 3, 100, 1e300, -1e300],
    "top_p": [0, 0.0, -0.1, 1.0001, 2, 1e300],
    "min_p": [-0.1, 1.1, 5, -1e300],
    "presence_penalty": [-2.01, 2.01, 100, -1e300],
    "frequency_penalty": [-2.01, 2.01, 100, 1e300],
    "repetition_penalty": [0, -1, 0.0, 100.5, 1e300],
}
INT_RANGES = {
    "max_tokens": [0, -1, -100, 2 ** 31, 10 ** 9, 2 ** 63 - 1],
    "max_completion_tokens": [0, -1, 2 ** 31, 10 ** 9],
    "n": [0, -1, 17, 100, 10 ** 6, 2 ** 40],
    "top_k": [-2, -100, 2 ** 31, 2 ** 40],
}
COMMON_FIELDS = {"model": NOT_STRING, "user": NOT_STRING, "stream": NOT_BOOL, "ignore_eos": NOT_BOOL,
                 "seed": NOT_INTEGER, **{k: NOT_NUMBER for k in NUMBER_RANGES},
                 **{k: NOT_INTEGER for k in INT_RANGES}}

BAD_STOP = [1, 1.5, True, {}, {"s": "x"}, [1], [""], [None], [["a"]], [{}], ["a", 2], [f"s{i}" for i in range(17)],
            [""] * 3]
BAD_STREAM_OPTIONS = ["x", 1, True, [], [True], {"include_usage": "yes"}, {"include_usage": 1},
                      {"include_usage": []}]
BAD_PROMPTS = [1, 1.5, True, {}, {"text": "x"}, [], [True], [{}], [None], [1, "a"], ["a", 1], [-1], [-5, 3],
               [2 ** 31], [2 ** 40], [10 ** 20], [99999999], [1.5], [[1, "x"]], ["a", {}], ["a", None], [[]],
               [[-1]], [[1], "a", 5], [[1.5]], [[99999999]], [["a"]], [[[1]]]]
BAD_MESSAGES = ["hi", 1, {}, {"role": "user", "content": "hi"}, [], [1], ["hi"], [None], [[]], [{}],
                [{"role": 1, "content": "x"}], [{"role": "wizard", "content": "x"}], [{"content": "x"}],
                [{"role": "", "content": "x"}], [{"role": None, "content": "x"}],
                [{"role": "user", "content": 1}], [{"role": "user", "content": True}],
                [{"role": "user", "content": {}}], [{"role": "user", "content": [1]}],
                [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
                [{"role": "user", "content": [{"type": "text", "text": 1}]}],
                [{"role": "user", "content": [{"type": "text"}]}], [{"role": "user", "content": [{"text": "x"}]}],
                [{"role": "user", "content": [None]}], [{"role": "user", "content": "x"}, 5],
                [{"role": "user", "content": "x"}, {"role": "tool"}]]


def field_cases(c: Corpus) -> None:
    for endpoint in ("completions", "chat"):
        for key, pool in COMMON_FIELDS.items():
            for v in pool:
                c.with_field(f"{key}={json.dumps(v)[:40]}", endpoint, key, v)
        for key, values in {**NUMBER_RANGES, **INT_RANGES}.items():
            for v in values:
                c.with_field(f"{key} out of range {v!r}"[:80], endpoint, key, v)
        for v in HUGE_INTS:
            c.with_field(f"seed huge {v}", endpoint, "seed", v)
        for v in HUGE_TOKENS:
            c.with_field(f"max_tokens huge {v}", endpoint, "max_tokens", v)
        for v in BAD_STOP:
            c.with_field(f"stop={json.dumps(v)[:40]}", endpoint, "stop", v)
        for v in BAD_STREAM_OPTIONS:
            c.with_field(f"stream_options={json.dumps(v)}", endpoint, "stream_options", v, {"stream": True})
        c.with_field("model unknown", endpoint, "model", "no-such-model")
        c.with_field("model empty", endpoint, "model", "")
        c.with_field("model null", endpoint, "model", None)
        c.without(endpoint, "model")
    for v in BAD_PROMPTS:
        c.with_field(f"prompt={json.dumps(v)[:40]}", "completions", "prompt", v)
    c.with_field("prompt null", "completions", "prompt", None)
    c.without("completions", "prompt")
    c.with_field("prompt too many", "completions", "prompt", ["x"] * 1000)
    c.with_field("prompt longer than the context", "completions", "prompt", [1] * 20000)
    for v in ["1", 1.5, [], {}, -1, 21, 100, 2 ** 40]:
        c.with_field(f"logprobs={json.dumps(v)}", "completions", "logprobs", v)
    for v in BAD_MESSAGES:
        c.with_field(f"messages={json.dumps(v)[:40]}", "chat", "messages", v)
    c.with_field("messages null", "chat", "messages", None)
    c.without("chat", "messages")
    for v in [1, "true", 0, [], {}]:
        c.with_field(f"logprobs={json.dumps(v)}", "chat", "logprobs", v)
    for v in ["5", 5.5, True, [], {}, -1, 21, 2 ** 40]:
        c.with_field(f"top_logprobs={json.dumps(v)}", "chat", "top_logprobs", v, {"logprobs": True})
    c.with_field("top_logprobs without logprobs", "chat", "top_logprobs", 5, {"logprobs": False})


# ----------------------------------------------------------------------------- JSON syntax cases

INVALID_JSON = [b"", b" ", b"{", b"}", b"[", b"{\"model\"}", b"{'model': 'x'}", b"{\"model\": \"m\",}",
                b"{\"model\": \"m\" \"prompt\": \"x\"}", b"{\"max_tokens\": NaN}", b"{\"max_tokens\": Infinity}",
                b"{\"max_tokens\": -Infinity}", b"{\"max_tokens\": 01}", b"{\"max_tokens\": 1.}",
                b"{\"max_tokens\": .5}", b"{\"max_tokens\": +1}", b"{\"max_tokens\": 0x10}",
                b"{\"a\": 1}{\"b\": 2}", b"{\"a\": 1} x", b"// c\n{}", b"{/* c */}", b"{\"a\": tru}",
                b"{\"a\": nul}", b"{\"prompt\": \"\\ud800\"}", b"{\"prompt\": \"\\udc00x\"}", b"{\"prompt\": \"\\u12\"}",
                b"{\"prompt\": \"\\x41\"}", b"{\"prompt\": \"a\x00b\"}", b"{\"prompt\": \"a\nb\"}",
                b"{\"prompt\": \"a\tb\"}", b"{\"prompt\": \"unterminated}", b"\x00", b"\x00\x00\x00\x00",
                b"null", b"1", b"-1", b"\"str\"", b"[]", b"[{}]", b"true", b"false", b"{\"max_tokens\": 1e400}",
                b"{\"max_tokens\": -1e400}", b"{\"temperature\": 1e999999}", b"{:}", b"{\"\":}", b"{1: 2}",
                b"\xef\xbb\xbf\xef\xbb\xbf{}", b"\xff\xfe{\x00}\x00"]

INVALID_UTF8 = [b"\xff", b"\xfe", b"\xc0\x80", b"\xc1\xbf", b"\xe0\x80\x80", b"\xed\xa0\x80", b"\xed\xbf\xbf",
                b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80", b"\xf8\x88\x80\x80\x80", b"\xe2\x82", b"\xc3",
                b"\x80", b"\xbf", b"\xf0\x9f\x98"]


def json_syntax_cases(c: Corpus) -> None:
    for endpoint in ("completions", "chat"):
        for body in INVALID_JSON:
            c.post(f"{endpoint}: invalid JSON {body[:30]!r}", endpoint, body)
        valid = json.dumps(c.base(endpoint)).encode()
        for cut in range(0, len(valid) - 1, 3):
            c.post(f"{endpoint}: JSON cut at {cut}", endpoint, valid[:cut])
        for bad in INVALID_UTF8:
            c.post(f"{endpoint}: invalid UTF-8 {bad!r} in model", endpoint,
                   valid.replace(b"\"model\": \"", b"\"model\": \"" + bad, 1))
            if endpoint == "completions":
                c.post(f"{endpoint}: invalid UTF-8 {bad!r} in prompt", endpoint,
                       valid.replace(b"\"Hello\"", b"\"He" + bad + b"llo\"", 1))
            c.post(f"{endpoint}: invalid UTF-8 {bad!r} in a key", endpoint,
                   valid.replace(b"\"max_tokens\"", b"\"max_" + bad + b"tokens\": 1, \"max_tokens\"", 1)
                   .replace(b"\"max_tokens\": 2", b"\"max_tokens\": 0", 1))
    chat = json.dumps(c.base("chat")).encode()
    for bad in INVALID_UTF8:
        c.post(f"chat: invalid UTF-8 {bad!r} in content", "chat", chat.replace(b"\"Hi\"", b"\"H" + bad + b"i\"", 1))
    deep_cases(c)
    for n in (10 ** 20, 10 ** 400):
        c.post(f"completions: max_tokens with {len(str(n))} digits", "completions",
               f'{{"model": "{c.model}", "prompt": "x", "max_tokens": {n}}}'.encode())
    c.post("completions: max_tokens 1e308 * 10", "completions",
           f'{{"model": "{c.model}", "prompt": "x", "max_tokens": 1e309}}'.encode())
    c.post("completions: temperature with 5000 digits", "completions",
           f'{{"model": "{c.model}", "prompt": "x", "temperature": 1{"0" * 5000}}}'.encode())
    c.post("completions: seed with 100000 digits", "completions",
           f'{{"model": "{c.model}", "prompt": "x", "seed": {"9" * 100000}}}'.encode())


def deep_cases(c: Corpus) -> None:
    m = json.dumps(c.model)
    for depth in (64, 1000, 10000, 100000, 500000):
        arr = "[" * depth + "1" + "]" * depth
        obj = '{"a":' * depth + "1" + "}" * depth
        c.post(f"completions: prompt nested {depth} deep", "completions",
               f'{{"model": {m}, "prompt": [{arr}]}}'.encode())
        c.post(f"completions: model an object {depth} deep", "completions",
               f'{{"model": {obj}, "prompt": "x"}}'.encode())
        c.post(f"chat: messages nested {depth} deep", "chat", f'{{"model": {m}, "messages": {arr}}}'.encode())
        c.post(f"completions: body an array {depth} deep", "completions", arr.encode())
        c.post(f"completions: unclosed nesting {depth} deep", "completions", ("[" * depth).encode())
        c.post(f"completions: unclosed objects {depth} deep", "completions", ('{"a":' * depth).encode())
        c.post(f"chat: stop nested {depth} deep", "chat",
               f'{{"model": {m}, "messages": [{{"role": "user", "content": "x"}}], "stop": {arr}}}'.encode())


# ----------------------------------------------------------------------------- HTTP cases

def http_cases(c: Corpus) -> None:
    body = json.dumps(c.base("completions")).encode()
    bad_body = b"{not json"
    ct = [("Content-Type", "application/json")] + c.auth
    lines = [b"GET\r\n\r\n", b"GET /\r\n\r\n", b"GET / HTTP/1.1 extra\r\nHost: x\r\n\r\n",
             b"GET  /nope HTTP/1.1\r\nHost: x\r\n\r\n", b" GET /nope HTTP/1.1\r\nHost: x\r\n\r\n",
             b"GET /nope  HTTP/1.1\r\nHost: x\r\n\r\n", b"GET /nope HTTP/1.1 \r\nHost: x\r\n\r\n",
             b"GET /nope HTTP/1\r\nHost: x\r\n\r\n", b"GET /nope HTTP/1.1.1\r\nHost: x\r\n\r\n",
             b"GET /nope HTTPS/1.1\r\nHost: x\r\n\r\n", b"GET /nope http/1.1\r\nHost: x\r\n\r\n",
             b"GET /nope HTTP/a.b\r\nHost: x\r\n\r\n", b"G\x00T /nope HTTP/1.1\r\nHost: x\r\n\r\n",
             b"GET /hea\x00lth HTTP/1.1\r\nHost: x\r\n\r\n", b"GET /hea\x7flth HTTP/1.1\r\nHost: x\r\n\r\n",
             b"GET /hea lth HTTP/1.1\r\nHost: x\r\n\r\n", b"GE(T /nope HTTP/1.1\r\nHost: x\r\n\r\n",
             b"G\xffT /nope HTTP/1.1\r\nHost: x\r\n\r\n", b"/nope HTTP/1.1\r\nHost: x\r\n\r\n",
             b"GET HTTP/1.1\r\nHost: x\r\n\r\n", b"\r\n\r\n\r\n\r\nGET\r\n\r\n",
             b"GET /" + b"a" * 100000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
             b"G" * 100000 + b" / HTTP/1.1\r\nHost: x\r\n\r\n"]
    for i, line in enumerate(lines):
        c.raw(f"http: broken request line {i}: {line[:40]!r}", line)
    for version in (b"HTTP/2.0", b"HTTP/9.9", b"HTTP/0.9"):
        c.cases.append(Case(f"http: version {version.decode()}", b"GET /nope " + version + b"\r\nHost: x\r\n\r\n",
                            half_close=True, also_ok=(505,)))
    # Bare LF and bare CR line ends: a parser may take LF for CRLF (then 404) or see no
    # complete head at all (then, at EOF, a close is fine).
    c.raw("http: bare LF line ends", b"GET /nope HTTP/1.1\nHost: x\n\n", garbage=True)
    c.raw("http: bare CR line ends", b"GET /nope HTTP/1.1\rHost: x\r\r", garbage=True)
    heads = [("Bad Header", "x"), ("Bad\x00Name", "x"), ("Bad(Name)", "x"), ("", "x"), ("X-Ctl", "a\x00b"),
             ("X-Ctl", "a\x01b"), ("X-Ctl", "a\x7fb"), ("X-Long", "v" * 100000), (":", "x"), ("X", "a\rb")]
    for i, (k, v) in enumerate(heads):
        c.raw(f"http: bad header {i}: {k[:10]!r}", f"POST /v1/completions HTTP/1.1\r\nHost: x\r\n{k}: {v}\r\n"
              f"Content-Length: {len(bad_body)}\r\n\r\n".encode("latin-1") + bad_body)
    c.raw("http: a header line without a colon",
          b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nNoColonHere\r\nContent-Length: 9\r\n\r\n" + bad_body)
    c.raw("http: 5000 headers", b"GET /nope HTTP/1.1\r\nHost: x\r\n" +
          b"".join(b"X-H%d: %d\r\n" % (i, i) for i in range(5000)) + b"\r\n")
    c.raw("http: folded header (obs-fold)", b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n"
          b"Content-Length: 9\r\n\r\n" + bad_body)
    for v in ["-1", "abc", "1.5", "0x10", "99999999999999999999999", " ", "9, 9", "+9", "1e3"]:
        c.raw(f"http: Content-Length {v!r}", f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {v}\r\n"
              "Content-Type: application/json\r\n\r\n".encode() + bad_body)
    c.raw("http: two different Content-Lengths", b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 9"
          b"\r\nContent-Length: 3\r\n\r\n" + bad_body)
    c.raw("http: Content-Length larger than the limit",
          b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n{")
    c.raw("http: Content-Length shorter than the body", b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
          b"Content-Length: 5\r\nConnection: close\r\n\r\n" + body)
    c.raw("http: Content-Length 0 on a POST", b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 0"
          b"\r\n\r\n")
    c.raw("http: no Content-Length on a POST", b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close"
          b"\r\n\r\n")
    chunked = b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    for i, tail in enumerate([b"zz\r\n" + bad_body + b"\r\n0\r\n\r\n", b"9\r\n" + bad_body + b"0\r\n\r\n",
                              b"-1\r\nx\r\n0\r\n\r\n", b"fffffffffffffffffff\r\nx\r\n0\r\n\r\n",
                              b"9\r\n" + bad_body + b"\r\n0\r\n\r\n", b"9;ext=\x01\r\n" + bad_body + b"\r\n0\r\n\r\n"]):
        c.raw(f"http: bad chunked body {i}", chunked + tail)
    c.raw("http: chunked and Content-Length", b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n"
          b"Transfer-Encoding: chunked\r\n\r\n9\r\n" + bad_body + b"\r\n0\r\n\r\n")
    c.raw("http: unknown Transfer-Encoding", b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
          b"Transfer-Encoding: gzip\r\nConnection: close\r\n\r\n" + bad_body)
    big = b'{"model": "x", "prompt": "' + b"a" * (6 << 20) + b'"}'
    c.cases.append(Case("http: a 6 MiB body", http("POST", "/v1/completions", big, ct)))
    c.raw("http: a 6 MiB Content-Length, no body sent",
          b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 6291456\r\n\r\n")
    paths_and_methods(c, body, ct)


def paths_and_methods(c: Corpus, body: bytes, ct) -> None:
    for p in ["/", "/v1", "/v1/", "/v2/completions", "/v1/completion", "/v1/completions/", "/v1/completions/x",
              "/V1/COMPLETIONS", "/v1//completions", "/../../etc/passwd", "/v1/%3f",
              "/%2e%2e/%2e%2e/etc/passwd", "/v1/%00", "http://evil/v1/nope", "*", "/v1/models/x/y",
              "/v1/engines", "/v1/embeddings", "/v1/chat", "/healthz", "/metricsx", "/" + "x" * 2000]:
        c.cases.append(Case(f"path: POST {p[:40]}", http("POST", p, body, ct)))
        c.cases.append(Case(f"path: GET {p[:40]}", http("GET", p, headers=c.auth)))
    for m in ["PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "BREW", "FOO", "get", "post"]:
        for p in ["/v1/completions", "/v1/chat/completions", "/v1/models"]:
            c.cases.append(Case(f"method: {m} {p}", http(m, p, body if m not in ("TRACE",) else b"", ct)))
    for p in ["/v1/completions", "/v1/chat/completions"]:
        c.cases.append(Case(f"method: GET {p}", http("GET", p, headers=c.auth)))
    for p in ["/health", "/ready", "/metrics", "/v1/models"]:
        c.cases.append(Case(f"method: POST {p}", http("POST", p, b"{}", ct)))
        c.cases.append(Case(f"method: DELETE {p}", http("DELETE", p, headers=c.auth)))
    c.cases.append(Case("method: HEAD of an unknown path", http("HEAD", "/no/such/path", headers=c.auth), head=True))
    c.raw("method: CONNECT", b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n")


def garbage_cases(c: Corpus) -> None:
    c.raw("garbage: nothing at all", b"", garbage=True)
    c.raw("garbage: a lone CRLF", b"\r\n", garbage=True)
    c.raw("garbage: a TLS client hello", bytes.fromhex("16030100a5010000a10303") + bytes(range(32)) * 5, garbage=True)
    c.raw("garbage: an HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", garbage=True)
    c.raw("garbage: a head cut before its blank line", b"GET /health HTTP/1.1\r\nHost: x\r\n", garbage=True)
    c.raw("garbage: a request line cut short", b"POST /v1/compl", garbage=True)
    c.raw("garbage: a body shorter than Content-Length",
          b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"model\"", garbage=True)
    c.raw("garbage: a chunked body cut short",
          b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"mo", garbage=True)


# ----------------------------------------------------------------------------- random fill

def random_value(rng: random.Random):
    kind = rng.randrange(9)
    if kind == 0:
        return rng.choice(["", "x" * rng.randrange(1, 50), "\u00e9\u4e2d\U0001f600", "-", "1e5"])
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([-1, 1, 2]) * rng.choice([10 ** rng.randrange(1, 40), 2 ** rng.randrange(31, 70)])
    if kind == 3:
        return rng.uniform(-1e6, 1e6)
    if kind == 4:
        return [random_value(rng) for _ in range(rng.randrange(4))]
    if kind == 5:
        return {rng.choice(["a", "role", "text", "type"]): random_value(rng) for _ in range(rng.randrange(3))}
    if kind == 6:
        return -rng.randrange(1, 1000)
    if kind == 7:
        return rng.choice([1e300, -1e300, 5e-324, -0.0001])
    return [[rng.randrange(-5, 5)]]


def random_cases(c: Corpus, count: int) -> None:
    """Fills the corpus to `count` with random draws from the generators above."""
    rng = c.rng
    pools = {**{k: v for k, v in COMMON_FIELDS.items()}, "stop": BAD_STOP, "stream_options": BAD_STREAM_OPTIONS}
    ranges = {**NUMBER_RANGES, **INT_RANGES}
    while len(c.cases) < count:
        endpoint = rng.choice(["completions", "chat"])
        pick = rng.randrange(6)
        if pick == 0:
            key = rng.choice(sorted(pools))
            c.with_field(f"random wrong type {key}", endpoint, key, rng.choice(pools[key]))
        elif pick == 1:
            key = rng.choice(sorted(ranges))
            c.with_field(f"random out of range {key}", endpoint, key, rng.choice(ranges[key]))
        elif pick == 2:
            v = rng.choice(BAD_PROMPTS) if endpoint == "completions" else rng.choice(BAD_MESSAGES)
            c.with_field("random bad prompt/messages", endpoint, "prompt" if endpoint == "completions" else "messages", v)
        elif pick == 3:
            obj = c.base(endpoint)
            obj.update({k: random_value(rng) for k in rng.sample(sorted(COMMON_FIELDS), 3)})
            obj["max_tokens"] = rng.choice([0, -1, "x", 1.5])
            c.post_json("random fields with a bad max_tokens", endpoint, obj)
        elif pick == 4:
            valid = json.dumps(c.base(endpoint)).encode()
            c.post("random JSON cut", endpoint, valid[:rng.randrange(len(valid) - 1)])
        else:
            data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
            c.raw(f"garbage: random bytes ({len(data)})", data, garbage=True)


def build_corpus(model: str, api_key: Optional[str], count: int, seed: int) -> List[Case]:
    c = Corpus(model, api_key, random.Random(seed))
    for gen in (field_cases, json_syntax_cases, http_cases, garbage_cases):
        gen(c)
    random_cases(c, count)
    return c.cases


# ----------------------------------------------------------------------------- sending

async def exchange(host: str, port: int, data: bytes, half_close: bool, timeout: float,
                   head: bool = False) -> Tuple[str, bytes]:
    """Sends data on a fresh connection; ('response', raw) / ('close', b'') / ('reset', b'') / ('timeout', b'')."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, asyncio.TimeoutError) as e:
        return "connect_error", str(e).encode()
    raw = b""
    try:
        async def send():
            try:
                writer.write(data)
                await writer.drain()
                if half_close and writer.can_write_eof():
                    writer.write_eof()
            except OSError:
                pass  # the server may answer and close before reading everything

        sender = asyncio.ensure_future(send())
        deadline = time.monotonic() + timeout
        while not response_complete(raw, head):
            chunk = await asyncio.wait_for(reader.read(65536), max(0.01, deadline - time.monotonic()))
            if not chunk:
                break
            raw += chunk
        sender.cancel()
    except asyncio.TimeoutError:
        return ("timeout", raw)
    except OSError:
        return ("response", raw) if raw.startswith(b"HTTP/") else ("reset", raw)
    finally:
        writer.close()
    if raw.startswith(b"HTTP/"):
        return "response", raw
    return ("close", raw) if not raw else ("junk", raw)


def response_complete(raw: bytes, head: bool) -> bool:
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        return False
    if head:
        return True
    for line in raw[:end].split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            try:
                return len(raw) - end - 4 >= int(v.strip())
            except ValueError:
                return False
        if k.strip().lower() == b"transfer-encoding":
            return raw.endswith(b"0\r\n\r\n")
    return False


def status_of(raw: bytes) -> int:
    try:
        return int(raw.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return 0


async def run_case(args, case: Case) -> Tuple[str, bool]:
    """(outcome label for the counts, passed)."""
    kind, raw = await exchange(args.host, args.port, case.data, case.half_close, args.case_timeout, case.head)
    if kind == "response":
        status = status_of(raw)
        return str(status), 400 <= status < 500 or status in case.also_ok
    if kind in ("close", "reset") and case.garbage:
        return kind, True
    return kind, False


async def run_corpus(args, cases: List[Case]) -> Tuple[Counter, List[Tuple[Case, str]]]:
    counts: Counter = Counter()
    failures: List[Tuple[Case, str]] = []
    sem = asyncio.Semaphore(args.parallel)

    async def one(case: Case):
        async with sem:
            label, ok = await run_case(args, case)
        counts[label] += 1
        if args.verbose:
            print(f"  {'ok  ' if ok else 'FAIL'} [{label}] {case.name}")
        if not ok:
            failures.append((case, label))

    await asyncio.gather(*(one(case) for case in cases))
    return counts, failures


async def get(args, path: str, body: Optional[dict] = None) -> Tuple[int, bytes]:
    hdrs = [("Authorization", f"Bearer {args.api_key}")] if args.api_key else []
    if body is None:
        data = http("GET", path, headers=hdrs)
    else:
        data = http("POST", path, json.dumps(body).encode(), hdrs + [("Content-Type", "application/json")])
    kind, raw = await exchange(args.host, args.port, data, False, 120)
    if kind != "response":
        return 0, kind.encode()
    return status_of(raw), raw.partition(b"\r\n\r\n")[2]


async def main_async(args) -> int:
    status, body = await get(args, "/v1/models")
    if status != 200:
        print(f"fuzz_http: FAIL: GET /v1/models answered {status or body.decode()} before the corpus")
        return 1
    model = json.loads(body)["data"][0]["id"]
    cases = build_corpus(model, args.api_key, args.count, args.seed)
    start = time.monotonic()
    counts, failures = await run_corpus(args, cases)
    print(f"fuzz_http: {len(cases)} cases in {time.monotonic() - start:.1f} s; outcomes: " +
          ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    for case, label in failures[:40]:
        print(f"  FAIL [{label}] {case.name}")
    if len(failures) > 40:
        print(f"  ... and {len(failures) - 40} more failures")
    status, _ = await get(args, "/health")
    print(f"after the corpus: GET /health -> {status}")
    ok = not failures and status == 200
    status, body = await get(args, "/v1/completions", {"model": model, "prompt": "Hello", "max_tokens": 4})
    try:
        text_ok = status == 200 and isinstance(json.loads(body)["choices"][0]["text"], str)
    except (ValueError, KeyError, IndexError, TypeError):
        text_ok = False
    print(f"after the corpus: a valid completion -> {status} ({'ok' if text_ok else 'FAILED'})")
    ok = ok and text_ok
    print("fuzz_http: PASS" if ok else f"fuzz_http: FAIL ({len(failures)} cases failed)")
    return 0 if ok else 1


def main(argv) -> int:
    p = argparse.ArgumentParser(prog="fuzz_http.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1", help="server host (default: 127.0.0.1)")
    p.add_argument("--port", type=int, required=True, help="server port")
    p.add_argument("--count", type=int, default=1200, help="corpus size, at least 1000 (default: 1200)")
    p.add_argument("--seed", type=int, default=1, help="seed of the random part of the corpus (default: 1)")
    p.add_argument("--api-key", help="bearer key, when the server needs one")
    p.add_argument("--parallel", type=int, default=8, help="cases in flight at once (default: 8)")
    p.add_argument("--case-timeout", type=float, default=20.0, help="seconds one case may take (default: 20)")
    p.add_argument("--verbose", action="store_true", help="print every case's outcome")
    p.add_argument("--list", action="store_true", help="print the case names and exit (no server needed)")
    args = p.parse_args(argv)
    if args.count < 1000:
        p.error(f"--count must be at least 1000, got {args.count}")
    if not 0 < args.port < 65536 or args.parallel < 1 or args.case_timeout <= 0:
        p.error("--port must be in 1..65535, --parallel >= 1 and --case-timeout > 0")
    if args.list:
        for case in build_corpus("MODEL", args.api_key, args.count, args.seed):
            print(("[garbage] " if case.garbage else "") + case.name)
        return 0
    try:
        return asyncio.run(main_async(args))
    except (OSError, ValueError, KeyError, IndexError) as e:
        print(f"fuzz_http: FAIL: {type(e).__name__}: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
