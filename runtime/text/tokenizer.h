#pragma once
/// Text <-> token ids for byte-level BPE (GPT-2 style: Llama 3, Qwen2, SmolLM2)
/// and SentencePiece-style BPE (Llama 2, Mistral), matching llama.cpp.
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "runtime/text/tokenizer_data.h"

namespace troupe {

class pretokenizer;

/// An immutable tokenizer; every method is const and safe to call from several threads.
class tokenizer {
 public:
  /// Validates `d` and builds the lookup tables; throws std::runtime_error naming the problem.
  explicit tokenizer(tokenizer_data d);
  ~tokenizer();
  tokenizer(tokenizer&&) noexcept;
  tokenizer& operator=(tokenizer&&) noexcept;

  /// Prompt text -> ids. add_special: apply the model's BOS/EOS rule. parse_special:
  /// recognise control token texts (e.g. "<|im_start|>") inside `text`. User-defined
  /// tokens are always split out first, as llama.cpp does. Invalid UTF-8 is encoded
  /// byte by byte; a byte the vocabulary has no token for becomes U+FFFD.
  std::vector<int32_t> encode(std::string_view text, bool add_special, bool parse_special) const;
  /// Raw bytes of one token (byte-level decoded; spm: "▁" -> " ", <0xAB> -> the byte;
  /// control and user-defined tokens: their text). Throws std::out_of_range for a bad id.
  std::string token_bytes(int32_t id) const;
  /// The text of `ids`: control tokens are left out unless `include_special`; invalid
  /// UTF-8 becomes U+FFFD; spm with add_space_prefix drops the first piece's leading space.
  std::string decode(const std::vector<int32_t>& ids, bool include_special = false) const;
  /// Number of tokens in the vocabulary.
  int vocab_size() const { return static_cast<int>(data_.tokens.size()); }
  /// Beginning-of-sequence id (-1 when none).
  int32_t bos_id() const { return data_.bos_id; }
  /// End-of-sequence id (-1 when none).
  int32_t eos_id() const { return data_.eos_id; }
  /// End of generation (eos and every id in eog_ids).
  bool is_eog(int32_t id) const;
  /// Control tokens (not shown in decoded text by default).
  bool is_special(int32_t id) const;
  /// The data this tokenizer was built from.
  const tokenizer_data& data() const { return data_; }
  /// Id of a token text, or -1.
  int32_t find_token(std::string_view text) const;

 private:
  struct fragment {
    std::string_view text;  ///< raw text, when id < 0
    int32_t id = -1;        ///< a special/added token
  };
  std::vector<fragment> partition(std::string_view text, bool parse_special) const;
  void encode_bpe(std::string_view text, std::vector<int32_t>& out) const;
  void bpe_word(const std::string& word, std::vector<int32_t>& out) const;
  void encode_spm(std::string_view text, std::vector<int32_t>& out) const;
  int32_t spm_byte_token(uint8_t b) const;
  int merge_rank(std::string_view left, std::string_view right) const;
  void validate() const;
  void check_id(int32_t id, const char* what) const;

  tokenizer_data data_;
  std::unordered_map<std::string, int32_t> token_to_id_;  ///< text -> id (last id wins)
  std::unordered_map<std::string, int> merge_ranks_;      ///< "left right" -> rank
  std::vector<int32_t> specials_;                          ///< control/user_defined/unknown, longest first
  std::vector<int32_t> spm_bytes_;                         ///< byte -> <0xXX> id (spm), -1 when absent
  std::unique_ptr<pretokenizer> pre_;                      ///< bpe only
  std::vector<bool> eog_;                                  ///< id -> end of generation
  std::vector<bool> byte_known_;                           ///< bpe: byte -> its byte-level character is a token
};

/// Streams text from generated ids; never emits half a UTF-8 character.
/// The concatenation of every push() and the final flush() equals tokenizer::decode(ids).
class incremental_decoder {
 public:
  /// Decodes with `t` (which must outlive this decoder).
  explicit incremental_decoder(const tokenizer& t, bool include_special = false);
  /// Adds one id; returns the text that is now complete (possibly empty).
  std::string push(int32_t id);
  /// Returns whatever is still held (an incomplete character becomes U+FFFD) and resets.
  std::string flush();

 private:
  const tokenizer* tok_;
  bool include_special_;
  bool first_ = true;     ///< no text piece seen yet (spm leading-space rule)
  std::string pending_;   ///< bytes not yet emitted
};

}  // namespace troupe
