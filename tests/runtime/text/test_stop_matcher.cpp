#include <catch2/catch.hpp>

#include <stdexcept>

#include "runtime/text/stop_matcher.h"

using troupe::stop_matcher;

namespace {

/// Pushes every chunk and returns all emitted text (plus flush() when no stop matched).
std::string stream(stop_matcher& m, const std::vector<std::string>& chunks) {
  std::string out;
  for (const std::string& c : chunks) out += m.push(c);
  return out + m.flush();
}

}  // namespace

TEST_CASE("text without a stop string passes through unchanged", "[sampler]") {
  stop_matcher m({"###", "END"});
  CHECK(m.push("Hello, ") == "Hello, ");
  CHECK(m.push("world") == "world");
  CHECK(m.push(" #") == " ");  // '#' could start "###"
  CHECK(m.push("# no") == "## no");
  CHECK(m.push(" E") == " ");
  CHECK_FALSE(m.stopped());
  CHECK(m.flush() == "E");
  CHECK(m.matched_index() == -1);
}

TEST_CASE("a stop string split across chunks ends the output right before it", "[sampler]") {
  stop_matcher m({"</answer>"});
  CHECK(m.push("The result is 42</an") == "The result is 42");
  CHECK_FALSE(m.stopped());
  CHECK(m.push("sw") == "");
  CHECK(m.push("er> and more") == "");
  CHECK(m.stopped());
  CHECK(m.matched_index() == 0);
  CHECK(m.push("ignored") == "");
  CHECK(m.flush() == "");
}

TEST_CASE("a stop string at the very start emits nothing", "[sampler]") {
  stop_matcher m({"STOP"});
  CHECK(m.push("STOP right here") == "");
  CHECK(m.stopped());
  CHECK(m.flush() == "");
}

TEST_CASE("one byte at a time finds the stop string", "[sampler]") {
  const std::string text = "abcaabxaab-tail";
  stop_matcher m({"aab-"});
  std::string out;
  for (char c : text) out += m.push(std::string(1, c));
  CHECK(m.stopped());
  CHECK(out == "abcaabx");
}

TEST_CASE("with overlapping stop strings the earliest occurrence wins", "[sampler]") {
  stop_matcher first({"bcd", "abc"});
  CHECK(stream(first, {"xab", "cde"}) == "x");
  CHECK(first.matched_index() == 1);

  stop_matcher nested({"ab", "b"});
  CHECK(stream(nested, {"xxa", "b"}) == "xx");
  CHECK(nested.matched_index() == 0);

  stop_matcher self_overlap({"aab"});
  CHECK(stream(self_overlap, {"a", "a", "a", "b", "c"}) == "a");
}

TEST_CASE("a held-back prefix is released once it cannot become a stop string", "[sampler]") {
  stop_matcher m({"\n\nUser:"});
  CHECK(m.push("line\n") == "line");
  CHECK(m.push("\nUs") == "");
  CHECK(m.push("age") == "\n\nUsage");
  CHECK_FALSE(m.stopped());
}

TEST_CASE("stop strings match UTF-8 text split inside a character", "[sampler]") {
  const std::string text = "caf\xC3\xA9 \xE2\x9C\x85 done \xF0\x9F\x98\x80 after";  // café ✅ done 😀 after
  stop_matcher m({"\xF0\x9F\x98\x80"});
  std::string out;
  for (size_t i = 0; i < text.size(); i += 2) {
    const std::string piece = m.push(text.substr(i, 2));
    // Emitted text never ends in the middle of a character.
    if (!piece.empty()) CHECK((static_cast<unsigned char>(piece.back()) & 0xC0) != 0xC0);
    out += piece;
  }
  CHECK(m.stopped());
  CHECK(out == "caf\xC3\xA9 \xE2\x9C\x85 done ");
}

TEST_CASE("an incomplete UTF-8 character is held until it completes", "[sampler]") {
  stop_matcher m({});
  CHECK(m.push("a\xE2") == "a");
  CHECK(m.push("\x9C") == "");
  CHECK(m.push("\x85!") == "\xE2\x9C\x85!");
  CHECK(m.push("\xF0\x9F") == "");
  CHECK(m.flush() == "\xF0\x9F");
}

TEST_CASE("an empty stop string is rejected with its index", "[sampler]") {
  CHECK_THROWS_MATCHES(stop_matcher({"ok", ""}), std::invalid_argument,
                       Catch::Message("stop[1] must be a non-empty string"));
}
