#!/usr/bin/env python3
"""Prints tools/gpu/check.sh's results (a folder) as the markdown table of docs/benchmarks.md."""
import json
import os
import sys


def load_lines(path):
    if not os.path.exists(path):
        return []
    return [json.loads(l) for l in open(path) if l.strip().startswith("{")]


def main():
    d = sys.argv[1]
    card = open(os.path.join(d, "card.txt")).read().strip() if os.path.exists(os.path.join(d, "card.txt")) else "?"
    print(f"GPU: {card}\n")
    tests = os.path.join(d, "tests.txt")
    if os.path.exists(tests):
        print(open(tests).read().strip().splitlines()[-1] + "\n")
    agr = os.path.join(d, "agreement.json")
    if os.path.exists(agr):
        print("| topology | rel. logit error vs HF f32 | HF bf16's own | argmax = HF greedy | free-run tokens = HF | pass |")
        print("| --- | --- | --- | --- | --- | --- |")
        counts = {"passed": 0, "failed": 0, "skipped": 0}
        for r in json.load(open(agr)):
            if "skipped" in r:
                counts["skipped"] += 1
                print(f"| {r['topology']} | skipped: {r['skipped']} | | | | skipped |")
                continue
            counts["passed" if r["pass"] else "failed"] += 1
            print(f"| {r['topology']} | {r['rel_err']:.4f} | {r['hf_bf16_err']:.4f} | {r['argmax']:.1%} | "
                  f"{r['free_run']:.1%} | {'yes' if r['pass'] else 'NO'} |")
        print(f"\nagreement: {counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped\n")
    bench = load_lines(os.path.join(d, "bench.jsonl"))
    hf = load_lines(os.path.join(d, "hf.json"))
    if bench:
        print("| model | layers | tp | weights GB/GPU | copy TB/s | roofline ms | batch 1 ms/token | of roofline |"
              " batch 16 tok/s | batch 64 tok/s | batch 256 tok/s | TTFT 1k ms | TTFT 2k ms | GEMM TFLOP/s |")
        print("| --- " * 14 + "|")
        for b in bench:
            dec = {r["batch"]: r for r in b["decode"]}
            pre = {r["prompt"]: r for r in b["prefill"]}
            def tps(n):
                return f"{dec[n]['tokens_per_s']:.0f}" if n in dec else "-"
            def ttft(n):
                return f"{pre[n]['ttft_ms']:.1f} ({pre[n]['matrix_rate_fraction']:.0%})" if n in pre else "-"
            one = dec.get(1, {})
            print(f"| {b['model']} | {b['layers']} | {b['tp']} | {b['weight_GB_per_gpu']:.2f} | "
                  f"{b['copy_rate_GBps'] / 1e3:.2f} | {b['roofline_ms']:.2f} | {one.get('ms_per_step', 0):.2f} | "
                  f"{one.get('roofline_fraction', 0):.0%} | {tps(16)} | {tps(64)} | {tps(256)} | {ttft(1024)} | "
                  f"{ttft(2048)} | {b['gemm_TFLOPs']:.0f} |")
        one = {b["tp"]: b for b in bench if b["layers"] == 32}
        if 1 in one:
            base = one[1]["decode"][0]["ms_per_step"]
            for tp in (2, 4):
                if tp in one:
                    print(f"\ntensor {tp} speedup at batch 1: {base / one[tp]['decode'][0]['ms_per_step']:.2f}x")
    for h in hf:
        print(f"\n{h['engine']} eager generate, batch 1: {h['ms_per_token']:.1f} ms/token")


if __name__ == "__main__":
    main()
