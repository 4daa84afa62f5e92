// safetensors files and Hugging Face model directories, written by the test itself.
#include <catch2/catch.hpp>

#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "runtime/model/model_loader.h"
#include "runtime/model/safetensors.h"
#include "test_support.h"

using namespace troupe;
using Catch::Contains;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

/// One tensor to write: name, dtype, shape and raw little-endian bytes.
struct st_tensor {
  std::string name, dtype;
  std::vector<int64_t> shape;
  std::vector<uint8_t> data;
};

std::vector<uint8_t> f32_bytes(const std::vector<float>& v) {
  std::vector<uint8_t> b(v.size() * 4);
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

/// F32 tensor of `shape` holding scale * (0, 1, 2, ...).
st_tensor f32_tensor(const std::string& name, std::vector<int64_t> shape, float scale) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  std::vector<float> v(static_cast<size_t>(n));
  for (size_t i = 0; i < v.size(); ++i) v[i] = scale * static_cast<float>(i);
  return {name, "F32", std::move(shape), f32_bytes(v)};
}

std::vector<uint8_t> safetensors_bytes(const std::vector<st_tensor>& ts, const std::string& header_override = "") {
  json h = json::object();
  h["__metadata__"] = {{"format", "pt"}};
  std::vector<uint8_t> data;
  for (const auto& t : ts) {
    h[t.name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {data.size(), data.size() + t.data.size()}}};
    data.insert(data.end(), t.data.begin(), t.data.end());
  }
  const std::string text = header_override.empty() ? h.dump() : header_override;
  const uint64_t n = text.size();
  std::vector<uint8_t> out(8 + text.size() + data.size());
  std::memcpy(out.data(), &n, 8);
  std::memcpy(out.data() + 8, text.data(), text.size());
  if (!data.empty()) std::memcpy(out.data() + 8 + text.size(), data.data(), data.size());
  return out;
}

void write_file(const fs::path& p, const std::vector<uint8_t>& b) {
  std::ofstream(p, std::ios::binary).write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

void write_text(const fs::path& p, const std::string& s) { std::ofstream(p) << s; }

constexpr int64_t k_hidden = 8, k_heads = 2, k_kv_heads = 1, k_head_dim = 4, k_ffn = 12, k_vocab = 6;

json tiny_config() {
  return {{"model_type", "llama"},        {"hidden_size", k_hidden},     {"intermediate_size", k_ffn},
          {"num_hidden_layers", 2},       {"num_attention_heads", k_heads}, {"num_key_value_heads", k_kv_heads},
          {"vocab_size", k_vocab},        {"rms_norm_eps", 1e-5},        {"rope_theta", 500000.0},
          {"max_position_embeddings", 64}, {"tie_word_embeddings", false}};
}

std::vector<st_tensor> tiny_tensors(int layers = 2) {
  std::vector<st_tensor> ts = {f32_tensor("model.embed_tokens.weight", {k_vocab, k_hidden}, 1.0f),
                               f32_tensor("model.norm.weight", {k_hidden}, 1.0f),
                               f32_tensor("lm_head.weight", {k_vocab, k_hidden}, 2.0f)};
  const int64_t q = k_heads * k_head_dim, kv = k_kv_heads * k_head_dim;
  for (int i = 0; i < layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    ts.push_back(f32_tensor(p + "input_layernorm.weight", {k_hidden}, 1.0f));
    ts.push_back(f32_tensor(p + "self_attn.q_proj.weight", {q, k_hidden}, 1.0f + i));
    ts.push_back(f32_tensor(p + "self_attn.k_proj.weight", {kv, k_hidden}, 1.0f));
    ts.push_back(f32_tensor(p + "self_attn.v_proj.weight", {kv, k_hidden}, 1.0f));
    ts.push_back(f32_tensor(p + "self_attn.o_proj.weight", {k_hidden, q}, 1.0f));
    ts.push_back(f32_tensor(p + "post_attention_layernorm.weight", {k_hidden}, 1.0f));
    ts.push_back(f32_tensor(p + "mlp.gate_proj.weight", {k_ffn, k_hidden}, 1.0f));
    ts.push_back(f32_tensor(p + "mlp.up_proj.weight", {k_ffn, k_hidden}, 1.0f));
    ts.push_back(f32_tensor(p + "mlp.down_proj.weight", {k_hidden, k_ffn}, 1.0f));
  }
  return ts;
}

std::string tiny_tokenizer_json() {
  json j;
  j["model"] = {{"type", "BPE"}, {"vocab", {{"a", 0}, {"b", 1}, {"ab", 2}, {"c", 3}}}, {"merges", {"a b"}}};
  j["added_tokens"] = json::array({{{"id", 4}, {"content", "<|begin_of_text|>"}, {"special", true}},
                                   {{"id", 5}, {"content", "<|eot_id|>"}, {"special", true}}});
  j["pre_tokenizer"] = {{"type", "ByteLevel"}, {"use_regex", true}};
  return j.dump();
}

/// A complete tiny HF directory; returns its path.
fs::path tiny_hf_dir(const std::string& name, const json& config = tiny_config()) {
  const fs::path dir = test::scratch_dir(name);
  write_text(dir / "config.json", config.dump());
  write_text(dir / "tokenizer.json", tiny_tokenizer_json());
  write_file(dir / "model.safetensors", safetensors_bytes(tiny_tensors()));
  return dir;
}

}  // namespace

TEST_CASE("a safetensors file decodes F32, F16 and BF16 tensors to f32", "[loader][safetensors]") {
  const fs::path dir = test::scratch_dir("st-dtypes");
  // F16 1.0, -2.0, 0.5 and BF16 1.0, -3.0.
  write_file(dir / "a.safetensors",
             safetensors_bytes({f32_tensor("f", {2, 3}, 0.5f),
                                {"h", "F16", {3}, {0x00, 0x3C, 0x00, 0xC0, 0x00, 0x38}},
                                {"b", "BF16", {2}, {0x80, 0x3F, 0x40, 0xC0}}}));
  const safetensors_file f((dir / "a.safetensors").string());
  CHECK(f.entries().size() == 3);
  const tensor t = safetensors_to_f32(*f.find("f"), f.path());
  CHECK(t.shape() == shape_t{2, 3});
  CHECK(t.f32()[5] == 2.5f);
  const tensor h = safetensors_to_f32(*f.find("h"), f.path());
  CHECK((h.f32()[0] == 1.0f && h.f32()[1] == -2.0f && h.f32()[2] == 0.5f));
  const tensor b = safetensors_to_f32(*f.find("b"), f.path());
  CHECK((b.f32()[0] == 1.0f && b.f32()[1] == -3.0f));
  CHECK(f.find("__metadata__") == nullptr);
}

TEST_CASE("a safetensors header length past the end of the file is rejected", "[loader][safetensors]") {
  const fs::path p = test::scratch_dir("st-overflow") / "model.safetensors";
  auto b = safetensors_bytes({f32_tensor("x", {4}, 1.0f)});
  const uint64_t huge = 1ull << 40;
  std::memcpy(b.data(), &huge, 8);
  write_file(p, b);
  CHECK_THROWS_WITH(safetensors_file(p.string()), Contains(p.string()) && Contains("header length 1099511627776 overflows"));
  write_file(p, {1, 2, 3});
  CHECK_THROWS_WITH(safetensors_file(p.string()), Contains("truncated while reading the header length"));
}

TEST_CASE("bad safetensors headers name the file, the tensor and the problem", "[loader][safetensors]") {
  const fs::path p = test::scratch_dir("st-bad") / "model.safetensors";
  write_file(p, safetensors_bytes({}, "{not json"));
  CHECK_THROWS_WITH(safetensors_file(p.string()), Contains(p.string()) && Contains("header is not valid JSON"));
  write_file(p, safetensors_bytes({}, R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})"));
  CHECK_THROWS_WITH(safetensors_file(p.string()), Contains("tensor 'w'") && Contains("outside the data section of 0 bytes"));
  write_file(p, safetensors_bytes({f32_tensor("w", {4}, 1.0f)}, R"({"w":{"dtype":"F32","shape":[5],"data_offsets":[0,16]}})"));
  CHECK_THROWS_WITH(safetensors_file(p.string()), Contains("tensor 'w'") && Contains("need 20"));
  write_file(p, safetensors_bytes({f32_tensor("w", {4}, 1.0f)}, R"({"w":{"dtype":"F32","shape":[-4],"data_offsets":[0,16]}})"));
  CHECK_THROWS_WITH(safetensors_file(p.string()), Contains("tensor 'w'") && Contains("negative dimension"));
  write_file(p, safetensors_bytes({{"w", "I8", {4}, {1, 2, 3, 4}}}));
  const safetensors_file f(p.string());
  CHECK_THROWS_WITH(safetensors_to_f32(*f.find("w"), f.path()), Contains("tensor 'w' has unsupported dtype I8"));
}

TEST_CASE("a tiny Hugging Face directory loads its config, weights and tokenizer", "[loader][safetensors]") {
  const fs::path dir = tiny_hf_dir("hf-tiny");
  const auto m = load_model(dir.string());
  CHECK(m.format == "safetensors");
  CHECK(m.config.arch == architecture::llama);
  CHECK(m.config.n_layers == 2);
  CHECK(m.config.hidden == k_hidden);
  CHECK(m.config.n_kv_heads == k_kv_heads);
  CHECK(m.config.head_dim == k_head_dim);
  CHECK(m.config.rope_theta == 500000.0f);
  CHECK(m.config.max_context == 64);
  CHECK_FALSE(m.config.tied_embeddings);
  CHECK_FALSE(m.config.attn_bias);
  CHECK(m.weights.layers[1].wq.shape() == shape_t{k_heads * k_head_dim, k_hidden});
  CHECK(m.weights.layers[1].wq.f32()[3] == 6.0f);
  CHECK(m.weights.output.f32()[1] == 2.0f);
  CHECK(m.tensor_types.at("F32") == 21);
  CHECK(m.tokenizer.tokens.size() == 6);
  CHECK(m.n_params == 2 * 48 + 8 + 2 * (16 + 64 + 32 + 32 + 64 + 3 * 96));
}

TEST_CASE("llama3 rope_scaling in config.json fills the scaling parameters", "[loader][safetensors]") {
  auto cfg = tiny_config();
  cfg["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                         {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}};
  const auto c = load_model_metadata(tiny_hf_dir("hf-rope", cfg).string()).config;
  CHECK(c.scaling.type == rope_scaling::kind::llama3);
  CHECK(c.scaling.factor == 8.0f);
  CHECK(c.scaling.high_freq_factor == 4.0f);
  CHECK(c.scaling.original_max_position == 8192);
  cfg["rope_scaling"] = {{"type", "yarn"}, {"factor", 4.0}};
  CHECK_THROWS_WITH(load_model_metadata(tiny_hf_dir("hf-rope", cfg).string()),
                    Contains("config.json") && Contains("rope_scaling type 'yarn' is not supported"));
}

TEST_CASE("a sharded checkpoint loads through model.safetensors.index.json", "[loader][safetensors]") {
  const fs::path dir = tiny_hf_dir("hf-sharded");
  fs::remove(dir / "model.safetensors");
  auto ts = tiny_tensors();
  const std::vector<st_tensor> a(ts.begin(), ts.begin() + 7), b(ts.begin() + 7, ts.end());
  write_file(dir / "model-00001-of-00002.safetensors", safetensors_bytes(a));
  write_file(dir / "model-00002-of-00002.safetensors", safetensors_bytes(b));
  json index;
  for (const auto& t : a) index["weight_map"][t.name] = "model-00001-of-00002.safetensors";
  for (const auto& t : b) index["weight_map"][t.name] = "model-00002-of-00002.safetensors";
  write_text(dir / "model.safetensors.index.json", index.dump());
  const auto m = load_model(dir.string());
  CHECK(m.weights.layers[1].w_down.shape() == shape_t{k_hidden, k_ffn});
  CHECK(m.weights.layers[0].wq.f32()[2] == 2.0f);
  index["weight_map"]["model.layers.9.mlp.up_proj.weight"] = "model-00002-of-00002.safetensors";
  write_text(dir / "model.safetensors.index.json", index.dump());
  CHECK_THROWS_WITH(load_model(dir.string()), Contains("model-00002-of-00002.safetensors") &&
                                                  Contains("missing tensor 'model.layers.9.mlp.up_proj.weight'"));
}

TEST_CASE("a Hugging Face directory without tokenizer.json is rejected naming it", "[loader][safetensors]") {
  const fs::path dir = tiny_hf_dir("hf-no-tokenizer");
  fs::remove(dir / "tokenizer.json");
  CHECK_THROWS_WITH(load_model(dir.string()), Contains(dir.string()) && Contains("missing tokenizer.json"));
}

TEST_CASE("config.json problems name the file and the key", "[loader][safetensors]") {
  auto cfg = tiny_config();
  cfg.erase("hidden_size");
  CHECK_THROWS_WITH(load_model(tiny_hf_dir("hf-config", cfg).string()),
                    Contains("hf-config/config.json") && Contains("missing key 'hidden_size'"));
  cfg = tiny_config();
  cfg["num_attention_heads"] = "two";
  CHECK_THROWS_WITH(load_model(tiny_hf_dir("hf-config", cfg).string()),
                    Contains("config.json") && Contains("key 'num_attention_heads' must be a positive integer"));
  cfg = tiny_config();
  cfg["model_type"] = "gpt_neox";
  CHECK_THROWS_WITH(load_model(tiny_hf_dir("hf-config", cfg).string()),
                    Contains("config.json") && Contains("unsupported architecture 'gpt_neox'"));
  const fs::path dir = tiny_hf_dir("hf-config");
  fs::remove(dir / "config.json");
  CHECK_THROWS_WITH(load_model(dir.string()), Contains(dir.string()) && Contains("missing config.json"));
}

TEST_CASE("a Hugging Face checkpoint missing a tensor names it", "[loader][safetensors]") {
  const fs::path dir = tiny_hf_dir("hf-missing");
  auto ts = tiny_tensors();
  ts.erase(ts.begin() + 13);  // model.layers.1.self_attn.q_proj.weight
  REQUIRE(ts.size() == 20);
  write_file(dir / "model.safetensors", safetensors_bytes(ts));
  CHECK_THROWS_WITH(load_model(dir.string()), Contains(dir.string()) &&
                                                  Contains("missing tensor 'model.layers.1.self_attn.q_proj.weight'"));
  load_options o;
  o.layer_end = 1;
  CHECK(load_model(dir.string(), o).weights.layers[1].wq.empty());
}

TEST_CASE("a checkpoint without lm_head.weight ties the embeddings", "[loader][safetensors]") {
  const fs::path dir = tiny_hf_dir("hf-tied");
  auto ts = tiny_tensors();
  ts.erase(ts.begin() + 2);
  write_file(dir / "model.safetensors", safetensors_bytes(ts));
  const auto m = load_model(dir.string());
  CHECK(m.config.tied_embeddings);
  CHECK(m.weights.output.empty());
  CHECK_FALSE(m.weights.tok_embd.empty());
}
