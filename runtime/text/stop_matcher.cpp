#include "runtime/text/stop_matcher.h"

#include <algorithm>
#include <stdexcept>

namespace troupe {

namespace {

/// Bytes at the end of `s` that start a UTF-8 character whose remaining bytes have not
/// arrived yet (0 when the text ends on a character boundary or with invalid bytes).
size_t incomplete_utf8_tail(std::string_view s) {
  const size_t look = std::min<size_t>(3, s.size());
  for (size_t back = 1; back <= look; ++back) {
    const auto c = static_cast<unsigned char>(s[s.size() - back]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte: keep looking for the lead
    size_t need = 0;
    if ((c & 0xE0) == 0xC0) need = 2;
    else if ((c & 0xF0) == 0xE0) need = 3;
    else if ((c & 0xF8) == 0xF0) need = 4;
    return need > back ? back : 0;
  }
  return 0;
}

}  // namespace

stop_matcher::stop_matcher(std::vector<std::string> stops) : stops_(std::move(stops)) {
  for (size_t i = 0; i < stops_.size(); ++i)
    if (stops_[i].empty())
      throw std::invalid_argument("stop[" + std::to_string(i) + "] must be a non-empty string");
}

size_t stop_matcher::partial_stop_tail() const {
  size_t best = 0;
  for (const std::string& s : stops_) {
    for (size_t len = std::min(buffer_.size(), s.size() - 1); len > best; --len) {
      if (buffer_.compare(buffer_.size() - len, len, s, 0, len) == 0) {
        best = len;
        break;
      }
    }
  }
  return best;
}

std::string stop_matcher::push(std::string_view new_text) {
  if (stopped()) return {};
  buffer_.append(new_text.data(), new_text.size());
  size_t first = std::string::npos;
  for (size_t i = 0; i < stops_.size(); ++i) {
    const size_t at = buffer_.find(stops_[i]);
    if (at < first) {
      first = at;
      matched_ = static_cast<int>(i);
    }
  }
  if (first != std::string::npos) {
    std::string out = buffer_.substr(0, first);
    buffer_.clear();
    return out;
  }
  const size_t hold = std::max(partial_stop_tail(), incomplete_utf8_tail(buffer_));
  std::string out = buffer_.substr(0, buffer_.size() - hold);
  buffer_.erase(0, buffer_.size() - hold);
  return out;
}

std::string stop_matcher::flush() {
  std::string out;
  if (!stopped()) out.swap(buffer_);
  buffer_.clear();
  return out;
}

}  // namespace troupe
