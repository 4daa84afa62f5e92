#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include <fstream>

#include "runtime/model/model_loader.h"
#include "runtime/text/tokenizer.h"
#include "runtime/model/tokenizer_json.h"
#include "runtime/text/utf8.h"
#include "test_support.h"

using nlohmann::json;
using troupe::token_type;

namespace {

const char* const k_llama3_regex =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const char* const k_qwen2_regex =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

json split_then_bytelevel(const char* regex) {
  return {{"type", "Sequence"},
          {"pretokenizers",
           {{{"type", "Split"}, {"pattern", {{"Regex", regex}}}, {"behavior", "Isolated"}, {"invert", false}},
            {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}};
}

/// A byte-level tokenizer.json: 256 byte tokens (ids 0..255), merges making "he" (256)
/// and "llo" (257, via "ll" 258), and two added tokens.
json byte_level(const json& pre_tokenizer, const json& merges) {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[troupe::utf8::byte_to_unicode(static_cast<uint8_t>(b))] = b;
  vocab["he"] = 256;
  vocab["llo"] = 257;
  vocab["ll"] = 258;
  json added = json::array({{{"id", 259}, {"content", "<|end|>"}, {"special", true}},
                            {{"id", 261}, {"content", "<extra>"}, {"special", false}}});
  return {{"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}}},
          {"added_tokens", added},
          {"pre_tokenizer", pre_tokenizer}};
}

std::filesystem::path write_dir(const std::string& name, const json& tok, const json& cfg = nullptr) {
  const auto dir = troupe::test::scratch_dir(name);
  std::ofstream(dir / "tokenizer.json") << tok.dump();
  if (!cfg.is_null()) std::ofstream(dir / "tokenizer_config.json") << cfg.dump();
  return dir;
}

const json k_merges_str = json::array({"h e", "l l", "ll o"});
const json k_merges_pairs = json::array({json::array({"h", "e"}), json::array({"l", "l"}), json::array({"ll", "o"})});

}  // namespace

TEST_CASE("a byte-level tokenizer.json loads vocab, merges and added tokens", "[tokenizer]") {
  const json cfg = {{"bos_token", "<|end|>"},
                    {"eos_token", {{"content", "<|end|>"}, {"special", true}}},
                    {"add_bos_token", true},
                    {"chat_template", "{{ '<|im_start|>' }}"}};
  const auto d = troupe::load_hf_tokenizer(write_dir("tj_basic", byte_level(split_then_bytelevel(k_llama3_regex), k_merges_str), cfg).string());
  CHECK(d.kind == troupe::tokenizer_kind::bpe);
  CHECK(d.pre == "llama-bpe");
  REQUIRE(d.tokens.size() == 262);
  CHECK(d.tokens[260] == "[PAD260]");
  CHECK(d.types[259] == token_type::control);
  CHECK(d.types[261] == token_type::user_defined);
  CHECK(d.types[256] == token_type::normal);
  CHECK(d.merges == std::vector<std::string>{"h e", "l l", "ll o"});
  CHECK(d.bos_id == 259);
  CHECK(d.eos_id == 259);
  CHECK(d.add_bos);
  CHECK(d.chat_template == "{{ '<|im_start|>' }}");
  troupe::tokenizer t(d);
  CHECK(t.encode("hello<|end|>", true, true) == std::vector<int32_t>{259, 256, 257, 259});
}

TEST_CASE("merges given as pairs load like space-separated strings", "[tokenizer]") {
  const auto d = troupe::load_hf_tokenizer(write_dir("tj_pairs", byte_level(split_then_bytelevel(k_qwen2_regex), k_merges_pairs)).string());
  CHECK(d.merges == std::vector<std::string>{"h e", "l l", "ll o"});
  CHECK(d.pre == "qwen2");
  CHECK(d.bos_id == -1);
  CHECK_FALSE(d.add_bos);
}

TEST_CASE("pre_tokenizers map to the GGUF pre names", "[tokenizer]") {
  const json smollm = {{"type", "Sequence"},
                       {"pretokenizers",
                        {{{"type", "Digits"}, {"individual_digits", true}},
                         {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}}}};
  CHECK(troupe::load_hf_tokenizer(write_dir("tj_smol", byte_level(smollm, k_merges_str)).string()).pre == "smollm");
  const json gpt2 = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}};
  CHECK(troupe::load_hf_tokenizer(write_dir("tj_gpt2", byte_level(gpt2, k_merges_str)).string()).pre == "gpt2");
  const auto odd = write_dir("tj_odd", byte_level(split_then_bytelevel("\\w+"), k_merges_str));
  CHECK_THROWS_AS(troupe::load_hf_tokenizer(odd.string()), troupe::load_error);
  CHECK_THROWS_WITH(troupe::load_hf_tokenizer(odd.string()), Catch::Contains("pre_tokenizer"));
}

TEST_CASE("a chat_template list yields its default entry", "[tokenizer]") {
  const json cfg = {{"chat_template", json::array({{{"name", "tool_use"}, {"template", "T"}},
                                                   {{"name", "default"}, {"template", "D"}}})}};
  const auto dir = write_dir("tj_list", byte_level(split_then_bytelevel(k_llama3_regex), k_merges_str), cfg);
  CHECK(troupe::load_hf_tokenizer(dir.string()).chat_template == "D");
}

TEST_CASE("a Llama-2 style byte-fallback tokenizer.json becomes an spm tokenizer", "[tokenizer]") {
  json vocab = {{"<unk>", 0}, {"<s>", 1}, {"</s>", 2}};
  for (int b = 0; b < 256; ++b) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "<0x%02X>", b);
    vocab[buf] = 3 + b;
  }
  int id = 259;
  for (const char* t : {"\xE2\x96\x81", "h", "i", "\xE2\x96\x81h", "\xE2\x96\x81hi"}) vocab[t] = id++;
  const json tok = {
      {"model", {{"type", "BPE"}, {"byte_fallback", true}, {"unk_token", "<unk>"}, {"vocab", vocab},
                 {"merges", {"\xE2\x96\x81 h", "\xE2\x96\x81h i"}}}},
      {"normalizer", {{"type", "Sequence"}, {"normalizers", {{{"type", "Prepend"}, {"prepend", "\xE2\x96\x81"}},
                                                             {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\xE2\x96\x81"}}}}}},
      {"added_tokens", {{{"id", 0}, {"content", "<unk>"}, {"special", true}},
                        {{"id", 1}, {"content", "<s>"}, {"special", true}},
                        {{"id", 2}, {"content", "</s>"}, {"special", true}}}},
      {"pre_tokenizer", nullptr}};
  const auto d = troupe::load_hf_tokenizer(write_dir("tj_spm", tok, {{"bos_token", "<s>"}, {"add_bos_token", true}}).string());
  CHECK(d.kind == troupe::tokenizer_kind::spm);
  CHECK(d.add_space_prefix);
  CHECK(d.types[3 + 0xC3] == token_type::byte);
  CHECK(d.unk_id == 0);
  troupe::tokenizer t(d);
  CHECK(t.encode("hi \xC3\xA9", true, false) == std::vector<int32_t>{1, 263, 259, 3 + 0xC3, 3 + 0xA9});
  CHECK(t.decode(t.encode("hi \xC3\xA9", true, false)) == "hi \xC3\xA9");
}

TEST_CASE("a missing or malformed tokenizer.json is a load_error naming the file and key", "[tokenizer]") {
  const auto empty = troupe::test::scratch_dir("tj_missing");
  CHECK_THROWS_WITH(troupe::load_hf_tokenizer(empty.string()), Catch::Contains("tokenizer.json") && Catch::Contains("not found"));
  const auto bad = troupe::test::scratch_dir("tj_bad");
  std::ofstream(bad / "tokenizer.json") << "{\"model\": ";
  CHECK_THROWS_WITH(troupe::load_hf_tokenizer(bad.string()), Catch::Contains("not valid JSON"));
  const auto wp = write_dir("tj_wordpiece", {{"model", {{"type", "WordPiece"}, {"vocab", json::object()}}}});
  CHECK_THROWS_WITH(troupe::load_hf_tokenizer(wp.string()), Catch::Contains("model.type") && Catch::Contains("WordPiece"));
  json broken = byte_level(split_then_bytelevel(k_llama3_regex), json::array({42}));
  CHECK_THROWS_WITH(troupe::load_hf_tokenizer(write_dir("tj_merge", broken).string()), Catch::Contains("model.merges"));
  const json cfg = {{"bos_token", "<nope>"}};
  const auto nobos = write_dir("tj_nobos", byte_level(split_then_bytelevel(k_llama3_regex), k_merges_str), cfg);
  CHECK_THROWS_WITH(troupe::load_hf_tokenizer(nobos.string()), Catch::Contains("tokenizer_config.json") && Catch::Contains("bos_token"));
}
