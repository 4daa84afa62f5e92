#!/usr/bin/env python3
"""Make golden reference outputs for troupe with llama.cpp (llama-cpp-python).

For each prompt (chat prompts are rendered with the model's own Jinja chat
template), the prompt is tokenized by llama.cpp, then decoded greedily (argmax
of the raw logits, not stopping at EOS) for --n-generate tokens with an F32 KV
cache, flash attention off, n_ctx 2048, n_batch 512.

Usage:
  tools/make_goldens.py [--model GGUF] [--out JSON] [--n-generate 32]
  tools/make_goldens.py --model F32.gguf --out tests/goldens/smollm2_f32.json
  tools/make_goldens.py --model Q4_1.gguf --out tests/goldens/smollm2_q4_1.json \\
      --compare tests/goldens/smollm2_f32.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_MODEL = Path.home() / ".cache/troupe/models/SmolLM2-135M-Instruct.Q4_1.gguf"
N_CTX = 2048
N_BATCH = 512
GGML_TYPE_F32 = 0
SEED = 1234
TOP_K = 5
TOP_POSITIONS = 4

LONG_TEXT = (
    "The history of computing is a story of abstraction layered on abstraction. "
    "Early machines were programmed by rewiring panels of cables, and a single "
    "calculation could take days of preparation. Stored-program computers changed "
    "that: instructions became data, and data could be loaded from punched cards "
    "or magnetic tape. Assembly languages gave names to machine instructions, and "
    "compilers for languages such as FORTRAN and COBOL let scientists and business "
    "analysts describe what they wanted instead of how the hardware should do it.\n\n"
    "In the 1970s, operating systems like Unix introduced the idea that small tools, "
    "each doing one thing well, could be combined with pipes into larger programs. "
    "The C language made it practical to write such systems portably, and the "
    "personal computer revolution of the 1980s put this power on millions of desks. "
    "Graphical user interfaces, the mouse, and later the web browser turned the "
    "computer from a specialist's instrument into an everyday appliance.\n\n"
    "The 1990s and 2000s brought the internet to everyone. Search engines indexed "
    "billions of pages, open source software such as Linux and Apache powered most "
    "servers, and mobile phones became pocket computers with cameras, sensors and "
    "constant connectivity. Data centers grew to hold hundreds of thousands of "
    "machines, and distributed systems research moved from academic papers into "
    "products used by billions of people every day.\n\n"
    "Machine learning followed a similar path. Neural networks were proposed decades "
    "ago, but only with large data sets and graphics processors did deep learning "
    "become practical. Convolutional networks learned to recognize images, recurrent "
    "networks learned to translate sentences, and in 2017 the transformer "
    "architecture showed that attention alone could model long sequences efficiently. "
    "Language models trained on vast amounts of text began to write code, answer "
    "questions, summarize documents and hold conversations.\n\n"
    "Running these models efficiently is itself an engineering challenge. Inference "
    "engines quantize weights to fewer bits, fuse operations to reduce memory "
    "traffic, cache the keys and values of previous tokens, and batch requests from "
    "many users together. On a laptop, a small model with a hundred million "
    "parameters can generate text faster than a person can read it; in a data "
    "center, larger models are split across many accelerators that exchange "
    "activations over fast interconnects. Each generation of hardware and software "
    "raises the level of abstraction once more, so that the next generation of "
    "programmers can describe what they want and let the machine work out how.\n\n"
    "None of this happened in isolation. Standards bodies agreed on character "
    "encodings such as ASCII and Unicode, network protocols such as TCP/IP and HTTP, "
    "and file formats that let programs written by strangers exchange data. Every "
    "layer depends on the ones below it, and a bug in a single widely used library "
    "can ripple outward to millions of devices within hours.\n\n"
    "Summarize the passage above in three sentences."
)

SYSTEM_PIRATE = "You are a pirate. Answer every question like a pirate would."


def chat(name: str, *messages: tuple[str, str]) -> dict[str, Any]:
    """A chat prompt given as (role, content) pairs."""
    return {"name": name, "chat": True,
            "messages": [{"role": role, "content": content} for role, content in messages]}


def plain(name: str, text: str) -> dict[str, Any]:
    """A plain-text (completion) prompt."""
    return {"name": name, "chat": False, "text": text}


PROMPTS: list[dict[str, Any]] = [
    chat("chat_capital_france", ("user", "What is the capital of France?")),
    chat("chat_hello", ("user", "Hello! How are you today?")),
    chat("chat_system_pirate", ("system", SYSTEM_PIRATE), ("user", "Where is the treasure?")),
    chat("chat_multi_turn",
         ("user", "My name is Ada. Remember it."),
         ("assistant", "Nice to meet you, Ada! I will remember your name."),
         ("user", "What is my name?")),
    chat("chat_chinese", ("user", "请用中文介绍一下北京。")),
    chat("chat_code_python", ("user", "Write a Python function that reverses a string.")),
    chat("chat_math", ("user", "What is 17 * 23? Show your work.")),
    chat("chat_emoji", ("user", "Describe a sunny day at the beach using emoji 🌞🏖️🌊")),
    chat("chat_list", ("user", "List three primary colors.")),
    chat("chat_long_summary", ("user", LONG_TEXT)),
    chat("chat_whitespace", ("user", "  Spaces   everywhere\t\tand tabs\n\n\nand newlines?  ")),
    chat("chat_translate", ("user", "Translate 'good morning' into French, Spanish and German.")),
    plain("plain_fox", "The quick brown fox"),
    plain("plain_once_upon", "Once upon a time, in a small village by the sea,"),
    plain("plain_single_word", "Hello"),
    plain("plain_chinese", "人工智能是计算机科学的一个分支，它"),
    plain("plain_code_cpp",
          "#include <iostream>\n\nint main() {\n    std::cout << \"Hello, world!\" << std::endl;\n"),
    plain("plain_code_python", "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n"),
    plain("plain_numbers", "1, 2, 3, 5, 8, 13, 21, 34,"),
    plain("plain_digits_long", "The value of pi is 3.14159265358979 and e is 2.71828182845904, so"),
    plain("plain_emoji", "I love pizza 🍕 and ice cream 🍦 because"),
    plain("plain_mixed_whitespace", "  leading spaces\ttab\r\nwindows line\n\n\ttrailing   "),
    plain("plain_json", "{\"name\": \"troupe\", \"version\": 1, \"tags\": ["),
    plain("plain_accents", "Café, naïve, résumé, Zürich, São Paulo, and Kraków are"),
    plain("plain_special_tokens", "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n"),
    plain("plain_long", LONG_TEXT),
]


def fail(message: str) -> None:
    """Print an error and exit with status 1."""
    print(f"make_goldens: error: {message}", file=sys.stderr)
    sys.exit(1)


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_model_metadata(path: Path) -> tuple[str, bool, dict[str, str]]:
    """Chat template, add_bos rule and special token strings from the GGUF."""
    import gguf
    try:
        reader = gguf.GGUFReader(path)
    except Exception as exc:
        fail(f"{path}: not a readable GGUF file: {exc}")
    template = reader.get_field("tokenizer.chat_template")
    if template is None:
        fail(f"{path}: missing key tokenizer.chat_template")
    add_bos_field = reader.get_field("tokenizer.ggml.add_bos_token")
    add_bos = bool(add_bos_field.contents()) if add_bos_field is not None else False
    tokens = reader.get_field("tokenizer.ggml.tokens").contents()
    specials = {}
    for key in ("bos", "eos"):
        field = reader.get_field(f"tokenizer.ggml.{key}_token_id")
        if field is not None:
            specials[f"{key}_token"] = tokens[int(field.contents())]
    return template.contents(), add_bos, specials


def render_chat(template: str, messages: list[dict[str, str]], specials: dict[str, str]) -> str:
    """Render messages with the chat template the way transformers does."""
    import jinja2
    import jinja2.sandbox

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template).render(messages=messages, add_generation_prompt=True,
                                            **specials)


def to_f32_number(value: float) -> float:
    """The shortest decimal that round-trips to the same float32."""
    return float(str(np.float32(value)))


def load_llama(path: Path, n_threads: int):
    """A llama.cpp context with the golden settings (F32 KV, no flash attention)."""
    from llama_cpp import Llama
    return Llama(model_path=str(path), n_ctx=N_CTX, n_batch=N_BATCH, n_ubatch=N_BATCH,
                 n_threads=n_threads, n_threads_batch=n_threads, seed=SEED,
                 type_k=GGML_TYPE_F32, type_v=GGML_TYPE_F32, flash_attn=False,
                 logits_all=False, n_gpu_layers=0, verbose=False)


def last_logits(llm) -> np.ndarray:
    """Copy of the logits of the last evaluated token."""
    import llama_cpp
    ptr = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
    return np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),)).copy()


def run_prompt(llm, prompt_tokens: list[int], n_generate: int) -> tuple[list[int], list, list]:
    """Greedy tokens, top-K logits of the first TOP_POSITIONS positions, top-1 margins."""
    import llama_cpp
    llm.reset()
    # Also reset the cache's cell layout, so each prompt runs as in a fresh context.
    llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(llm._ctx.ctx), True)
    llm.eval(prompt_tokens)
    greedy: list[int] = []
    top_logits: list[list[list[float]]] = []
    margins: list[float] = []
    for position in range(n_generate):
        logits = last_logits(llm)
        if not np.all(np.isfinite(logits)):
            fail(f"non-finite logits at generated position {position}")
        if position < TOP_POSITIONS:
            # Stable sort: equal logits keep the lower token id first, like argmax.
            order = np.argsort(-logits, kind="stable")[:TOP_K]
            top_logits.append([[int(i), to_f32_number(logits[i])] for i in order])
        token = int(np.argmax(logits))
        runner_up = np.partition(logits, -2)[-2]
        margins.append(round(float(logits[token] - runner_up), 4))
        greedy.append(token)
        if position + 1 < n_generate:
            llm.eval([token])
    return greedy, top_logits, margins


def make_record(llm, prompt: dict[str, Any], template: str, add_bos: bool,
                specials: dict[str, str], n_generate: int) -> dict[str, Any]:
    """Run one prompt and return its golden record."""
    record = dict(prompt)
    if prompt["chat"]:
        record["text"] = render_chat(template, prompt["messages"], specials)
    tokens = llm.tokenize(record["text"].encode("utf-8"), add_bos=add_bos, special=True)
    if len(tokens) + n_generate > N_CTX:
        fail(f"prompt {prompt['name']}: {len(tokens)} tokens + {n_generate} exceed n_ctx {N_CTX}")
    greedy, top, margins = run_prompt(llm, tokens, n_generate)
    record["prompt_tokens"] = tokens
    record["greedy_tokens"] = greedy
    record["greedy_margins"] = margins
    record["top_logits"] = top
    record["greedy_text"] = llm.detokenize(greedy, special=True).decode("utf-8", errors="replace")
    return record


def is_inline(value: Any) -> bool:
    """Lists of scalars (or of short scalar lists) are written on one line."""
    if not isinstance(value, list):
        return False
    return all(not isinstance(v, (list, dict)) or
               (isinstance(v, list) and all(not isinstance(w, (list, dict)) for w in v))
               for v in value)


def dump_json(value: Any, indent: int = 0) -> str:
    """Readable but compact JSON: one key per line, id arrays on one line."""
    pad, inner = " " * indent, " " * (indent + 2)
    if isinstance(value, dict):
        items = [f"{inner}{json.dumps(k)}: {dump_json(v, indent + 2)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(value, list) and not is_inline(value):
        items = [inner + dump_json(v, indent + 2) for v in value]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def compare(ours: list[dict[str, Any]], other_path: Path) -> None:
    """Print how many greedy tokens agree with another golden file."""
    if not other_path.is_file():
        fail(f"{other_path}: no such file (--compare)")
    try:
        other = {p["name"]: p for p in json.loads(other_path.read_text())["prompts"]}
    except (ValueError, KeyError) as exc:
        fail(f"{other_path}: not a golden file: {exc}")
    total = same = prefix_total = full_match = 0
    for record in ours:
        ref = other.get(record["name"])
        if ref is None:
            print(f"  {record['name']}: missing in {other_path.name}")
            continue
        a, b = record["greedy_tokens"], ref["greedy_tokens"]
        agree = sum(int(x == y) for x, y in zip(a, b))
        prefix = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), len(a))
        total, same, prefix_total = total + len(a), same + agree, prefix_total + prefix
        full_match += int(prefix == len(a))
        print(f"  {record['name']:<24} same position {agree:>2}/{len(a)}  common prefix {prefix:>2}")
    print(f"agreement vs {other_path.name}: {same}/{total} tokens at the same position, "
          f"{prefix_total}/{total} in common prefixes, {full_match}/{len(ours)} prompts identical")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="GGUF model file")
    parser.add_argument("--out", type=Path, required=True, help="output golden JSON")
    parser.add_argument("--n-generate", type=int, default=32, help="greedy tokens per prompt")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--compare", type=Path, help="golden JSON to compare greedy tokens with")
    args = parser.parse_args()
    if not args.model.is_file():
        fail(f"{args.model}: no such model file")
    if args.n_generate < TOP_POSITIONS:
        fail(f"--n-generate must be at least {TOP_POSITIONS}")
    try:
        import llama_cpp
    except ImportError:
        fail("llama_cpp not importable: run tools/venv.sh --reference and use its python")

    template, add_bos, specials = read_model_metadata(args.model)
    try:
        llm = load_llama(args.model, args.threads)
    except ValueError as exc:
        fail(f"{args.model}: llama.cpp could not load the model: {exc}")
    records = []
    for prompt in PROMPTS:
        records.append(make_record(llm, prompt, template, add_bos, specials, args.n_generate))
        print(f"  {prompt['name']:<24} {len(records[-1]['prompt_tokens']):>4} prompt tokens: "
              f"{records[-1]['greedy_text'][:60]!r}")
    golden = {
        "generator": f"llama-cpp-python {llama_cpp.__version__}",
        "model": args.model.name,
        "model_sha256": sha256_of(args.model),
        "kv_type": "f32",
        "n_generate": args.n_generate,
        "n_ctx": N_CTX,
        "n_batch": N_BATCH,
        "add_bos": add_bos,
        "prompts": records,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(dump_json(golden) + "\n", encoding="utf-8")
    print(f"make_goldens: wrote {args.out} ({len(records)} prompts)")
    if args.compare:
        compare(records, args.compare)


if __name__ == "__main__":
    main()
