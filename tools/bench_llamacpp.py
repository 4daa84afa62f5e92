#!/usr/bin/env python3
"""Benchmark llama.cpp (through llama-cpp-python's low-level API) on CPU.

Measures, with an F32 KV cache and flash attention off:
  prefill_tok_s    one prompt of P tokens, decoded in n_batch chunks
  decode_b1_tok_s  G steps of one token for one sequence (context P)
  decode_bB_tok_s  G steps of B tokens, one for each of B parallel sequences
                   (each sequence first prefilled with P tokens, not timed)
Each measurement is repeated --repeats times; the median is reported.
Prints one JSON line.

Usage: tools/bench_llamacpp.py MODEL --threads T --prompt-tokens P --gen-tokens G --batch B
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

GGML_TYPE_F32 = 0
N_BATCH = 512
FIRST_ORDINARY_TOKEN = 17  # SmolLM2: ids below are control tokens


def fail(message: str) -> None:
    """Print an error and exit with status 1."""
    print(f"bench_llamacpp: error: {message}", file=sys.stderr)
    sys.exit(1)


class Bench:
    """A llama.cpp model + context sized for B sequences of P + G tokens."""

    def __init__(self, path: Path, threads: int, prompt_tokens: int, gen_tokens: int, batch: int):
        import llama_cpp
        self.lib = llama_cpp
        llama_cpp.llama_backend_init()
        self.log_callback = llama_cpp.llama_log_callback(_quiet_log)  # keep alive
        llama_cpp.llama_log_set(self.log_callback, None)
        model_params = llama_cpp.llama_model_default_params()
        model_params.n_gpu_layers = 0
        self.model = llama_cpp.llama_model_load_from_file(str(path).encode(), model_params)
        if not self.model:
            fail(f"{path}: llama.cpp could not load the model")
        vocab = llama_cpp.llama_model_get_vocab(self.model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
        per_seq = -(-(prompt_tokens + gen_tokens + 1) // 256) * 256
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = per_seq * batch
        params.n_batch = max(N_BATCH, batch)
        params.n_ubatch = max(N_BATCH, batch)
        params.n_seq_max = batch
        params.kv_unified = False
        params.n_threads = threads
        params.n_threads_batch = threads
        params.type_k = GGML_TYPE_F32
        params.type_v = GGML_TYPE_F32
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        params.no_perf = True
        self.ctx = llama_cpp.llama_init_from_model(self.model, params)
        if not self.ctx:
            fail(f"{path}: llama.cpp could not create a context (n_ctx {params.n_ctx}, "
                 f"{batch} sequences)")
        self.n_batch = params.n_batch
        self.batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        self.rng = np.random.default_rng(1234)

    def close(self) -> None:
        self.lib.llama_batch_free(self.batch)
        self.lib.llama_free(self.ctx)
        self.lib.llama_model_free(self.model)

    def clear(self) -> None:
        """Forget every sequence in the KV cache."""
        self.lib.llama_memory_clear(self.lib.llama_get_memory(self.ctx), True)

    def tokens(self, n: int) -> list[int]:
        """n random ordinary token ids (content does not change the cost)."""
        return self.rng.integers(FIRST_ORDINARY_TOKEN, self.n_vocab, size=n).tolist()

    def decode(self, entries: list[tuple[int, int, int, bool]]) -> None:
        """One llama_decode of (token, pos, seq, want_logits) entries."""
        for i, (token, pos, seq, logits) in enumerate(entries):
            self.batch.token[i] = token
            self.batch.pos[i] = pos
            self.batch.n_seq_id[i] = 1
            self.batch.seq_id[i][0] = seq
            self.batch.logits[i] = logits
        self.batch.n_tokens = len(entries)
        status = self.lib.llama_decode(self.ctx, self.batch)
        if status != 0:
            fail(f"llama_decode returned {status} for a batch of {len(entries)} tokens")
        self.lib.llama_synchronize(self.ctx)

    def prefill(self, seqs: list[int], n: int) -> None:
        """Decode n prompt tokens for every sequence, in n_batch chunks."""
        entries = [(t, pos, seq, pos == n - 1)
                   for seq in seqs for pos, t in enumerate(self.tokens(n))]
        for start in range(0, len(entries), self.n_batch):
            self.decode(entries[start:start + self.n_batch])

    def generate(self, seqs: list[int], start_pos: int, steps: int) -> None:
        """steps decode calls of one token for each sequence."""
        for step in range(steps):
            self.decode([(t, start_pos + step, seq, True)
                         for seq, t in zip(seqs, self.tokens(len(seqs)))])


def _quiet_log(level, text, user_data) -> None:
    """Swallow llama.cpp's log output."""


def timed(action) -> float:
    """Seconds taken by action()."""
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def run(args: argparse.Namespace) -> dict:
    """Run all measurements and return the result record."""
    bench = Bench(args.model, args.threads, args.prompt_tokens, args.gen_tokens, args.batch)
    seqs = list(range(args.batch))
    prefill, b1, bb = [], [], []
    bench.prefill([0], 16)  # warm-up: first-call allocations
    bench.clear()
    for _ in range(args.repeats):
        bench.clear()
        prefill.append(timed(lambda: bench.prefill([0], args.prompt_tokens)))
        b1.append(timed(lambda: bench.generate([0], args.prompt_tokens, args.gen_tokens)))
        bench.clear()
        bench.prefill(seqs, args.prompt_tokens)
        bb.append(timed(lambda: bench.generate(seqs, args.prompt_tokens, args.gen_tokens)))
    bench.close()
    return {
        "engine": "llama.cpp",
        "model": args.model.name,
        "threads": args.threads,
        "prompt_tokens": args.prompt_tokens,
        "gen_tokens": args.gen_tokens,
        "prefill_tok_s": round(args.prompt_tokens / statistics.median(prefill), 2),
        "decode_b1_tok_s": round(args.gen_tokens / statistics.median(b1), 2),
        "decode_bB_tok_s": round(args.batch * args.gen_tokens / statistics.median(bb), 2),
        "batch": args.batch,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="GGUF model file")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--gen-tokens", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not args.model.is_file():
        fail(f"{args.model}: no such model file")
    for name in ("threads", "prompt_tokens", "gen_tokens", "batch", "repeats"):
        if getattr(args, name) < 1:
            fail(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    try:
        import llama_cpp  # noqa: F401  (fail early with a clear message)
    except ImportError:
        fail("llama_cpp not importable: run tools/venv.sh --reference and use its python")
    with args.model.open("rb") as handle:
        if handle.read(4) != b"GGUF":
            fail(f"{args.model}: not a GGUF file (bad magic)")
    print(json.dumps(run(args)))


if __name__ == "__main__":
    main()
