// The `random` load format: a model from config.json alone, weights made where they live.
#include <catch2/catch.hpp>
#include <fstream>

#include "runtime/engine/engine.h"
#include "runtime/model/model.h"
#include "test_support.h"

using namespace troupe;

namespace {

/// A small llama config.json (no tokenizer.json) in a scratch directory.
std::string tiny_config_dir(const std::string& name) {
  const auto dir = test::scratch_dir(name);
  std::ofstream(dir / "config.json") << R"({"model_type": "llama", "hidden_size": 128, "intermediate_size": 256,
    "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 300,
    "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": false})";
  return dir.string();
}

load_options random_options(uint64_t seed) {
  load_options o;
  o.random_weights = true;
  o.random_seed = seed;
  return o;
}

std::vector<float> host_values(const tensor& t) { return std::vector<float>(t.f32(), t.f32() + t.numel()); }

}  // namespace

TEST_CASE("a random model is made from config.json alone with the config's shapes", "[random-weights]") {
  const auto dir = tiny_config_dir("random_shapes");
  const loaded_model m = load_model(dir, random_options(1));
  CHECK(m.format == "random");
  REQUIRE(m.weights.layers.size() == 3);
  CHECK(m.weights.tok_embd.shape() == shape_t{300, 128});
  CHECK(m.weights.output.shape() == shape_t{300, 128});
  CHECK(m.weights.layers[2].wk.shape() == shape_t{64, 128});
  CHECK(m.weights.layers[1].w_down.shape() == shape_t{128, 256});
  CHECK(host_values(m.weights.layers[0].attn_norm) == std::vector<float>(128, 1.0f));
  CHECK(m.tokenizer.tokens.size() == 256);  // the byte-level stand-in
}

TEST_CASE("random weights depend on the seed only, and a tensor-parallel rank holds its slice of them",
          "[random-weights]") {
  const auto dir = tiny_config_dir("random_seed");
  const loaded_model a = load_model(dir, random_options(3)), b = load_model(dir, random_options(3)),
                     c = load_model(dir, random_options(4));
  CHECK(host_values(a.weights.layers[1].wq) == host_values(b.weights.layers[1].wq));
  CHECK(host_values(a.weights.layers[1].wq) != host_values(c.weights.layers[1].wq));
  load_options tp = random_options(3);
  tp.tp_size = 2;
  tp.tp_rank = 1;
  const loaded_model r1 = load_model(dir, tp);
  CHECK(r1.weights.layers[0].wq.shape() == shape_t{64, 128});
  CHECK(r1.weights.layers[0].w_gate.shape() == shape_t{128, 128});
  CHECK(r1.weights.layers[0].wo.shape() == shape_t{128, 64});
  // rank 1's rows of wq and columns of wo are the whole model's
  const auto whole_q = host_values(a.weights.layers[0].wq), part_q = host_values(r1.weights.layers[0].wq);
  CHECK(std::vector<float>(whole_q.begin() + 64 * 128, whole_q.end()) == part_q);
  const auto whole_o = host_values(a.weights.layers[0].wo), part_o = host_values(r1.weights.layers[0].wo);
  bool columns_match = true;
  for (int r = 0; r < 128; ++r)
    for (int k = 0; k < 64; ++k) columns_match = columns_match && part_o[r * 64 + k] == whole_o[r * 128 + 64 + k];
  CHECK(columns_match);
}

TEST_CASE("a random model generates the same tokens every time", "[random-weights]") {
  const auto dir = tiny_config_dir("random_generate");
  engine_config ec;
  ec.n_threads = 1;
  ec.kv_tokens = 512;
  auto run = [&] {
    engine e(model::load(dir, random_options(9)), ec);
    sampling_params p;
    p.temperature = 0;
    p.max_tokens = 8;
    p.ignore_eos = true;
    return e.generate({{1, 2, 3, 4, 5}}, p)[0].tokens;
  };
  const auto first = run();
  CHECK(first.size() == 8);
  CHECK(run() == first);
}

TEST_CASE("the random format names the directory when config.json is missing", "[random-weights]") {
  const auto dir = test::scratch_dir("random_missing");
  CHECK_THROWS_WITH(load_model(dir.string(), random_options(1)), Catch::Contains("missing config.json"));
}

TEST_CASE("rope_theta and llama3 scaling are read from transformers 5's rope_parameters", "[random-weights]") {
  const auto dir = test::scratch_dir("random_rope_parameters");
  std::ofstream(dir / "config.json") << R"({"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
    "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 300,
    "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                        "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}})";
  const loaded_model m = load_model(dir.string(), random_options(1));
  CHECK(m.config.rope_theta == 500000.0f);
  CHECK(m.config.scaling.type == rope_scaling::kind::llama3);
  CHECK(m.config.scaling.factor == 8.0f);
}
