#pragma once
/// Stop-string matching over streamed detokenized text.
#include <string>
#include <string_view>
#include <vector>

namespace troupe {

/// Finds the first stop string in text that arrives in chunks, and says what may be sent
/// to the client now: text that cannot be the start of a stop string is released at once;
/// a tail that might still grow into one (or an incomplete UTF-8 character) is held back.
/// When a stop string appears, output ends right before it and the stop string itself is
/// never emitted. Matching is byte-wise, so it works across chunk boundaries and for UTF-8.
class stop_matcher {
 public:
  /// Matches `stops` (each non-empty; an empty one throws std::invalid_argument naming it).
  explicit stop_matcher(std::vector<std::string> stops);

  /// Appends `new_text` and returns the text that is safe to emit now ("" once stopped).
  std::string push(std::string_view new_text);
  /// True once a stop string was found.
  bool stopped() const { return matched_ >= 0; }
  /// Index in the constructor's list of the stop string that matched, or -1.
  int matched_index() const { return matched_; }
  /// Returns (and clears) the held-back text at the end of a stream; "" once stopped.
  std::string flush();

 private:
  /// Length of the longest tail of buffer_ that is a proper prefix of some stop string.
  size_t partial_stop_tail() const;

  std::vector<std::string> stops_;
  std::string buffer_;  // text received but not yet emitted
  int matched_ = -1;
};

}  // namespace troupe
