#pragma once
/// Splits text into words before byte-level BPE, with the regex lists llama.cpp
/// uses for each GGUF tokenizer.ggml.pre value (matched with PCRE2 in UTF mode).
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace troupe {

/// One pre-tokenizer: an ordered list of regexes. Each regex splits every piece
/// left by the previous one into its matches and the text between them.
/// Immutable after construction; split() may be called from several threads.
class pretokenizer {
 public:
  /// Builds the pre-tokenizer for a GGUF `pre` name; throws std::runtime_error
  /// naming the value when it is not supported.
  explicit pretokenizer(const std::string& pre);
  ~pretokenizer();
  pretokenizer(const pretokenizer&) = delete;
  pretokenizer& operator=(const pretokenizer&) = delete;

  /// Splits `text` into pieces whose concatenation is `text` (invalid UTF-8
  /// bytes never match and end up in the pieces between matches).
  std::vector<std::string_view> split(std::string_view text) const;

  /// True for pre-tokenizers whose words are looked up whole before merging (Llama 3).
  bool ignore_merges() const { return ignore_merges_; }

  /// The regex list for a `pre` name (empty when unsupported).
  static std::vector<std::string> regexes_for(const std::string& pre);

 private:
  struct compiled;
  std::vector<std::unique_ptr<compiled>> regexes_;  ///< applied in order
  bool ignore_merges_ = false;
};

}  // namespace troupe
