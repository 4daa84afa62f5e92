#!/usr/bin/env python3
"""Export a llama-architecture GGUF model as a Hugging Face model directory.

Writes config.json (LlamaForCausalLM), model.safetensors (float32, written by
hand: no torch/safetensors needed), tokenizer.json and tokenizer_config.json,
and generation_config.json when the GGUF holds general.sampling.* values.
Quantized tensors are dequantized to float32. llama.cpp's converter permutes
the rows of q_proj/k_proj for rotary embeddings; this script undoes it.

After writing, the safetensors files are read back and every tensor is
compared with the GGUF (re-applying llama.cpp's permutation). With
--check-goldens, a numpy forward pass over the exported files (Hugging Face
rotary convention) is compared with llama.cpp's logits from a golden file.

Usage: tools/export_hf.py GGUF OUTDIR [--sharded N] [--check-goldens JSON]
"""

from __future__ import annotations

import argparse
import json
import re
import struct
import sys
from pathlib import Path
from typing import Any

import numpy as np

import gguf
from gguf.quants import dequantize

TOKEN_TYPE_CONTROL = 3
TOKEN_TYPE_USER_DEFINED = 4

LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}

BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
              "use_regex": True}
# Pre-tokenizers by GGUF tokenizer.ggml.pre (llama.cpp names).
PRE_TOKENIZERS = {
    "smollm": {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True}, BYTE_LEVEL]},
    "gpt2": BYTE_LEVEL,
    "default": BYTE_LEVEL,
}


class ExportError(Exception):
    """A problem with the input model, naming the file and key or tensor."""


def fail(message: str) -> None:
    """Print an error and exit with status 1."""
    print(f"export_hf: error: {message}", file=sys.stderr)
    sys.exit(1)


class GgufModel:
    """Metadata and tensors of one GGUF file."""

    def __init__(self, path: Path):
        if not path.is_file():
            raise ExportError(f"{path}: no such file")
        try:
            self.reader = gguf.GGUFReader(path)
        except Exception as exc:
            raise ExportError(f"{path}: not a readable GGUF file: {exc}") from exc
        self.path = path
        self.arch = self.get("general.architecture")
        if self.arch != "llama":
            raise ExportError(f"{path}: general.architecture is {self.arch!r}, only 'llama' is supported")

    def get(self, key: str, default: Any = ExportError) -> Any:
        """Value of a KV pair; a missing required key is an error naming it."""
        field = self.reader.get_field(key)
        if field is None:
            if default is ExportError:
                raise ExportError(f"{self.path}: missing key {key}")
            return default
        return field.contents()

    def hp(self, name: str, default: Any = ExportError) -> Any:
        """Architecture hyper-parameter, e.g. hp('block_count') -> llama.block_count."""
        return self.get(f"{self.arch}.{name}", default)

    def tensor_names(self) -> list[str]:
        return [t.name for t in self.reader.tensors]

    def tensor_f32(self, tensor: gguf.ReaderTensor) -> np.ndarray:
        """Dequantized tensor with numpy shape = reversed GGUF dims ([out, in])."""
        data = dequantize(tensor.data, tensor.tensor_type).astype(np.float32, copy=False)
        shape = tuple(int(d) for d in reversed(tensor.shape.tolist()))
        if data.size != int(np.prod(shape)):
            raise ExportError(f"{self.path}: tensor {tensor.name}: {data.size} values for shape {shape}")
        return data.reshape(shape)


def hf_name(gguf_name: str) -> str:
    """Hugging Face tensor name for a GGUF tensor name."""
    if gguf_name in GLOBAL_NAMES:
        return GLOBAL_NAMES[gguf_name]
    match = re.fullmatch(r"blk\.(\d+)\.(.+)", gguf_name)
    if match and match.group(2) in LAYER_NAMES:
        return f"model.layers.{match.group(1)}.{LAYER_NAMES[match.group(2)]}"
    raise ExportError(f"tensor {gguf_name}: no Hugging Face equivalent known")


def unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's rotary row permutation of q_proj/k_proj ([out, in])."""
    out, width = w.shape
    head_dim = out // n_head
    return w.reshape(n_head, head_dim // 2, 2, width).swapaxes(1, 2).reshape(out, width)


def permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's permutation (convert_hf_to_gguf.py LlamaModel.permute)."""
    out, width = w.shape
    head_dim = out // n_head
    return w.reshape(n_head, 2, head_dim // 2, width).swapaxes(1, 2).reshape(out, width)


def heads_for(name: str, model: GgufModel) -> int | None:
    """Head count whose permutation applies to a GGUF tensor, or None."""
    if name.endswith(".attn_q.weight"):
        return int(model.hp("attention.head_count"))
    if name.endswith(".attn_k.weight"):
        return int(model.hp("attention.head_count_kv", model.hp("attention.head_count")))
    return None


def hf_tensors(model: GgufModel) -> list[tuple[str, np.ndarray]]:
    """All tensors as (HF name, float32 [out, in] array), q/k un-permuted."""
    result = []
    for tensor in model.reader.tensors:
        if tensor.name == "rope_freqs.weight":
            raise ExportError(f"{model.path}: tensor rope_freqs.weight (llama3 rope) is not supported")
        array = model.tensor_f32(tensor)
        n_head = heads_for(tensor.name, model)
        if n_head is not None:
            array = unpermute(array, n_head)
        result.append((hf_name(tensor.name), np.ascontiguousarray(array)))
    return result


def make_config(model: GgufModel) -> dict[str, Any]:
    """config.json for LlamaForCausalLM from the GGUF hyper-parameters."""
    n_head = int(model.hp("attention.head_count"))
    hidden = int(model.hp("embedding_length"))
    tokens = model.get("tokenizer.ggml.tokens")
    config: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": int(model.hp("vocab_size", len(tokens))),
        "hidden_size": hidden,
        "intermediate_size": int(model.hp("feed_forward_length")),
        "num_hidden_layers": int(model.hp("block_count")),
        "num_attention_heads": n_head,
        "num_key_value_heads": int(model.hp("attention.head_count_kv", n_head)),
        "head_dim": int(model.hp("attention.key_length", hidden // n_head)),
        "max_position_embeddings": int(model.hp("context_length")),
        "rms_norm_eps": float(str(np.float32(model.hp("attention.layer_norm_rms_epsilon")))),
        "rope_theta": float(model.hp("rope.freq_base", 10000.0)),
        "rope_scaling": None,
        "hidden_act": "silu",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "initializer_range": 0.02,
        "pretraining_tp": 1,
        "use_cache": True,
        "tie_word_embeddings": "output.weight" not in model.tensor_names(),
        "torch_dtype": "float32",
    }
    scaling = model.hp("rope.scaling.type", "none")
    if scaling == "linear":
        config["rope_scaling"] = {"type": "linear", "factor": float(model.hp("rope.scaling.factor"))}
    elif scaling != "none":
        raise ExportError(f"{model.path}: {model.arch}.rope.scaling.type {scaling!r} is not supported")
    for key in ("bos", "eos", "padding"):
        token_id = model.get(f"tokenizer.ggml.{key}_token_id", None)
        if token_id is not None:
            config[f"{'pad' if key == 'padding' else key}_token_id"] = int(token_id)
    return config


def make_tokenizer(model: GgufModel) -> dict[str, Any]:
    """tokenizer.json (BPE, byte-level) from the GGUF vocabulary and merges."""
    if model.get("tokenizer.ggml.model") != "gpt2":
        raise ExportError(f"{model.path}: tokenizer.ggml.model {model.get('tokenizer.ggml.model')!r}"
                          " is not supported (only 'gpt2' BPE)")
    pre = model.get("tokenizer.ggml.pre", "default")
    if pre not in PRE_TOKENIZERS:
        raise ExportError(f"{model.path}: tokenizer.ggml.pre {pre!r} has no known pre-tokenizer")
    tokens = model.get("tokenizer.ggml.tokens")
    types = model.get("tokenizer.ggml.token_type")
    if len(types) != len(tokens):
        raise ExportError(f"{model.path}: tokenizer.ggml.token_type has {len(types)} entries, "
                          f"tokenizer.ggml.tokens has {len(tokens)}")
    added = [{"id": i, "content": tok, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": t == TOKEN_TYPE_CONTROL}
             for i, (tok, t) in enumerate(zip(tokens, types))
             if t in (TOKEN_TYPE_CONTROL, TOKEN_TYPE_USER_DEFINED)]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise ExportError(f"{model.path}: tokenizer.ggml.tokens has duplicate entries")
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": PRE_TOKENIZERS[pre],
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False,
                           "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": model.get("tokenizer.ggml.merges")},
    }


def make_tokenizer_config(model: GgufModel, tokenizer: dict[str, Any]) -> dict[str, Any]:
    """tokenizer_config.json: special tokens, chat template, BOS rule."""
    tokens = model.get("tokenizer.ggml.tokens")

    def token(key: str) -> str | None:
        token_id = model.get(f"tokenizer.ggml.{key}_token_id", None)
        if token_id is None:
            return None
        if not 0 <= int(token_id) < len(tokens):
            raise ExportError(f"{model.path}: tokenizer.ggml.{key}_token_id {token_id} out of range")
        return tokens[int(token_id)]

    config = {
        "add_bos_token": bool(model.get("tokenizer.ggml.add_bos_token", False)),
        "add_eos_token": bool(model.get("tokenizer.ggml.add_eos_token", False)),
        "add_prefix_space": False,
        "bos_token": token("bos"),
        "eos_token": token("eos"),
        "unk_token": token("unknown"),
        "pad_token": token("padding"),
        "clean_up_tokenization_spaces": False,
        "model_max_length": int(model.hp("context_length")),
        "tokenizer_class": "GPT2Tokenizer",
        "added_tokens_decoder": {str(t["id"]): {k: v for k, v in t.items() if k != "id"}
                                 for t in tokenizer["added_tokens"]},
    }
    template = model.get("tokenizer.chat_template", None)
    if template is not None:
        config["chat_template"] = template
    return config


# generation_config.json key <- GGUF general.sampling.* key (the ones troupe reads back).
GENERATION_KEYS = {
    "temperature": "general.sampling.temp",
    "top_p": "general.sampling.top_p",
    "top_k": "general.sampling.top_k",
    "min_p": "general.sampling.min_p",
    "repetition_penalty": "general.sampling.penalty_repeat",
}


def make_generation_config(model: GgufModel) -> dict[str, Any] | None:
    """generation_config.json from the GGUF's general.sampling.* keys; None when it has none."""
    values = {hf: model.get(key, None) for hf, key in GENERATION_KEYS.items()}
    values = {k: v for k, v in values.items() if v is not None}
    if not values:
        return None
    config: dict[str, Any] = {}
    for key in ("bos_token_id", "eos_token_id"):
        token = model.get(f"tokenizer.ggml.{key}", None)
        if token is not None:
            config[key] = int(token)
    config.update({k: (int(v) if k == "top_k" else float(v)) for k, v in values.items()})
    return config


def write_safetensors(path: Path, tensors: list[tuple[str, np.ndarray]]) -> None:
    """Write float32 tensors in the safetensors format (8-byte LE header length, JSON, data)."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, array in tensors:
        header[name] = {"dtype": "F32", "shape": list(array.shape),
                        "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)
    with path.open("wb") as handle:
        handle.write(struct.pack("<Q", len(blob)))
        handle.write(blob)
        for _, array in tensors:
            handle.write(array.astype("<f4", copy=False).tobytes())


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Read an F32 safetensors file back with numpy only."""
    raw = path.read_bytes()
    if len(raw) < 8:
        raise ExportError(f"{path}: truncated safetensors file")
    (size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + size])
    data = memoryview(raw)[8 + size:]
    result = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        if info["dtype"] != "F32" or end > len(data):
            raise ExportError(f"{path}: tensor {name}: bad dtype or offsets {info}")
        result[name] = np.frombuffer(data[begin:end], dtype="<f4").reshape(info["shape"])
    return result


def shard(tensors: list[tuple[str, np.ndarray]], n: int) -> list[list[tuple[str, np.ndarray]]]:
    """Split tensors, in order, into n groups of roughly equal byte size."""
    if n > len(tensors):
        raise ExportError(f"--sharded {n}: more shards than tensors ({len(tensors)})")
    total = sum(a.nbytes for _, a in tensors)
    groups: list[list[tuple[str, np.ndarray]]] = [[] for _ in range(n)]
    done, last = 0, 0
    for index, (name, array) in enumerate(tensors):
        # Proportional to the bytes written so far, never skipping a shard,
        # and leaving at least one tensor for every later shard.
        target = min(n - 1, done * n // max(total, 1), last + 1)
        target = max(target, last, n - (len(tensors) - index))
        groups[target].append((name, array))
        done, last = done + array.nbytes, target
    return groups


def write_weights(outdir: Path, tensors: list[tuple[str, np.ndarray]], n_shards: int) -> list[Path]:
    """Write one model.safetensors or n shards plus model.safetensors.index.json."""
    if n_shards <= 1:
        path = outdir / "model.safetensors"
        write_safetensors(path, tensors)
        return [path]
    paths, weight_map = [], {}
    for i, group in enumerate(shard(tensors, n_shards)):
        path = outdir / f"model-{i + 1:05d}-of-{n_shards:05d}.safetensors"
        write_safetensors(path, group)
        paths.append(path)
        weight_map.update({name: path.name for name, _ in group})
    index = {"metadata": {"total_size": sum(a.nbytes for _, a in tensors)},
             "weight_map": weight_map}
    (outdir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return paths


def verify(model: GgufModel, paths: list[Path]) -> None:
    """Read the written weights back and compare with the GGUF tensors."""
    loaded: dict[str, np.ndarray] = {}
    for path in paths:
        loaded.update(read_safetensors(path))
    if len(loaded) != len(model.reader.tensors):
        raise ExportError(f"verify: {len(loaded)} tensors written, GGUF has {len(model.reader.tensors)}")
    for tensor in model.reader.tensors:
        back = loaded[hf_name(tensor.name)]
        n_head = heads_for(tensor.name, model)
        if n_head is not None:
            back = permute(back, n_head)
        if not np.array_equal(back, model.tensor_f32(tensor)):
            raise ExportError(f"verify: tensor {tensor.name} differs after the round trip")
    print(f"export_hf: verified {len(loaded)} tensors against {model.path.name}")


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    """RMSNorm over the last axis."""
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight


def rope_hf(x: np.ndarray, theta: float) -> np.ndarray:
    """Hugging Face (rotate_half, non-interleaved) rotary embedding of [T, heads, dim]."""
    n_tokens, _, dim = x.shape
    inv_freq = theta ** (-np.arange(0, dim, 2, dtype=np.float64) / dim)
    angles = np.arange(n_tokens, dtype=np.float64)[:, None] * inv_freq[None, :]
    cos = np.concatenate([np.cos(angles)] * 2, axis=-1)[:, None, :].astype(np.float32)
    sin = np.concatenate([np.sin(angles)] * 2, axis=-1)[:, None, :].astype(np.float32)
    rotated = np.concatenate([-x[..., dim // 2:], x[..., :dim // 2]], axis=-1)
    return x * cos + rotated * sin


def hf_forward_last(outdir: Path, weights: dict[str, np.ndarray], tokens: list[int]) -> np.ndarray:
    """Logits after the last token, computed with numpy from the exported HF files."""
    cfg = json.loads((outdir / "config.json").read_text())
    n_head, n_kv, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    eps, theta, n_tok = cfg["rms_norm_eps"], cfg["rope_theta"], len(tokens)
    h = weights["model.embed_tokens.weight"][tokens].astype(np.float32)
    mask = np.triu(np.full((n_tok, n_tok), -np.inf, dtype=np.float32), 1)
    for layer in range(cfg["num_hidden_layers"]):
        w = {k[len(f"model.layers.{layer}."):]: v for k, v in weights.items()
             if k.startswith(f"model.layers.{layer}.")}
        x = rms_norm(h, w["input_layernorm.weight"], eps)
        q = rope_hf((x @ w["self_attn.q_proj.weight"].T).reshape(n_tok, n_head, hd), theta)
        k = rope_hf((x @ w["self_attn.k_proj.weight"].T).reshape(n_tok, n_kv, hd), theta)
        v = (x @ w["self_attn.v_proj.weight"].T).reshape(n_tok, n_kv, hd)
        k, v = (np.repeat(t, n_head // n_kv, axis=1) for t in (k, v))
        scores = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(hd) + mask
        probs = np.exp(scores - scores.max(axis=-1, keepdims=True))
        probs /= probs.sum(axis=-1, keepdims=True)
        attn = np.einsum("hqk,khd->qhd", probs, v).reshape(n_tok, n_head * hd)
        h = h + attn @ w["self_attn.o_proj.weight"].T
        x = rms_norm(h, w["post_attention_layernorm.weight"], eps)
        gate = x @ w["mlp.gate_proj.weight"].T
        hidden = (gate / (1 + np.exp(-gate))) * (x @ w["mlp.up_proj.weight"].T)
        h = h + hidden @ w["mlp.down_proj.weight"].T
    out = rms_norm(h[-1], weights["model.norm.weight"], eps)
    head = weights.get("lm_head.weight", weights["model.embed_tokens.weight"])
    return head @ out


def check_goldens(outdir: Path, paths: list[Path], golden_path: Path, n_prompts: int) -> None:
    """Compare a numpy forward pass over the export with llama.cpp golden top logits."""
    try:
        golden = json.loads(golden_path.read_text(encoding="utf-8"))
        prompts = sorted(golden["prompts"], key=lambda p: len(p["prompt_tokens"]))[:n_prompts]
    except (OSError, ValueError, KeyError) as exc:
        raise ExportError(f"{golden_path}: not a readable golden file: {exc}") from exc
    weights: dict[str, np.ndarray] = {}
    for path in paths:
        weights.update(read_safetensors(path))
    worst = 0.0
    for prompt in prompts:
        logits = hf_forward_last(outdir, weights, prompt["prompt_tokens"])
        expected = prompt["top_logits"][0]
        if int(np.argmax(logits)) != expected[0][0]:
            raise ExportError(f"check: prompt {prompt['name']}: argmax {int(np.argmax(logits))}, "
                              f"llama.cpp {expected[0][0]}")
        for token, value in expected:
            worst = max(worst, abs(float(logits[token]) - value))
    if worst > 0.05:
        raise ExportError(f"check: logits differ from {golden_path.name} by up to {worst:.4f}")
    print(f"export_hf: numpy forward over the export matches {golden_path.name} on "
          f"{len(prompts)} prompts (max top-5 logit difference {worst:.5f})")


def export(gguf_path: Path, outdir: Path, n_shards: int, golden: Path | None, n_check: int) -> None:
    """Write the whole Hugging Face directory and verify the weights."""
    model = GgufModel(gguf_path)
    config = make_config(model)
    tokenizer = make_tokenizer(model)
    tokenizer_config = make_tokenizer_config(model, tokenizer)
    tensors = hf_tensors(model)
    generation = make_generation_config(model)
    outdir.mkdir(parents=True, exist_ok=True)
    for stale in [*outdir.glob("model*.safetensors"), *outdir.glob("model.safetensors.index.json"),
                  *outdir.glob("generation_config.json")]:
        stale.unlink()
    (outdir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (outdir / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False, indent=1) + "\n",
                                           encoding="utf-8")
    (outdir / "tokenizer_config.json").write_text(
        json.dumps(tokenizer_config, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    if generation is not None:
        (outdir / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    paths = write_weights(outdir, tensors, n_shards)
    print(f"export_hf: wrote {outdir} ({len(tensors)} tensors in {len(paths)} file(s))")
    verify(model, paths)
    if golden is not None:
        check_goldens(outdir, paths, golden, n_check)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("gguf", type=Path, help="input GGUF model (llama architecture)")
    parser.add_argument("outdir", type=Path, help="output directory (keep it out of the repo)")
    parser.add_argument("--sharded", type=int, default=1, metavar="N",
                        help="split the weights into N safetensors files with an index")
    parser.add_argument("--check-goldens", type=Path, metavar="JSON",
                        help="also run a numpy forward pass over the export and compare the "
                             "first-position top logits with this llama.cpp golden file "
                             "(made from the F32 version of the same model)")
    parser.add_argument("--check-prompts", type=int, default=4,
                        help="number of (shortest) golden prompts to check")
    args = parser.parse_args()
    if args.sharded < 1:
        fail(f"--sharded must be at least 1, got {args.sharded}")
    if args.outdir.exists() and not args.outdir.is_dir():
        fail(f"{args.outdir}: exists and is not a directory")
    try:
        export(args.gguf, args.outdir, args.sharded, args.check_goldens, args.check_prompts)
    except ExportError as exc:
        fail(str(exc))


if __name__ == "__main__":
    main()
