#pragma once
/// UTF-8 helpers shared by the tokenizer: lenient decoding, validation and the
/// GPT-2 byte <-> unicode mapping used by byte-level BPE vocabularies.
#include <cstdint>
#include <string>
#include <string_view>

namespace troupe::utf8 {

/// Appends the UTF-8 encoding of code point `cp` to `out`.
void append(std::string& out, uint32_t cp);

/// Length in bytes of the UTF-8 character that starts at `s[i]` (1 for an invalid
/// or truncated sequence, so that every byte is visited exactly once).
size_t char_len(std::string_view s, size_t i);

/// Copies `s` to `out` replacing each invalid sequence (maximal subpart) with U+FFFD.
/// When `final` is false, an incomplete but so far valid trailing sequence is not
/// consumed. Returns the number of bytes of `s` consumed.
size_t sanitize(std::string_view s, bool final, std::string& out);

/// True when `s` is valid UTF-8.
bool is_valid(std::string_view s);

/// GPT-2 byte-to-unicode form of one byte, as UTF-8 ("Ġ" for ' ').
const std::string& byte_to_unicode(uint8_t b);

/// Inverse of byte_to_unicode for one code point; -1 when `cp` is not in the map.
int unicode_to_byte(uint32_t cp);

/// Decodes the code point at `s[i]` (U+FFFD for an invalid sequence) and advances `i`.
uint32_t next_code_point(std::string_view s, size_t& i);

}  // namespace troupe::utf8
