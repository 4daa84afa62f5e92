#pragma once
/// The vocabulary and rules a tokenizer is built from, as read from GGUF
/// metadata or from tokenizer.json + tokenizer_config.json.
#include <cstdint>
#include <string>
#include <vector>

namespace troupe {

/// Tokenizer families.
enum class tokenizer_kind : uint8_t {
  bpe,  ///< byte-level BPE, GPT-2 style (Llama 3, Qwen2, SmolLM2); GGUF "gpt2"
  spm,  ///< SentencePiece-style BPE with byte fallback (Llama 2, Mistral); GGUF "llama"
};

/// llama.cpp's token types (GGUF tokenizer.ggml.token_type).
enum class token_type : int32_t {
  undefined = 0, normal = 1, unknown = 2, control = 3, user_defined = 4, unused = 5, byte = 6,
};

struct tokenizer_data {
  tokenizer_kind kind = tokenizer_kind::bpe;
  /// Pre-tokenizer name, as GGUF's tokenizer.ggml.pre: "llama-bpe" (Llama 3),
  /// "qwen2", "smollm", "gpt2", "deepseek-r1-qwen", "default", ...
  std::string pre = "default";
  std::vector<std::string> tokens;      ///< id -> token text (byte-level BPE: GPT-2 byte-to-unicode form)
  std::vector<float> scores;            ///< id -> score (spm); may be empty for bpe
  std::vector<token_type> types;        ///< id -> type; same size as tokens
  std::vector<std::string> merges;      ///< bpe merges "left right", rank = index
  int32_t bos_id = -1;
  int32_t eos_id = -1;
  int32_t unk_id = -1;
  int32_t pad_id = -1;
  std::vector<int32_t> eog_ids;         ///< every end-of-generation token (eos, <|eot_id|>, <|im_end|>, ...)
  bool add_bos = false;                 ///< prepend BOS when encoding a prompt
  bool add_eos = false;
  bool add_space_prefix = false;        ///< spm: prepend "▁" to the text
  std::string chat_template;            ///< Jinja text from the model, may be empty
};

}  // namespace troupe
