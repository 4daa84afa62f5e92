#!/usr/bin/env python3
"""transformers' eager generate on the same GPU and shape as troupe's benchmark: batch-1
decode time per token (random bf16 weights made on the GPU; nothing written to disk)."""
import argparse
import json
import time

import torch
import transformers


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True, help="a directory with config.json")
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--gen", type=int, default=64)
    a = ap.parse_args()
    config = transformers.AutoConfig.from_pretrained(a.config)
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = transformers.AutoModelForCausalLM.from_config(config).eval()
    ids = torch.randint(0, 32000, (1, a.prompt), device="cuda")
    kw = dict(do_sample=False, pad_token_id=0, attention_mask=torch.ones_like(ids))
    with torch.no_grad():
        model.generate(ids, max_new_tokens=4, min_new_tokens=4, **kw)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        model.generate(ids, max_new_tokens=1, min_new_tokens=1, **kw)
        torch.cuda.synchronize()
        t1 = time.perf_counter()
        model.generate(ids, max_new_tokens=a.gen + 1, min_new_tokens=a.gen + 1, **kw)
        torch.cuda.synchronize()
        t2 = time.perf_counter()
    ms = ((t2 - t1) - (t1 - t0)) / a.gen * 1e3
    print(json.dumps({"engine": "transformers " + transformers.__version__, "batch": 1,
                      "ms_per_token": ms, "ttft_ms_prompt": (t1 - t0) * 1e3, "prompt": a.prompt}))


if __name__ == "__main__":
    main()
