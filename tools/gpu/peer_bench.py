#!/usr/bin/env python3
"""The PyTorch peer of troupe's GPU benchmark: the best plain-PyTorch
decode and prefill we can write for the same shape, in the manner of gpt-fast.

- the model of a Hugging Face config.json (Llama family, GQA), random bf16 weights made on
  the GPU (normal(0, 0.02); nothing read or written on disk);
- fused q/k/v and gate/up weights, a static KV cache [B, kv_heads, max_seq, head_dim];
- decode: one token per sequence, greedy argmax on the device, the whole step compiled with
  torch.compile(mode="reduce-overhead") (CUDA graphs), one compile per batch size;
- prefill: eager, batch 1, cuBLAS GEMMs and SDPA causal attention (flash) over the prompt.

Prints one JSON line: decode ms per step and tokens/s per batch, prefill ms per prompt
length, compile seconds, the card.

  python3 tools/gpu/peer_bench.py --config /tmp/l8b --batches 1,64,256 --prefill 1024,2048,8192
"""
import argparse
import json
import math
import os
import time

import torch
import torch.nn.functional as F
from torch import nn


class Cfg:
    def __init__(self, d):
        self.dim = d["hidden_size"]
        self.n_layers = d["num_hidden_layers"]
        self.n_heads = d["num_attention_heads"]
        self.n_kv = d.get("num_key_value_heads", self.n_heads)
        self.head_dim = d.get("head_dim", self.dim // self.n_heads)
        self.ffn = d["intermediate_size"]
        self.vocab = d["vocab_size"]
        self.eps = d.get("rms_norm_eps", 1e-5)
        self.theta = d.get("rope_theta", 10000.0)


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


def rope(x, cos, sin):
    # x [B, S, H, D]; cos/sin [S or B*1, D/2] broadcast over heads; HF rotate_half convention.
    d = x.shape[-1] // 2
    x1, x2 = x[..., :d].float(), x[..., d:].float()
    c, s = cos[:, :, None, :], sin[:, :, None, :]
    return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1).type_as(x)


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.wqkv = nn.Linear(c.dim, (c.n_heads + 2 * c.n_kv) * c.head_dim, bias=False)
        self.wo = nn.Linear(c.n_heads * c.head_dim, c.dim, bias=False)
        self.w13 = nn.Linear(c.dim, 2 * c.ffn, bias=False)
        self.w2 = nn.Linear(c.ffn, c.dim, bias=False)
        self.n1 = RMSNorm(c.dim, c.eps)
        self.n2 = RMSNorm(c.dim, c.eps)
        self.register_buffer("k_cache", None, persistent=False)
        self.register_buffer("v_cache", None, persistent=False)

    def forward(self, x, pos, cos, sin, mask):
        c = self.c
        B, S, _ = x.shape
        qkv = self.wqkv(self.n1(x))
        q, k, v = qkv.split([c.n_heads * c.head_dim, c.n_kv * c.head_dim, c.n_kv * c.head_dim], dim=-1)
        q = rope(q.view(B, S, c.n_heads, c.head_dim), cos, sin).transpose(1, 2)
        k = rope(k.view(B, S, c.n_kv, c.head_dim), cos, sin).transpose(1, 2)
        v = v.view(B, S, c.n_kv, c.head_dim).transpose(1, 2)
        if mask is None:  # prefill: causal attention over the prompt itself
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        else:  # decode: write this position, attend over the static cache
            self.k_cache.index_copy_(2, pos, k)
            self.v_cache.index_copy_(2, pos, v)
            o = F.scaled_dot_product_attention(q, self.k_cache, self.v_cache, attn_mask=mask, enable_gqa=True)
        x = x + self.wo(o.transpose(1, 2).reshape(B, S, -1))
        g, u = self.w13(self.n2(x)).chunk(2, dim=-1)
        return x + self.w2(F.silu(g) * u)


class Model(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.embed = nn.Embedding(c.vocab, c.dim)
        self.layers = nn.ModuleList(Block(c) for _ in range(c.n_layers))
        self.norm = RMSNorm(c.dim, c.eps)
        self.output = nn.Linear(c.dim, c.vocab, bias=False)
        inv = 1.0 / (c.theta ** (torch.arange(0, c.head_dim, 2).float() / c.head_dim))
        t = torch.arange(16384).float()
        f = torch.outer(t, inv)
        self.register_buffer("cos", f.cos(), persistent=False)
        self.register_buffer("sin", f.sin(), persistent=False)

    def setup_cache(self, batch, max_seq):
        c = self.c
        for l in self.layers:
            l.k_cache = None
            l.v_cache = None
        torch.cuda.empty_cache()
        for l in self.layers:
            l.k_cache = torch.zeros(batch, c.n_kv, max_seq, c.head_dim, dtype=torch.bfloat16, device="cuda")
            l.v_cache = torch.zeros_like(l.k_cache)
        self.max_seq = max_seq

    def forward(self, tokens, pos, mask=None):
        x = self.embed(tokens)
        cos = self.cos[pos][None]
        sin = self.sin[pos][None]
        for l in self.layers:
            x = l(x, pos, cos, sin, mask)
        return self.output(self.norm(x[:, -1:]))


def decode_step(model, tokens, pos, mask):
    logits = model(tokens, pos, mask)
    return logits[:, -1].argmax(-1, keepdim=True).to(torch.int32)


def time_events(fn, reps):
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(reps):
        s.record()
        fn()
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e))
    times.sort()
    return times[len(times) // 2]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="a directory with config.json")
    ap.add_argument("--batches", default="1,64,256")
    ap.add_argument("--prefill", default="1024,2048,8192")
    ap.add_argument("--context", type=int, default=128, help="KV length before the timed decode steps")
    ap.add_argument("--gen", type=int, default=64, help="timed decode steps per batch")
    a = ap.parse_args()
    with open(os.path.join(a.config, "config.json")) as f:
        c = Cfg(json.load(f))
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = Model(c)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.02)
    model.eval()
    out = {"engine": "pytorch " + torch.__version__ + " (gpt-fast style, torch.compile reduce-overhead)",
           "card": torch.cuda.get_device_name(), "decode": [], "prefill": []}
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters()) - model.embed.weight.numel() * 2
    out["weight_GB"] = weight_bytes / 1e9
    # Prefill first (eager), while no cache is allocated.
    with torch.no_grad():
        for n in [int(x) for x in a.prefill.split(",") if x]:
            toks = torch.randint(0, 32000, (1, n), device="cuda")
            pos = torch.arange(n, device="cuda")
            fn = lambda: model(toks, pos)
            fn()
            torch.cuda.synchronize()
            ms = time_events(fn, 5)
            flops = 2 * weight_bytes / 2 * n + 2 * n * n * c.n_heads * c.head_dim * c.n_layers
            out["prefill"].append({"prompt": n, "ms": ms, "TFLOPs": flops / ms / 1e9})
            print(f"peer prefill {n}: {ms:.2f} ms", flush=True)
    # One static graph per batch size (as gpt-fast): no dynamic batch dimension after the
    # second size is seen.
    torch._dynamo.config.automatic_dynamic_shapes = False
    torch._dynamo.config.cache_size_limit = 64
    step = torch.compile(decode_step, mode="reduce-overhead", fullgraph=True)
    with torch.no_grad():
        for b in [int(x) for x in a.batches.split(",") if x]:
            max_seq = a.context + a.gen + 16
            model.setup_cache(b, max_seq)
            # The prompt's KV as if prefilled (random values: the decode reads them all the same).
            for l in model.layers:
                l.k_cache[:, :, : a.context].normal_()
                l.v_cache[:, :, : a.context].normal_()
            ar = torch.arange(max_seq, device="cuda")
            tok = torch.randint(0, 32000, (b, 1), device="cuda", dtype=torch.int32)
            t0 = time.perf_counter()
            for i in range(3):  # compile + graph capture (per batch size)
                pos = torch.tensor([a.context + i], device="cuda")
                mask = (ar <= pos)[None, None, None, :]
                tok = step(model, tok, pos, mask).clone()
            torch.cuda.synchronize()
            compile_s = time.perf_counter() - t0
            # Timed: gen steps, each step's token fed to the next on the device; the host
            # builds the next position like an engine would.
            times = []
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            for i in range(a.gen):
                pos = torch.tensor([a.context + 3 + i], device="cuda")
                mask = (ar <= pos)[None, None, None, :]
                t1 = time.perf_counter()
                tok = step(model, tok, pos, mask).clone()
                tok_host = tok.cpu()  # the engine needs the tokens on the host every step
                times.append((time.perf_counter() - t1) * 1e3)
            times.sort()
            ms = times[len(times) // 2]
            row = {"batch": b, "ms_per_step": ms, "tokens_per_s": b * 1e3 / ms, "compile_s": compile_s}
            out["decode"].append(row)
            print(f"peer decode batch {b}: {ms:.3f} ms/step (compile {compile_s:.0f} s)", flush=True)
            del tok_host
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
