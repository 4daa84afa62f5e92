#pragma once
/// Seeded, deterministic mutation of valid inputs for the bad-input tests (the *_fuzz.cpp
/// files): byte flips, truncation, boundary values, deletions and duplications, and a
/// checker that every case either parses or throws the project's error type with a message.
#include <catch2/catch.hpp>

#include <cstdint>
#include <exception>
#include <functional>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <typeinfo>
#include <vector>

namespace troupe::test::fuzz {

/// A small counter-based generator (splitmix64): the same seed gives the same cases everywhere.
class rng {
 public:
  explicit rng(uint64_t seed) : state_(seed) {}
  /// The next 64 random bits.
  uint64_t next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  /// Uniform in [0, n) (0 when n is 0).
  size_t below(size_t n) { return n == 0 ? 0 : static_cast<size_t>(next() % n); }
  /// One element of `v` (which must not be empty).
  template <class T>
  const T& pick(const std::vector<T>& v) { return v[below(v.size())]; }

 private:
  uint64_t state_;
};

/// Texts at the edges of what parsers expect: numbers out of every integer range, odd
/// floats, empty and quoting characters, structures where scalars belong, control bytes.
inline const std::vector<std::string>& boundary_texts() {
  static const std::vector<std::string> v = {
      "-1", "0", "1", "2147483647", "2147483648", "-2147483649", "4294967296", "9223372036854775807",
      "9223372036854775808", "-9223372036854775809", "18446744073709551616", "1e309", "-1e309", "1e-400",
      "nan", "NaN", "inf", "-0", "0.5", "", "\"", "\\", "\\u0000", "\\ud800", "[]", "{}", "[", "{", "null",
      "true", "~", ":", "- ", "&a", "*a", "!!binary", "%", "\t", "\r\n", std::string(1, '\0'), "\xff\xfe",
      "\xc3", "\xe2\x82", std::string(300, 'x'), "{{", "}}", "{%", "%}", "<|im_start|>", "<|im_end|>"};
  return v;
}

/// Byte patterns at the edges of binary formats (little-endian counts, lengths and type ids).
inline const std::vector<std::string>& boundary_bytes() {
  static const std::vector<std::string> v = {
      std::string(1, '\0'), "\xff", "\x7f", "\x80", std::string("\xff\xff\xff\xff", 4), std::string("\x00\x00\x00\x80", 4),
      std::string("\xff\xff\xff\xff\xff\xff\xff\xff", 8), std::string("\xff\xff\xff\xff\xff\xff\xff\x7f", 8),
      std::string("\x00\x00\x00\x00\x00\x00\x00\x80", 8), std::string("\x00\x00\x00\x00\x01\x00\x00\x00", 8),
      std::string(8, '\0'), std::string("\x0d\x00\x00\x00", 4), std::string("\x09\x00\x00\x00", 4)};
  return v;
}

/// One random byte-level edit of `in`: flip a bit, set a byte, overwrite with boundary
/// bytes or a boundary text, truncate, insert, delete or duplicate a range.
inline std::string mutate_once(std::string s, rng& r, bool text) {
  const size_t n = s.size();
  const size_t at = r.below(n + 1);
  const auto& boundary = text ? boundary_texts() : boundary_bytes();
  switch (r.below(8)) {
    case 0:
      if (n) s[at % n] = static_cast<char>(s[at % n] ^ (1 << r.below(8)));
      break;
    case 1:
      if (n) s[at % n] = static_cast<char>(r.below(256));
      break;
    case 2: {
      const auto& b = r.pick(boundary);
      s.replace(at, std::min(b.size(), n - at), b);
      break;
    }
    case 3: s.resize(at); break;
    case 4: s.insert(at, r.pick(boundary)); break;
    case 5: s.erase(at, 1 + r.below(16)); break;
    case 6: {
      const size_t len = std::min<size_t>(1 + r.below(32), n - at);
      s.insert(at, s.substr(at, len));
      break;
    }
    default: {
      const size_t from = r.below(n + 1), len = std::min<size_t>(1 + r.below(16), n - from);
      s.insert(at, s.substr(from, len));
      break;
    }
  }
  return s;
}

/// One to three edits of `in` (`text`: boundary texts, else boundary bytes).
inline std::string mutate(const std::string& in, rng& r, bool text) {
  std::string s = in;
  const size_t edits = 1 + r.below(3);
  for (size_t i = 0; i < edits; ++i) s = mutate_once(std::move(s), r, text);
  return s;
}

/// JSON values at the edges: integers past every range, fractions, huge and odd strings,
/// every type where another belongs, empty and nested containers.
inline const std::vector<nlohmann::json>& boundary_json() {
  using nlohmann::json;
  static const std::vector<json> v = {
      json(-1), json(0), json(1), json(2), json(2147483647), json(2147483648ll), json(-2147483649ll),
      json(9223372036854775807ll), json(-9223372036854775807ll - 1), json(18446744073709551615ull), json(1e308),
      json(-1e308), json(0.5), json(-0.0), json(""), json(std::string(300, 'x')), json(std::string("\0a", 2)),
      json("\xff\xfe"), json("<|im_start|>"), json(nullptr), json(true), json(false), json::array(),
      json::object(), json::array({json::array()}), json::object({{"", nullptr}}), json::array({1, "a", nullptr})};
  return v;
}

/// A structure-aware edit of `j` in place: walks down to a random node, then replaces it
/// with a boundary value, drops it from its parent, or wraps it in an array.
inline void mutate_json(nlohmann::json& j, rng& r, int depth = 0) {
  if ((j.is_object() || j.is_array()) && !j.empty() && depth < 16 && r.below(4) != 0) {
    const size_t k = r.below(j.size());
    const bool drop = r.below(6) == 0;
    if (j.is_object()) {
      auto it = std::next(j.begin(), static_cast<long>(k));
      if (drop) return void(j.erase(it));
      return mutate_json(it.value(), r, depth + 1);
    }
    if (drop) return void(j.erase(k));
    return mutate_json(j[k], r, depth + 1);
  }
  if (r.below(8) == 0) {
    j = nlohmann::json::array({j});
  } else {
    j = r.pick(boundary_json());
  }
}

/// `j` as text; invalid UTF-8 in a string (a boundary value) is replaced, not thrown.
inline std::string dump(const nlohmann::json& j) {
  return j.dump(1, ' ', false, nlohmann::json::error_handler_t::replace);
}

/// What the cases of one run came to.
struct tally {
  int parsed = 0;    ///< accepted
  int rejected = 0;  ///< refused with the project's error and a message
};

/// Runs `parse` on case `label`: a return counts as parsed; an `Error` (exactly the type
/// `Error`, or derived from it) with a non-empty message passing `check` as rejected; any
/// other exception fails the test with its type and message.
template <class Error>
void expect_clear(tally& t, const std::string& label, const std::function<void()>& parse,
                  const std::function<bool(const Error&)>& check = nullptr) {
  try {
    parse();
    ++t.parsed;
  } catch (const Error& e) {
    INFO(label << "\n  error: " << e.what());
    CHECK(std::string(e.what()).size() > 0);
    if (check) CHECK(check(e));
    ++t.rejected;
  } catch (const std::exception& e) {
    FAIL_CHECK(label << "\n  escaped " << typeid(e).name() << ": " << e.what());
  }
}

}  // namespace troupe::test::fuzz
