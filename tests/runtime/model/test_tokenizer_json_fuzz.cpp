// tokenizer.json and tokenizer_config.json as untrusted input: SmolLM2's real files (the
// vocabulary cut to its first ids and the merges among them, so a case loads in
// microseconds), mutated as bytes and as JSON values, either load into a working
// tokenizer (encode and decode run) or raise a load_error naming the file, or the
// tokenizer's own "tokenizer: ..." error for data it cannot use. Nothing else escapes.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <typeinfo>

#include "fuzz_support.h"
#include "runtime/model/model_loader.h"
#include "runtime/model/tokenizer_json.h"
#include "runtime/text/tokenizer.h"
#include "test_support.h"

using namespace troupe;
using namespace troupe::test;
using namespace troupe::test::fuzz;
using nlohmann::json;

namespace {

constexpr int64_t k_kept_ids = 400;

std::filesystem::path hf_dir() { return cache_dir() / "models" / "SmolLM2-135M-Instruct-hf"; }

json read_json_file(const std::filesystem::path& p) {
  INFO(p << ": the Hugging Face export of the default model (tools/setup.sh --test makes it)");
  REQUIRE(std::filesystem::exists(p));
  std::ifstream in(p);
  return json::parse(in);
}

/// SmolLM2's tokenizer.json with ids below k_kept_ids and the merges among them.
json trimmed_tokenizer() {
  json j = read_json_file(hf_dir() / "tokenizer.json");
  json vocab = json::object();
  std::set<std::string> kept;
  for (const auto& [text, id] : j["model"]["vocab"].items())
    if (id.get<int64_t>() < k_kept_ids) {
      vocab[text] = id;
      kept.insert(text);
    }
  json merges = json::array();
  for (const auto& m : j["model"]["merges"]) {
    const std::string a = m.is_array() ? m[0].get<std::string>() : m.get<std::string>().substr(0, m.get<std::string>().find(' '));
    const std::string b = m.is_array() ? m[1].get<std::string>() : m.get<std::string>().substr(a.size() + 1);
    if (kept.count(a) && kept.count(b) && kept.count(a + b)) merges.push_back(m);
  }
  json added = json::array();
  for (const auto& a : j["added_tokens"])
    if (a["id"].get<int64_t>() < k_kept_ids) added.push_back(a);
  j["model"]["vocab"] = vocab;
  j["model"]["merges"] = merges;
  j["added_tokens"] = added;
  return j;
}

void write_file(const std::filesystem::path& p, const std::string& text) { std::ofstream(p, std::ios::trunc) << text; }

/// The error a usable-looking tokenizer_data can still raise when the tokenizer is built.
bool is_tokenizer_error(const std::runtime_error& e) {
  return typeid(e) == typeid(std::runtime_error) && std::string(e.what()).rfind("tokenizer: ", 0) == 0;
}

}  // namespace

TEST_CASE("mutated SmolLM2 tokenizer files load into a working tokenizer or raise a clear error",
          "[tokenizer][fuzz]") {
  const json tok = trimmed_tokenizer();
  const json cfg = read_json_file(hf_dir() / "tokenizer_config.json");
  const std::string tok_text = tok.dump(1), cfg_text = cfg.dump(1);
  const auto dir = scratch_dir("tokenizer-json-fuzz");
  write_file(dir / "tokenizer.json", tok_text);
  write_file(dir / "tokenizer_config.json", cfg_text);
  REQUIRE(tokenizer(load_hf_tokenizer(dir.string())).encode("Hello world", false, false).size() > 1);
  rng r(0x746f6b);
  tally t;
  for (int c = 0; c < 1000; ++c) {
    const bool config = r.below(4) == 0;
    const json& base = config ? cfg : tok;
    std::string text;
    if (r.below(2)) {
      text = mutate(config ? cfg_text : tok_text, r, true);
    } else {
      json j = base;
      mutate_json(j, r);
      text = dump(j);
    }
    write_file(dir / "tokenizer.json", config ? tok_text : text);
    write_file(dir / "tokenizer_config.json", config ? text : cfg_text);
    const std::string label = "case " + std::to_string(c) + (config ? " (tokenizer_config.json):\n" : ":\n") +
                              text.substr(0, 3000);
    tokenizer_data d;
    bool loaded = false;
    tally stage;
    expect_clear<load_error>(
        stage, label,
        [&] {
          d = load_hf_tokenizer(dir.string());
          loaded = true;
        },
        [&](const load_error& e) { return std::string(e.what()).find(dir.string()) != std::string::npos; });
    if (!loaded) {
      t.rejected += stage.rejected;
      continue;
    }
    expect_clear<std::runtime_error>(
        t, label,
        [&] {
          const tokenizer tk(std::move(d));
          const auto ids = tk.encode("Hello, world! 123 <|im_start|>user\nhi<|im_end|>", true, true);
          (void)tk.decode(ids);
        },
        is_tokenizer_error);
  }
  INFO("loaded " << t.parsed << ", rejected " << t.rejected);
  CHECK(t.parsed + t.rejected == 1000);
  CHECK(t.parsed > 50);
  CHECK(t.rejected > 300);
}
