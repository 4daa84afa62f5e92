// Hugging Face models: config.json, tokenizer.json and safetensors weights.
#include <algorithm>
#include <climits>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>

#include "runtime/model/model_loader_detail.h"
#include "runtime/model/safetensors.h"
#include "runtime/model/tokenizer_json.h"

namespace troupe::loader_detail {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr layer_tensor_names hf_names{
    ".input_layernorm.weight",  ".self_attn.q_proj.weight", ".self_attn.k_proj.weight",
    ".self_attn.v_proj.weight", ".self_attn.q_proj.bias",   ".self_attn.k_proj.bias",
    ".self_attn.v_proj.bias",   ".self_attn.o_proj.weight", ".post_attention_layernorm.weight",
    ".mlp.gate_proj.weight",    ".mlp.up_proj.weight",      ".mlp.down_proj.weight"};

// ---------------------------------------------------------------- HF: config

struct hf_json {
  const json& j;
  std::string file;

  const json* find(const char* key) const {
    auto it = j.find(key);
    return it == j.end() || it->is_null() ? nullptr : &*it;
  }
  int dim(const char* key, std::optional<int> fallback = std::nullopt) const {
    const json* v = find(key);
    if (!v) {
      if (fallback) return *fallback;
      throw load_error(file + ": missing key '" + key + "'");
    }
    if (!v->is_number_integer() || v->get<int64_t>() <= 0 || v->get<int64_t>() > INT_MAX)
      throw load_error(file + ": key '" + key + "' must be a positive integer, got " + v->dump());
    return v->get<int>();
  }
  float num(const char* key, float fallback) const {
    const json* v = find(key);
    if (!v) return fallback;
    if (!v->is_number()) throw load_error(file + ": key '" + key + "' must be a number, got " + v->dump());
    return v->get<float>();
  }
  std::optional<float> maybe_num(const char* key) const {
    if (!find(key)) return std::nullopt;
    return num(key, 0.0f);
  }
  std::optional<int> maybe_int(const char* key) const {
    const json* v = find(key);
    if (!v) return std::nullopt;
    if (!v->is_number_integer() || v->get<int64_t>() < INT_MIN || v->get<int64_t>() > INT_MAX)
      throw load_error(file + ": key '" + key + "' must be an integer, got " + v->dump());
    return v->get<int>();
  }
  bool flag(const char* key, bool fallback) const {
    const json* v = find(key);
    if (!v) return fallback;
    if (!v->is_boolean()) throw load_error(file + ": key '" + key + "' must be true or false, got " + v->dump());
    return v->get<bool>();
  }
  std::string text(const char* key) const {
    const json* v = find(key);
    if (!v) throw load_error(file + ": missing key '" + key + "'");
    if (!v->is_string()) throw load_error(file + ": key '" + key + "' must be a string, got " + v->dump());
    return v->get<std::string>();
  }
};

void hf_rope_scaling(const hf_json& cfg, model_config& c) {
  // transformers >= 5 writes rope_parameters ({"rope_type", "rope_theta", factor...}) where
  // older versions wrote rope_theta and rope_scaling.
  const json* rs = cfg.find("rope_scaling");
  const char* key = "rope_scaling";
  if (!rs) {
    rs = cfg.find("rope_parameters");
    key = "rope_parameters";
  }
  if (!rs) return;
  if (!rs->is_object()) throw load_error(cfg.file + ": key '" + key + "' must be an object");
  if (!cfg.find("rope_theta")) c.rope_theta = hf_json{*rs, cfg.file}.num("rope_theta", c.rope_theta);
  hf_json s{*rs, cfg.file};
  const std::string type = s.find("rope_type") ? s.text("rope_type") : s.find("type") ? s.text("type") : "";
  if (type == "default" || type.empty()) return;
  if (type != "llama3")
    throw load_error(cfg.file + ": rope_scaling type '" + type + "' is not supported (llama3 is)");
  c.scaling.type = rope_scaling::kind::llama3;
  c.scaling.factor = s.num("factor", c.scaling.factor);
  c.scaling.low_freq_factor = s.num("low_freq_factor", c.scaling.low_freq_factor);
  c.scaling.high_freq_factor = s.num("high_freq_factor", c.scaling.high_freq_factor);
  c.scaling.original_max_position = s.dim("original_max_position_embeddings", c.scaling.original_max_position);
}

}  // namespace

model_config hf_config(const std::string& dir) {
  const std::string file = (fs::path(dir) / "config.json").string();
  if (!fs::exists(file)) throw load_error(dir + ": missing config.json (" + file + ")");
  json j;
  try {
    std::ifstream in(file);
    j = json::parse(in);
  } catch (const json::exception& e) {
    throw load_error(file + ": not valid JSON: " + e.what());
  }
  if (!j.is_object()) throw load_error(file + ": not a JSON object");
  hf_json cfg{j, file};
  model_config c;
  const std::string type = cfg.text("model_type");
  if (type == "llama" || type == "mistral") c.arch = architecture::llama;
  else if (type == "qwen2") c.arch = architecture::qwen2;
  else throw load_error(file + ": unsupported architecture '" + type + "' (llama, mistral and qwen2 are supported)");
  c.name = fs::path(dir).filename().string();
  if (c.name.empty()) c.name = fs::path(dir).parent_path().filename().string();
  c.hidden = cfg.dim("hidden_size");
  c.ffn = cfg.dim("intermediate_size");
  c.n_layers = cfg.dim("num_hidden_layers");
  c.n_heads = cfg.dim("num_attention_heads");
  c.n_kv_heads = cfg.dim("num_key_value_heads", c.n_heads);
  c.head_dim = cfg.dim("head_dim", c.hidden / c.n_heads);
  c.vocab = cfg.dim("vocab_size");
  c.max_context = cfg.dim("max_position_embeddings", 2048);
  c.rms_eps = cfg.num("rms_norm_eps", 1e-6f);
  c.rope_theta = cfg.num("rope_theta", 10000.0f);
  hf_rope_scaling(cfg, c);
  c.tied_embeddings = cfg.flag("tie_word_embeddings", false);
  c.attn_bias = c.arch == architecture::qwen2;
  validate_config(c, file);
  return c;
}

generation_defaults hf_generation(const std::string& dir) {
  const std::string file = (fs::path(dir) / "generation_config.json").string();
  if (!fs::exists(file)) return {};
  json j;
  try {
    std::ifstream in(file);
    j = json::parse(in);
  } catch (const json::exception& e) {
    throw load_error(file + ": not valid JSON: " + e.what());
  }
  if (!j.is_object()) throw load_error(file + ": not a JSON object");
  // The keys vLLM takes from it (do_sample is ignored there too).
  const hf_json cfg{j, file};
  generation_defaults d;
  d.temperature = cfg.maybe_num("temperature");
  d.top_p = cfg.maybe_num("top_p");
  d.top_k = cfg.maybe_int("top_k");
  d.min_p = cfg.maybe_num("min_p");
  d.repetition_penalty = cfg.maybe_num("repetition_penalty");
  d.max_tokens = cfg.maybe_int("max_new_tokens");
  check_generation(d, file, {{"max_tokens", "max_new_tokens"}});
  return d;
}

// ---------------------------------------------------------------- HF: weights

namespace {

tensor hf_tensor(const safetensors_set& st, const std::string& name, const shape_t& want) {
  const safetensors_entry* e = st.find(name);
  if (!e) throw load_error(st.dir() + ": missing tensor '" + name + "'");
  const std::string file = st.file_of(name);
  tensor t = safetensors_to_f32(*e, file);
  if (!(t.shape() == want))
    throw load_error(file + ": tensor '" + name + "' has shape " + t.shape().str() + ", expected " + want.str());
  return t;
}

/// Tensor `name` of a Hugging Face checkpoint, checked to have shape `want` and a dtype this
/// loader decodes (F32, F16, BF16).
stored_matrix hf_matrix(const safetensors_set& st, const std::string& name, const shape_t& want) {
  const safetensors_entry* e = st.find(name);
  if (!e) throw load_error(st.dir() + ": missing tensor '" + name + "'");
  const std::string file = st.file_of(name);
  stored_matrix m;
  if (e->dtype == "F32") m.type = ggml_type::f32;
  else if (e->dtype == "F16") m.type = ggml_type::f16;
  else if (e->dtype == "BF16") m.type = ggml_type::bf16;
  else throw load_error(file + ": tensor '" + name + "' has unsupported dtype " + e->dtype + " (F32, F16, BF16)");
  shape_t got;
  got.rank = static_cast<int>(std::min<size_t>(e->shape.size(), 4));
  for (int k = 0; k < got.rank; ++k) got.dims[static_cast<size_t>(k)] = e->shape[static_cast<size_t>(k)];
  if (e->shape.size() > 4 || !(got == want))
    throw load_error(file + ": tensor '" + name + "' has shape " + got.str() + (e->shape.size() > 4 ? "..." : "") +
                     ", expected " + want.str());
  m.data = e->data;
  m.cols = e->shape.back();
  m.rows = e->numel() / m.cols;
  m.row_bytes = safetensors_dtype_size(e->dtype) * static_cast<size_t>(m.cols);
  m.what = file + ": tensor '" + name + "'";
  return m;
}

}  // namespace

tokenizer_data hf_tokenizer(const std::string& dir) {
  const fs::path file = fs::path(dir) / "tokenizer.json";
  if (!fs::exists(file)) throw load_error(dir + ": missing tokenizer.json (" + file.string() + ")");
  return load_hf_tokenizer(dir);
}

loaded_model load_hf(const std::string& dir, const load_options* opt) {
  loaded_model m;
  m.format = "safetensors";
  m.path = dir;
  m.config = hf_config(dir);
  m.tokenizer = hf_tokenizer(dir);
  const safetensors_set st(dir);
  // The files decide: a checkpoint without lm_head ties it, q/k/v biases are there or not.
  m.config.tied_embeddings = m.config.tied_embeddings || !st.find("lm_head.weight");
  m.config.attn_bias = st.find("model.layers.0.self_attn.q_proj.bias") != nullptr;
  for (const safetensors_entry* e : st.all()) {
    ++m.tensor_types[e->dtype];
    m.n_params += e->numel();
  }
  const model_config& c = m.config;
  m.slice = plan_slice(c, opt, dir);
  if (!opt) return m;
  const auto [begin, end] = layer_range(*opt, c.n_layers, dir);
  m.weights.layers.resize(static_cast<size_t>(c.n_layers));
  if (opt->load_embeddings) m.weights.tok_embd = hf_tensor(st, "model.embed_tokens.weight", {c.vocab, c.hidden});
  const matrix_source src = [&st](const std::string& name, const shape_t& want) {
    return hf_matrix(st, name, want);
  };
  for (int i = begin; i < end; ++i)
    load_layer(src, "model.layers.", hf_names, c, m.slice, false, i, m.weights.layers[static_cast<size_t>(i)]);
  if (opt->load_head) {
    m.weights.out_norm = hf_tensor(st, "model.norm.weight", {c.hidden});
    if (!c.tied_embeddings) m.weights.output = hf_tensor(st, "lm_head.weight", {c.vocab, c.hidden});
  }
  return m;
}

}  // namespace troupe::loader_detail
