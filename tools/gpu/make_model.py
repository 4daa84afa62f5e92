#!/usr/bin/env python3
"""Writes a Hugging Face-format model at a real model's shape: config.json (+ tokenizer.json
when given), and with --weights random bf16 weights made by transformers (seeded, its own
initializer: normal(0, 0.02)). Without --weights the directory serves troupe's `random` load
format (weights made on the GPUs from config.json alone).

  python3 tools/gpu/make_model.py --shape llama3-8b --layers 4 --weights --out /tmp/l8b4
"""
import argparse
import json
import os
import shutil

SHAPES = {
    # Llama-3.1-8B (llama3 RoPE scaling), Qwen2.5-7B (q/k/v biases), Llama-3.1-70B.
    "llama3-8b": dict(model_type="llama", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                      num_attention_heads=32, num_key_value_heads=8, vocab_size=128256, rope_theta=500000.0,
                      rms_norm_eps=1e-5, max_position_embeddings=131072, tie_word_embeddings=False,
                      rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                                        high_freq_factor=4.0, original_max_position_embeddings=8192)),
    "qwen2.5-7b": dict(model_type="qwen2", hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                       num_attention_heads=28, num_key_value_heads=4, vocab_size=152064, rope_theta=1000000.0,
                       rms_norm_eps=1e-6, max_position_embeddings=32768, tie_word_embeddings=False),
    "llama3-70b": dict(model_type="llama", hidden_size=8192, intermediate_size=28672, num_hidden_layers=80,
                       num_attention_heads=64, num_key_value_heads=8, vocab_size=128256, rope_theta=500000.0,
                       rms_norm_eps=1e-5, max_position_embeddings=131072, tie_word_embeddings=False,
                       rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                                         high_freq_factor=4.0, original_max_position_embeddings=8192)),
}


def write_tokenizer(src, dst, vocab_size):
    """Copies a tokenizer.json; a byte-level BPE vocabulary smaller than the model's gets an
    entry "Ġt<id>" (text " t<id>") for every id it lacks, so that every token a random-weight
    model samples decodes to text (a streaming client counts tokens by their text). No merge
    makes these entries, so encoding is unchanged."""
    with open(src) as f:
        tok = json.load(f)
    model = tok.get("model") or {}
    vocab = model.get("vocab")
    if model.get("type") == "BPE" and isinstance(vocab, dict):
        taken = set(vocab.values()) | {t["id"] for t in tok.get("added_tokens") or []}
        for i in range(vocab_size):
            if i not in taken:
                vocab[f"\u0120t{i}"] = i
        with open(dst, "w") as f:
            json.dump(tok, f, ensure_ascii=False)
    else:
        shutil.copy(src, dst)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", required=True, choices=sorted(SHAPES))
    ap.add_argument("--layers", type=int, help="fewer layers than the real model (same layer shapes)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--weights", action="store_true", help="write random bf16 weights through transformers")
    ap.add_argument("--tokenizer", help="a tokenizer.json to copy beside the config")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    cfg = dict(SHAPES[a.shape])
    if a.layers:
        cfg["num_hidden_layers"] = a.layers
    cfg.update(architectures=["Qwen2ForCausalLM" if cfg["model_type"] == "qwen2" else "LlamaForCausalLM"],
               torch_dtype="bfloat16", initializer_range=0.02, hidden_act="silu", bos_token_id=1, eos_token_id=2)
    os.makedirs(a.out, exist_ok=True)
    if a.weights:
        import torch
        import transformers
        config = transformers.AutoConfig.for_model(**cfg)
        torch.manual_seed(a.seed)
        torch.set_default_dtype(torch.bfloat16)
        with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
            model = transformers.AutoModelForCausalLM.from_config(config)
        model.save_pretrained(a.out, safe_serialization=True)
    else:
        with open(os.path.join(a.out, "config.json"), "w") as f:
            json.dump(cfg, f, indent=1)
    if a.tokenizer:
        write_tokenizer(a.tokenizer, os.path.join(a.out, "tokenizer.json"), cfg["vocab_size"])
    print(f"{a.shape} ({cfg['num_hidden_layers']} layers) written to {a.out}")


if __name__ == "__main__":
    main()
