#include "runtime/text/utf8.h"

#include <array>

namespace troupe::utf8 {
namespace {

/// Checks the sequence starting at s[i]. Returns its length when complete and
/// valid; 0 when it is a valid but truncated prefix (input ends); otherwise -n
/// where n >= 1 is the length of the maximal invalid subpart.
int check_sequence(std::string_view s, size_t i) {
  const auto b0 = static_cast<uint8_t>(s[i]);
  if (b0 < 0x80) return 1;
  int need = 0;
  uint8_t lo = 0x80, hi = 0xBF;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 1;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 2;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 3;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    return -1;
  }
  for (int k = 1; k <= need; ++k) {
    if (i + k >= s.size()) return 0;
    const auto b = static_cast<uint8_t>(s[i + k]);
    const uint8_t l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
    if (b < l || b > h) return -k;
  }
  return need + 1;
}

struct byte_tables {
  std::array<std::string, 256> to_unicode;
  std::array<int, 324> to_byte{};  // code points used by the map are all < 324
  byte_tables() {
    to_byte.fill(-1);
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      const uint32_t cp = printable ? static_cast<uint32_t>(b) : static_cast<uint32_t>(256 + n++);
      append(to_unicode[b], cp);
      to_byte[cp] = b;
    }
  }
};

const byte_tables& tables() {
  static const byte_tables t;
  return t;
}

}  // namespace

void append(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

size_t char_len(std::string_view s, size_t i) {
  const int r = check_sequence(s, i);
  return r > 0 ? static_cast<size_t>(r) : 1;
}

size_t sanitize(std::string_view s, bool final, std::string& out) {
  size_t i = 0;
  while (i < s.size()) {
    const int r = check_sequence(s, i);
    if (r > 0) {
      out.append(s.data() + i, static_cast<size_t>(r));
      i += static_cast<size_t>(r);
    } else if (r == 0) {
      if (!final) return i;
      out += "\xEF\xBF\xBD";
      return s.size();
    } else {
      out += "\xEF\xBF\xBD";
      i += static_cast<size_t>(-r);
    }
  }
  return i;
}

bool is_valid(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const int r = check_sequence(s, i);
    if (r <= 0) return false;
    i += static_cast<size_t>(r);
  }
  return true;
}

const std::string& byte_to_unicode(uint8_t b) { return tables().to_unicode[b]; }

int unicode_to_byte(uint32_t cp) {
  return cp < tables().to_byte.size() ? tables().to_byte[cp] : -1;
}

uint32_t next_code_point(std::string_view s, size_t& i) {
  const int r = check_sequence(s, i);
  if (r <= 0) {
    i += r == 0 ? s.size() - i : static_cast<size_t>(-r);
    return 0xFFFD;
  }
  const auto b0 = static_cast<uint8_t>(s[i]);
  uint32_t cp = r == 1 ? b0 : r == 2 ? (b0 & 0x1F) : r == 3 ? (b0 & 0x0F) : (b0 & 0x07);
  for (int k = 1; k < r; ++k) cp = (cp << 6) | (static_cast<uint8_t>(s[i + k]) & 0x3F);
  i += static_cast<size_t>(r);
  return cp;
}

}  // namespace troupe::utf8
