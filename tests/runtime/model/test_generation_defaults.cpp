// The sampling defaults a model ships (generation_config.json, GGUF general.sampling.*),
// the default model's, and how the sources stack.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <string>

#include "runtime/model/generation_defaults.h"
#include "runtime/model/model_loader.h"
#include "test_support.h"

using namespace troupe;
using Catch::Contains;
namespace fs = std::filesystem;

namespace {

/// A directory holding only generation_config.json with `json_text`.
std::string hf_dir_with(const std::string& name, const std::string& json_text) {
  const fs::path dir = test::scratch_dir(name);
  std::ofstream(dir / "generation_config.json") << json_text;
  return dir.string();
}

}  // namespace

TEST_CASE("generation_config.json gives the keys vLLM takes, max_new_tokens as max_tokens", "[loader][generation]") {
  const auto dir = hf_dir_with("gen-hf", R"({"bos_token_id": 1, "temperature": 0.2, "top_p": 0.9, "top_k": 40,
      "min_p": 0.05, "repetition_penalty": 1.1, "max_new_tokens": 300, "do_sample": true})");
  const generation_defaults g = read_generation_defaults(dir);
  CHECK(g.temperature == 0.2f);
  CHECK(g.top_p == 0.9f);
  CHECK(g.top_k == 40);
  CHECK(g.min_p == 0.05f);
  CHECK(g.repetition_penalty == 1.1f);
  CHECK(g.max_tokens == 300);
  CHECK_FALSE(g.presence_penalty);
  CHECK_FALSE(g.frequency_penalty);
}

TEST_CASE("a Hugging Face directory without generation_config.json ships no defaults", "[loader][generation]") {
  const fs::path dir = test::scratch_dir("gen-hf-none");
  CHECK(read_generation_defaults(dir.string()).empty());
}

TEST_CASE("a bad generation_config.json value names the file, the key and the range", "[loader][generation]") {
  const auto hot = hf_dir_with("gen-hf-hot", R"({"temperature": 5})");
  CHECK_THROWS_WITH(read_generation_defaults(hot),
                    Contains("generation_config.json") && Contains("temperature") && Contains("[0, 2]"));
  const auto text = hf_dir_with("gen-hf-text", R"({"top_k": "many"})");
  CHECK_THROWS_WITH(read_generation_defaults(text), Contains("key 'top_k' must be an integer"));
  const auto zero = hf_dir_with("gen-hf-zero", R"({"max_new_tokens": 0})");
  CHECK_THROWS_WITH(read_generation_defaults(zero), Contains("max_new_tokens") && Contains(">= 1"));
  const auto broken = hf_dir_with("gen-hf-broken", "{temperature");
  CHECK_THROWS_WITH(read_generation_defaults(broken), Contains("generation_config.json: not valid JSON"));
}

TEST_CASE("the default model gets temperature 0.2 and top_p 0.9, its Hugging Face release's", "[loader][generation]") {
  const generation_defaults g = read_generation_defaults("default");
  CHECK(g.temperature == 0.2f);
  CHECK(g.top_p == 0.9f);
  CHECK_FALSE(g.top_k);
  CHECK_FALSE(g.max_tokens);
  CHECK(g == default_model_generation());
}

TEST_CASE("the default model's file by its path ships no sampling defaults (its GGUF has none)",
          "[loader][generation]") {
  CHECK(read_generation_defaults(test::default_model()).empty());
}

TEST_CASE("a later source's set fields win and its unset fields fall through", "[loader][generation]") {
  generation_defaults model_file;
  model_file.temperature = 0.2f;
  model_file.top_p = 0.9f;
  generation_defaults cluster_file;
  cluster_file.temperature = 0.7f;
  cluster_file.max_tokens = 64;
  const generation_defaults g = model_file.overlaid_with(cluster_file);
  CHECK(g.temperature == 0.7f);
  CHECK(g.top_p == 0.9f);
  CHECK(g.max_tokens == 64);
  CHECK_FALSE(g.top_k);
  CHECK(model_file.overlaid_with(generation_defaults{}) == model_file);
  CHECK(generation_defaults{}.overlaid_with(model_file) == model_file);
}

TEST_CASE("first_problem names the first field out of its range", "[loader][generation]") {
  generation_defaults g;
  CHECK(first_problem(g).first.empty());
  g.top_p = 0.0f;
  CHECK(first_problem(g) == std::make_pair(std::string("top_p"), std::string("must be in (0, 1], got 0")));
  g.top_p = 1.0f;
  g.top_k = -2;
  CHECK(first_problem(g).first == "top_k");
  g.top_k = -1;
  g.repetition_penalty = 0.0f;
  CHECK(first_problem(g).first == "repetition_penalty");
  g.repetition_penalty = 1.2f;
  g.presence_penalty = 2.5f;
  CHECK(first_problem(g).first == "presence_penalty");
  g.presence_penalty = -2.0f;
  CHECK(first_problem(g).first.empty());
}
