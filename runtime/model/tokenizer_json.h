#pragma once
/// Reads a Hugging Face tokenizer (tokenizer.json + tokenizer_config.json) into
/// the same tokenizer_data a GGUF file gives.
#include <string>

#include "runtime/text/tokenizer_data.h"

namespace troupe {

/// Loads `dir`/tokenizer.json (required) and `dir`/tokenizer_config.json (optional:
/// chat_template, bos_token, eos_token, pad_token, add_bos_token, add_eos_token;
/// `dir`/chat_template.jinja is read when the config has no template).
/// Byte-level BPE maps its pre_tokenizer to a GGUF `pre` name ("llama-bpe", "qwen2",
/// "smollm", "gpt2"); BPE with byte_fallback and "▁" spaces (Llama 2) becomes kind spm.
/// Throws troupe::load_error naming the file and key when missing, malformed or unsupported.
tokenizer_data load_hf_tokenizer(const std::string& dir);

}  // namespace troupe
