#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <thread>

#include "runtime/text/chat_template.h"
#include "runtime/model/model_loader.h"
#include "runtime/text/tokenizer.h"
#include "runtime/text/utf8.h"
#include "test_support.h"

using troupe::token_type;
using troupe::tokenizer;
using troupe::tokenizer_data;
using ids = std::vector<int32_t>;

namespace {

/// A byte-level BPE vocabulary: the 256 byte characters, a few merges and specials.
tokenizer_data tiny_bpe() {
  tokenizer_data d;
  d.pre = "gpt2";
  for (int b = 0; b < 256; ++b) d.tokens.push_back(troupe::utf8::byte_to_unicode(static_cast<uint8_t>(b)));
  d.merges = {"h e", "l l", "he ll", "hell o", "\xC4\xA0 w", "o r", "\xC4\xA0w or"};
  for (const char* t : {"he", "ll", "hell", "hello", "\xC4\xA0w", "or", "\xC4\xA0wor"}) d.tokens.push_back(t);
  d.types.assign(d.tokens.size(), token_type::normal);
  d.tokens.push_back("<|im_start|>");  // 263
  d.types.push_back(token_type::control);
  d.tokens.push_back("<|im_end|>");  // 264
  d.types.push_back(token_type::control);
  d.tokens.push_back("<tool>");  // 265
  d.types.push_back(token_type::user_defined);
  d.tokens.push_back("<|im_start|>x");  // 266: longer special that shares a prefix
  d.types.push_back(token_type::control);
  d.bos_id = 263;
  d.eos_id = 264;
  d.eog_ids = {264};
  return d;
}

/// A SentencePiece vocabulary with known merge scores and byte fallback.
tokenizer_data tiny_spm(bool with_bytes = true) {
  tokenizer_data d;
  d.kind = troupe::tokenizer_kind::spm;
  d.add_space_prefix = true;
  d.add_bos = true;
  auto add = [&](const std::string& t, float s, token_type ty) {
    d.tokens.push_back(t);
    d.scores.push_back(s);
    d.types.push_back(ty);
  };
  add("<unk>", 0, token_type::unknown);
  add("<s>", 0, token_type::control);
  add("</s>", 0, token_type::control);
  if (with_bytes)
    for (int b = 0; b < 256; ++b) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "<0x%02X>", b);
      add(buf, 0, token_type::byte);
    }
  for (const char* c : {"\xE2\x96\x81", "h", "e", "l", "o", "w", "r", "d"}) add(c, -100, token_type::normal);
  add("he", -1, token_type::normal);
  add("ll", -2, token_type::normal);
  add("hell", -3, token_type::normal);
  add("hello", -4, token_type::normal);
  add("\xE2\x96\x81hello", -5, token_type::normal);
  add("\xE2\x96\x81w", -6, token_type::normal);
  add("or", -7, token_type::normal);
  d.unk_id = 0;
  d.bos_id = 1;
  d.eos_id = 2;
  return d;
}

std::vector<std::string> pieces(const tokenizer& t, const ids& v) {
  std::vector<std::string> out;
  for (int32_t id : v) out.push_back(t.data().tokens[id]);
  return out;
}

const tokenizer& smollm() {
  static const tokenizer t(troupe::load_model_metadata(troupe::test::default_model()).tokenizer);
  return t;
}

}  // namespace

TEST_CASE("byte-level BPE merges by rank into the expected tokens", "[tokenizer]") {
  tokenizer t(tiny_bpe());
  const auto v = t.encode("hello world", false, false);
  CHECK(pieces(t, v) == std::vector<std::string>{"hello", "\xC4\xA0wor", "l", "d"});
  CHECK(t.decode(v) == "hello world");
  CHECK(t.vocab_size() == 267);
}

TEST_CASE("control tokens are split out only with parse_special, longest first", "[tokenizer]") {
  tokenizer t(tiny_bpe());
  const auto parsed = t.encode("<|im_start|>xhe<|im_end|>", false, true);
  CHECK(parsed == ids{266, 256, 264});
  const auto plain = t.encode("<|im_end|>", false, false);
  CHECK(plain.size() > 1);
  CHECK(std::find(plain.begin(), plain.end(), 264) == plain.end());
  CHECK(t.decode(plain) == "<|im_end|>");
}

TEST_CASE("user-defined tokens are always split out, as llama.cpp does", "[tokenizer]") {
  tokenizer t(tiny_bpe());
  CHECK(t.encode("he<tool>he", false, false) == ids{256, 265, 256});
  CHECK(t.decode({256, 265}) == "he<tool>");
}

TEST_CASE("control tokens are hidden by decode unless asked for", "[tokenizer]") {
  tokenizer t(tiny_bpe());
  CHECK(t.is_special(263));
  CHECK_FALSE(t.is_special(265));
  CHECK(t.is_eog(264));
  CHECK_FALSE(t.is_eog(263));
  CHECK(t.decode({263, 256, 264}) == "he");
  CHECK(t.decode({263, 256, 264}, true) == "<|im_start|>he<|im_end|>");
  CHECK(t.token_bytes(264) == "<|im_end|>");
  CHECK(t.token_bytes(32) == " ");
}

TEST_CASE("BOS and EOS are added per the tokenizer data", "[tokenizer]") {
  auto d = tiny_bpe();
  d.add_bos = true;
  d.add_eos = true;
  tokenizer t(d);
  CHECK(t.encode("he", true, false) == ids{263, 256, 264});
  CHECK(t.encode("he", false, false) == ids{256});
}

TEST_CASE("invalid tokenizer data is rejected with the problem named", "[tokenizer]") {
  auto types = tiny_bpe();
  types.types.pop_back();
  CHECK_THROWS_WITH(tokenizer(types), Catch::Contains("types"));
  auto merge = tiny_bpe();
  merge.merges.push_back("nospace");
  CHECK_THROWS_WITH(tokenizer(merge), Catch::Contains("merge 7"));
  auto pre = tiny_bpe();
  pre.pre = "klingon";
  CHECK_THROWS_WITH(tokenizer(pre), Catch::Contains("klingon"));
  auto bos = tiny_bpe();
  bos.bos_id = 100000;
  CHECK_THROWS_WITH(tokenizer(bos), Catch::Contains("bos_id"));
  auto spm = tiny_spm();
  spm.scores.clear();
  CHECK_THROWS_WITH(tokenizer(spm), Catch::Contains("scores"));
  CHECK_THROWS_WITH(tokenizer(tokenizer_data{}), Catch::Contains("no tokens"));
}

TEST_CASE("SentencePiece BPE merges by score with a space prefix", "[tokenizer]") {
  tokenizer t(tiny_spm());
  const auto v = t.encode("hello world", true, false);
  CHECK(pieces(t, v) == std::vector<std::string>{"<s>", "\xE2\x96\x81hello", "\xE2\x96\x81w", "or", "l", "d"});
  CHECK(t.decode(v) == "hello world");
}

TEST_CASE("SentencePiece falls back to byte tokens, then to unk", "[tokenizer]") {
  tokenizer t(tiny_spm());
  const auto v = t.encode("h\xC3\xA9", false, false);
  CHECK(pieces(t, v) == std::vector<std::string>{"\xE2\x96\x81", "h", "<0xC3>", "<0xA9>"});
  CHECK(t.token_bytes(v[2]) == "\xC3");
  CHECK(t.decode(v) == "h\xC3\xA9");
  tokenizer nob(tiny_spm(false));
  CHECK(pieces(nob, nob.encode("hz", false, false)) == std::vector<std::string>{"\xE2\x96\x81", "h", "<unk>"});
}

TEST_CASE("SentencePiece puts the space prefix after each special token", "[tokenizer]") {
  tokenizer t(tiny_spm());
  const auto v = t.encode("he</s>he", false, true);
  CHECK(pieces(t, v) == std::vector<std::string>{"\xE2\x96\x81", "he", "</s>", "\xE2\x96\x81", "he"});
}

TEST_CASE("the incremental decoder never splits a UTF-8 character", "[tokenizer]") {
  tokenizer t(tiny_bpe());
  const std::string text = "a\xF0\x9F\x98\x80" "b\xE4\xBD\xA0";  // a😀b你
  ids v;
  for (char c : text) v.push_back(static_cast<uint8_t>(c));  // one byte token per byte
  troupe::incremental_decoder dec(t);
  std::string all;
  for (int32_t id : v) {
    const auto piece = dec.push(id);
    CHECK(troupe::utf8::is_valid(piece));
    all += piece;
  }
  all += dec.flush();
  CHECK(all == text);
  CHECK(all == t.decode(v));
}

TEST_CASE("invalid UTF-8 decodes to U+FFFD in one go and incrementally alike", "[tokenizer]") {
  tokenizer t(tiny_bpe());
  const ids v{0xE4, 0xBD, 'x', 0xFF, 0xF0, 0x9F};
  troupe::incremental_decoder dec(t);
  std::string all;
  for (int32_t id : v) all += dec.push(id);
  all += dec.flush();
  CHECK(all == t.decode(v));
  CHECK(all == "\xEF\xBF\xBDx\xEF\xBF\xBD\xEF\xBF\xBD");
}

TEST_CASE("the SmolLM2 tokenizer matches Hugging Face tokenizers on varied text", "[tokenizer][slow]") {
  const auto& t = smollm();
  CHECK(t.encode("Hello world, this is a test.", false, false) == ids{19556, 905, 28, 451, 314, 253, 1028, 30});
  CHECK(t.encode("\xE4\xBD\xA0\xE5\xA5\xBD\xEF\xBC\x8C\xE4\xB8\x96\xE7\x95\x8C", false, false) ==
        ids{18645, 250, 48392, 138, 12831, 7906, 240, 178, 239, 230});
  CHECK(t.encode("def add(a, b):\n    return a + b\n", false, false) ==
        ids{1604, 803, 24, 81, 28, 278, 727, 472, 1003, 253, 1232, 278, 198});
  CHECK(t.encode("I love \xF0\x9F\xA6\x80 and \xF0\x9F\x91\x8D\xF0\x9F\x8F\xBD!", false, false) ==
        ids{57, 2606, 15107, 116, 218, 284, 15107, 235, 231, 10813, 233, 138, 17});
  CHECK(t.encode("Pi is 3.14159265358979", false, false) ==
        ids{41967, 314, 216, 35, 30, 33, 36, 33, 37, 41, 34, 38, 37, 35, 37, 40, 41, 39, 41});
  CHECK(t.encode("a  b   c\n\n\nd", false, false) == ids{81, 216, 278, 256, 265, 1116, 198, 84});
  CHECK(t.encode("<|im_start|>user\nHi<|im_end|>\n", true, true) == ids{1, 4093, 198, 26843, 2, 198});
  CHECK(t.is_eog(2));
}

TEST_CASE("the SmolLM2 tokenizer round-trips text and keeps invalid UTF-8 bytes it has tokens for", "[tokenizer][slow]") {
  const auto& t = smollm();
  for (const std::string s : {"Hello\n\n  world  ", "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E \xF0\x9F\x98\x80",
                              "x = [1, 22, 333, 4444]\tend"})
    CHECK(t.decode(t.encode(s, false, false)) == s);
  const std::string bad = "ok \xFF\xFE\xC3 end";
  const auto v = t.encode(bad, false, false);
  std::string raw;
  for (int32_t id : v) raw += t.token_bytes(id);
  CHECK(raw == "ok \xEF\xBF\xBD\xEF\xBF\xBD\xC3 end");  // 0xFF and 0xFE have no token: U+FFFD
  for (int32_t id : v) CHECK_FALSE(t.is_special(id));
  CHECK(troupe::utf8::is_valid(t.decode(v)));
}

TEST_CASE("the incremental decoder streams SmolLM2 emoji and CJK tokens whole", "[tokenizer][slow]") {
  const auto& t = smollm();
  const std::string text = "\xF0\x9F\x91\x8D\xF0\x9F\x8F\xBD \xE4\xBD\xA0\xE5\xA5\xBD \xF0\x9F\xA6\x80\xF0\x9F\xA6\x80!";
  const auto v = t.encode(text, false, false);
  REQUIRE(v.size() > 6);
  troupe::incremental_decoder dec(t);
  std::string all;
  for (int32_t id : v) {
    const auto piece = dec.push(id);
    CHECK(troupe::utf8::is_valid(piece));
    all += piece;
  }
  all += dec.flush();
  CHECK(all == text);
}

TEST_CASE("encoding from several threads gives the same ids", "[tokenizer][slow]") {
  const auto& t = smollm();
  const std::string text = "The quick brown fox jumps over the lazy dog 1234567 times. \xE4\xBD\xA0\xE5\xA5\xBD";
  const auto want = t.encode(text, true, true);
  std::vector<int> ok(4, 0);
  std::vector<std::thread> th;
  for (int i = 0; i < 4; ++i)
    th.emplace_back([&, i] {
      for (int k = 0; k < 50; ++k) ok[i] += t.encode(text, true, true) == want;
    });
  for (auto& x : th) x.join();
  CHECK(ok == std::vector<int>(4, 50));
}

TEST_CASE("llama.cpp goldens: prompts tokenize and chat templates render identically", "[tokenizer][chat][slow]") {
  const auto path = troupe::test::goldens_dir() / "smollm2_f32.json";
  if (!std::filesystem::exists(path)) FAIL("goldens are missing: " << path.string() << " (produced with llama.cpp)");
  std::ifstream in(path);
  const auto g = nlohmann::json::parse(in);
  const auto& t = smollm();
  REQUIRE(g.at("prompts").size() > 0);
  for (const auto& p : g.at("prompts")) {
    INFO("prompt " << p.at("name").get<std::string>());
    const std::string text = p.at("text").get<std::string>();
    if (p.value("chat", false)) {
      std::vector<troupe::chat_message> msgs;
      for (const auto& m : p.at("messages")) msgs.push_back({m.at("role").get<std::string>(), m.at("content").get<std::string>()});
      CHECK(troupe::apply_chat_template(t.data(), msgs, true) == text);
    }
    CHECK(t.encode(text, true, true) == p.at("prompt_tokens").get<ids>());
    const auto greedy = p.at("greedy_tokens").get<ids>();
    troupe::incremental_decoder dec(t);
    std::string streamed;
    for (int32_t id : greedy) streamed += dec.push(id);
    streamed += dec.flush();
    CHECK(streamed == t.decode(greedy));
  }
}
