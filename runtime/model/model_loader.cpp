#include "runtime/model/model_loader.h"

#include <algorithm>
#include <climits>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <vector>

#include "kernels/base/dequant.h"
#include "runtime/model/gguf.h"
#include "runtime/model/safetensors.h"
#include "runtime/text/tokenizer_json.h"
#include "runtime/text/utf8.h"

namespace troupe {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// ---------------------------------------------------------------- shared helpers

/// Resolves layer_end = -1 and checks the range against the model.
std::pair<int, int> layer_range(const load_options& opt, int n_layers, const std::string& path) {
  const int end = opt.layer_end < 0 ? n_layers : opt.layer_end;
  if (opt.layer_begin < 0 || opt.layer_begin > end || end > n_layers)
    throw load_error(path + ": layer range [" + std::to_string(opt.layer_begin) + ", " +
                     std::to_string(opt.layer_end) + ") is outside the model's " + std::to_string(n_layers) +
                     " layers");
  return {opt.layer_begin, end};
}

void validate_config(const model_config& c, const std::string& path) {
  try {
    c.validate();
  } catch (const std::runtime_error& e) {
    throw load_error(path + ": " + e.what());
  }
}

std::string layer_name(const char* prefix, int layer, const char* suffix) {
  return prefix + std::to_string(layer) + suffix;
}

// ---------------------------------------------------------------- slicing

/// A stored tensor seen as [rows, cols] (a vector is one row), rows contiguous.
struct stored_matrix {
  ggml_type type = ggml_type::f32;
  const uint8_t* data = nullptr;  ///< into the file map
  int64_t rows = 0;
  int64_t cols = 0;
  size_t row_bytes = 0;           ///< stored bytes of one row
  std::string what;               ///< "<file>: tensor '<name>'", for messages
};

/// Rows [begin, begin + count) decoded to f32 [count, cols]. `rope_heads` > 0 undoes the
/// llama interleaved-RoPE row permutation within each of that many whole heads of the slice.
tensor decode_rows(const stored_matrix& m, int64_t begin, int64_t count, int rope_heads) {
  tensor out({count, m.cols}, dtype::f32, backend_kind::cpu);
  const uint8_t* src = m.data + static_cast<size_t>(begin) * m.row_bytes;
  if (rope_heads <= 0) {
    dequantize_rows(m.type, src, out.f32(), count, m.cols);
    return out;
  }
  if (count % (2 * rope_heads) != 0)
    throw load_error(m.what + " has " + std::to_string(count) + " rows, not divisible into " +
                     std::to_string(rope_heads) + " heads of even size");
  std::vector<float> stored(static_cast<size_t>(count * m.cols));
  dequantize_rows(m.type, src, stored.data(), count, m.cols);
  unpermute_rope_rows(stored.data(), out.f32(), count, m.cols, rope_heads);
  return out;
}

/// Columns [begin, begin + count) of every row decoded to f32 [rows, count]; decodes a few
/// rows at a time, so the scratch stays small whatever the matrix.
tensor decode_cols(const stored_matrix& m, int64_t begin, int64_t count) {
  if (begin == 0 && count == m.cols) return decode_rows(m, 0, m.rows, 0);
  tensor out({m.rows, count}, dtype::f32, backend_kind::cpu);
  constexpr int64_t chunk = 64;
  std::vector<float> rows(static_cast<size_t>(std::min(chunk, m.rows) * m.cols));
  for (int64_t r = 0; r < m.rows; r += chunk) {
    const int64_t n = std::min(chunk, m.rows - r);
    dequantize_rows(m.type, m.data + static_cast<size_t>(r) * m.row_bytes, rows.data(), n, m.cols);
    for (int64_t i = 0; i < n; ++i)
      std::memcpy(out.f32() + (r + i) * count, rows.data() + i * m.cols + begin,
                  static_cast<size_t>(count) * sizeof(float));
  }
  return out;
}

/// Elements [begin, begin + count) of a vector (decoded whole: vectors are small), with the
/// same per-head RoPE un-permutation as decode_rows.
tensor decode_range(const stored_matrix& m, int64_t begin, int64_t count, int rope_heads) {
  std::vector<float> all(static_cast<size_t>(m.rows * m.cols));
  dequantize_rows(m.type, m.data, all.data(), m.rows, m.cols);
  tensor out({count}, dtype::f32, backend_kind::cpu);
  if (rope_heads <= 0) {
    std::memcpy(out.f32(), all.data() + begin, static_cast<size_t>(count) * sizeof(float));
    return out;
  }
  if (count % (2 * rope_heads) != 0)
    throw load_error(m.what + " has " + std::to_string(count) + " elements, not divisible into " +
                     std::to_string(rope_heads) + " heads of even size");
  unpermute_rope_rows(all.data() + begin, out.f32(), count, 1, rope_heads);
  return out;
}

/// Format-specific lookup: the stored tensor `name`, checked to have shape `want`.
using matrix_source = std::function<stored_matrix(const std::string& name, const shape_t& want)>;

/// Tensor name suffixes of one layer in a file format (after "<prefix><layer>").
struct layer_tensor_names {
  const char *attn_norm, *wq, *wk, *wv, *bq, *bk, *bv, *wo, *ffn_norm, *gate, *up, *down;
};

constexpr layer_tensor_names gguf_names{
    ".attn_norm.weight", ".attn_q.weight",   ".attn_k.weight", ".attn_v.weight",
    ".attn_q.bias",      ".attn_k.bias",     ".attn_v.bias",   ".attn_output.weight",
    ".ffn_norm.weight",  ".ffn_gate.weight", ".ffn_up.weight", ".ffn_down.weight"};

constexpr layer_tensor_names hf_names{
    ".input_layernorm.weight",  ".self_attn.q_proj.weight", ".self_attn.k_proj.weight",
    ".self_attn.v_proj.weight", ".self_attn.q_proj.bias",   ".self_attn.k_proj.bias",
    ".self_attn.v_proj.bias",   ".self_attn.o_proj.weight", ".post_attention_layernorm.weight",
    ".mlp.gate_proj.weight",    ".mlp.up_proj.weight",      ".mlp.down_proj.weight"};

/// Loads layer `i`'s share for tensor slice `s`: rows of the slice's query / kv heads and MLP
/// columns, columns of wo and w_down, whole norms. `permuted`: wq/wk (and bq/bk) are stored
/// permuted for interleaved RoPE (GGUF llama); whole heads are sliced, then un-permuted.
void load_layer(const matrix_source& src, const char* prefix, const layer_tensor_names& n, const model_config& c,
                const parallel::tensor_slice& s, bool permuted, int i, layer_weights& l) {
  const int64_t h = c.hidden, hd = c.head_dim, q = int64_t{c.n_heads} * hd, kv = int64_t{c.n_kv_heads} * hd;
  const int64_t q0 = s.head_begin * hd, qn = s.n_heads * hd, k0 = s.kv_head_begin * hd, kn = s.n_kv_heads * hd;
  const int q_rope = permuted ? s.n_heads : 0, k_rope = permuted ? s.n_kv_heads : 0;
  auto get = [&](const char* suffix, const shape_t& want) { return src(layer_name(prefix, i, suffix), want); };
  l.attn_norm = decode_range(get(n.attn_norm, {h}), 0, h, 0);
  l.wq = decode_rows(get(n.wq, {q, h}), q0, qn, q_rope);
  l.wk = decode_rows(get(n.wk, {kv, h}), k0, kn, k_rope);
  l.wv = decode_rows(get(n.wv, {kv, h}), k0, kn, 0);
  if (c.attn_bias) {
    // llama.cpp's converter permutes q/k biases along with the weights.
    l.bq = decode_range(get(n.bq, {q}), q0, qn, q_rope);
    l.bk = decode_range(get(n.bk, {kv}), k0, kn, k_rope);
    l.bv = decode_range(get(n.bv, {kv}), k0, kn, 0);
  }
  l.wo = decode_cols(get(n.wo, {h, q}), q0, qn);
  l.ffn_norm = decode_range(get(n.ffn_norm, {h}), 0, h, 0);
  l.w_gate = decode_rows(get(n.gate, {c.ffn, h}), s.ffn_begin, s.ffn_size, 0);
  l.w_up = decode_rows(get(n.up, {c.ffn, h}), s.ffn_begin, s.ffn_size, 0);
  l.w_down = decode_cols(get(n.down, {h, c.ffn}), s.ffn_begin, s.ffn_size);
}

/// The tensor slice `opt` asks for (everything when null); partition_error prefixed with
/// `path` when it cannot be made.
parallel::tensor_slice plan_slice(const model_config& c, const load_options* opt, const std::string& path) {
  try {
    return opt ? parallel::plan_tensor(c, opt->tp_size, opt->tp_rank, opt->allow_uneven_heads)
               : parallel::plan_tensor(c, 1, 0);
  } catch (const parallel::partition_error& e) {
    throw parallel::partition_error(path + ": " + e.what());
  }
}

// ---------------------------------------------------------------- GGUF: config

int gguf_dim(const gguf_file& g, const std::string& key, std::optional<int64_t> fallback = std::nullopt) {
  std::optional<int64_t> v = g.get_int(key);
  if (!v) v = fallback;
  if (!v) throw load_error(g.path() + ": missing metadata key '" + key + "'");
  if (*v <= 0 || *v > INT_MAX)
    throw load_error(g.path() + ": metadata key '" + key + "' has invalid value " + std::to_string(*v));
  return static_cast<int>(*v);
}

/// Llama 3.1 RoPE scaling. GGUF keeps the precomputed per-dimension factors in tensor
/// rope_freqs.weight rather than the HF parameters; we set kind llama3 and recover the
/// parameters on a best-effort basis: factor from <arch>.rope.scaling.factor or else the
/// largest stored factor (the low-frequency dimensions are divided by exactly `factor`),
/// the original context from <arch>.rope.scaling.original_context_length, and the
/// low/high frequency factors keep Llama 3.1's values (1 and 4), which GGUF does not store.
void gguf_rope_scaling(const gguf_file& g, const std::string& arch, model_config& c) {
  const gguf_tensor_info* freqs = g.find_tensor("rope_freqs.weight");
  if (!freqs) return;
  c.scaling.type = rope_scaling::kind::llama3;
  if (auto f = g.get_float(arch + ".rope.scaling.factor")) {
    c.scaling.factor = static_cast<float>(*f);
  } else if (can_dequantize(freqs->type)) {
    std::vector<float> v(static_cast<size_t>(freqs->numel()));
    dequantize_rows(freqs->type, freqs->data, v.data(), freqs->rows(), freqs->dims[0]);
    if (!v.empty()) c.scaling.factor = *std::max_element(v.begin(), v.end());
  }
  if (auto o = g.get_int(arch + ".rope.scaling.original_context_length"))
    c.scaling.original_max_position = static_cast<int>(*o);
}

model_config gguf_config(const gguf_file& g) {
  model_config c;
  const std::string arch = g.get_string("general.architecture").value_or("");
  if (arch == "llama") c.arch = architecture::llama;
  else if (arch == "qwen2") c.arch = architecture::qwen2;
  else if (arch.empty()) throw load_error(g.path() + ": missing metadata key 'general.architecture'");
  else throw load_error(g.path() + ": unsupported architecture '" + arch + "' (llama and qwen2 are supported)");
  c.name = g.get_string("general.name").value_or(fs::path(g.path()).stem().string());
  c.n_layers = gguf_dim(g, arch + ".block_count");
  c.hidden = gguf_dim(g, arch + ".embedding_length");
  c.ffn = gguf_dim(g, arch + ".feed_forward_length");
  c.n_heads = gguf_dim(g, arch + ".attention.head_count");
  c.n_kv_heads = gguf_dim(g, arch + ".attention.head_count_kv", c.n_heads);
  c.head_dim = gguf_dim(g, arch + ".attention.key_length", c.hidden / c.n_heads);
  const int rope_dim = gguf_dim(g, arch + ".rope.dimension_count", c.head_dim);
  if (rope_dim != c.head_dim)
    throw load_error(g.path() + ": " + arch + ".rope.dimension_count " + std::to_string(rope_dim) +
                     " differs from head_dim " + std::to_string(c.head_dim) + " (partial RoPE is not supported)");
  c.max_context = gguf_dim(g, arch + ".context_length");
  c.rope_theta = static_cast<float>(g.get_float(arch + ".rope.freq_base").value_or(10000.0));
  auto eps = g.get_float(arch + ".attention.layer_norm_rms_epsilon");
  if (!eps) throw load_error(g.path() + ": missing metadata key '" + arch + ".attention.layer_norm_rms_epsilon'");
  c.rms_eps = static_cast<float>(*eps);
  std::optional<int64_t> n_tokens;
  if (const auto* toks = g.get_strings("tokenizer.ggml.tokens")) n_tokens = static_cast<int64_t>(toks->size());
  c.vocab = gguf_dim(g, arch + ".vocab_size", n_tokens);
  gguf_rope_scaling(g, arch, c);
  c.tied_embeddings = g.find_tensor("output.weight") == nullptr;
  c.attn_bias = g.find_tensor("blk.0.attn_q.bias") != nullptr;
  validate_config(c, g.path());
  return c;
}

// ---------------------------------------------------------------- GGUF: tokenizer

/// A special-token id, or -1 when absent or outside the vocabulary (llama.cpp also
/// ignores such ids rather than failing).
int32_t gguf_token_id(const gguf_file& g, const std::string& key, size_t n_tokens) {
  auto v = g.get_int(key);
  if (!v || *v < 0 || static_cast<uint64_t>(*v) >= n_tokens) return -1;
  return static_cast<int32_t>(*v);
}

void gguf_eog_ids(const gguf_file& g, tokenizer_data& t) {
  auto add = [&t](int32_t id) {
    if (id >= 0 && std::find(t.eog_ids.begin(), t.eog_ids.end(), id) == t.eog_ids.end()) t.eog_ids.push_back(id);
  };
  add(t.eos_id);
  add(gguf_token_id(g, "tokenizer.ggml.eot_token_id", t.tokens.size()));
  add(gguf_token_id(g, "tokenizer.ggml.eom_token_id", t.tokens.size()));
  static const char* const eog_texts[] = {"<|eot_id|>",    "<|im_end|>", "<|end_of_text|>",
                                          "<|endoftext|>", "</s>",       "<|end\u2581of\u2581sentence|>",
                                          "<end_of_turn>"};
  for (size_t id = 0; id < t.tokens.size(); ++id) {
    if (t.types[id] != token_type::control && t.types[id] != token_type::user_defined) continue;
    for (const char* text : eog_texts)
      if (t.tokens[id] == text) add(static_cast<int32_t>(id));
  }
}

tokenizer_data gguf_tokenizer(const gguf_file& g) {
  tokenizer_data t;
  const auto model = g.get_string("tokenizer.ggml.model");
  if (!model) throw load_error(g.path() + ": missing metadata key 'tokenizer.ggml.model'");
  if (*model == "gpt2") t.kind = tokenizer_kind::bpe;
  else if (*model == "llama") t.kind = tokenizer_kind::spm;
  else throw load_error(g.path() + ": unsupported tokenizer model '" + *model + "' (gpt2 and llama are supported)");
  const auto* tokens = g.get_strings("tokenizer.ggml.tokens");
  if (!tokens || tokens->empty()) throw load_error(g.path() + ": missing metadata key 'tokenizer.ggml.tokens'");
  t.tokens = *tokens;
  const size_t n = t.tokens.size();
  if (const auto* scores = g.get_floats("tokenizer.ggml.scores")) {
    if (scores->size() != n)
      throw load_error(g.path() + ": tokenizer.ggml.scores has " + std::to_string(scores->size()) +
                       " entries for " + std::to_string(n) + " tokens");
    t.scores.assign(scores->begin(), scores->end());
  }
  t.types.assign(n, token_type::normal);
  if (const auto* types = g.get_ints("tokenizer.ggml.token_type")) {
    if (types->size() != n)
      throw load_error(g.path() + ": tokenizer.ggml.token_type has " + std::to_string(types->size()) +
                       " entries for " + std::to_string(n) + " tokens");
    for (size_t i = 0; i < n; ++i) {
      const int64_t v = (*types)[i];
      if (v < 0 || v > static_cast<int64_t>(token_type::byte))
        throw load_error(g.path() + ": tokenizer.ggml.token_type[" + std::to_string(i) + "] has invalid value " +
                         std::to_string(v));
      t.types[i] = static_cast<token_type>(v);
    }
  }
  if (const auto* merges = g.get_strings("tokenizer.ggml.merges")) t.merges = *merges;
  t.pre = g.get_string("tokenizer.ggml.pre").value_or("default");
  t.bos_id = gguf_token_id(g, "tokenizer.ggml.bos_token_id", n);
  t.eos_id = gguf_token_id(g, "tokenizer.ggml.eos_token_id", n);
  t.unk_id = gguf_token_id(g, "tokenizer.ggml.unknown_token_id", n);
  t.pad_id = gguf_token_id(g, "tokenizer.ggml.padding_token_id", n);
  const bool spm = t.kind == tokenizer_kind::spm;
  t.add_bos = g.get_bool("tokenizer.ggml.add_bos_token").value_or(spm);
  t.add_eos = g.get_bool("tokenizer.ggml.add_eos_token").value_or(false);
  t.add_space_prefix = g.get_bool("tokenizer.ggml.add_space_prefix").value_or(spm);
  t.chat_template = g.get_string("tokenizer.chat_template").value_or("");
  gguf_eog_ids(g, t);
  return t;
}

// ---------------------------------------------------------------- GGUF: weights

/// Tensor `name` of a GGUF file, checked to have shape `want` ([out, in] = reversed GGUF dims)
/// and a type this loader can dequantize.
stored_matrix gguf_matrix(const gguf_file& g, const std::string& name, const shape_t& want) {
  const gguf_tensor_info* ti = g.find_tensor(name);
  if (!ti) throw load_error(g.path() + ": missing tensor '" + name + "'");
  shape_t got;
  got.rank = static_cast<int>(ti->dims.size());
  for (int k = 0; k < got.rank; ++k) got.dims[static_cast<size_t>(k)] = ti->dims[ti->dims.size() - 1 - k];
  if (!(got == want))
    throw load_error(g.path() + ": tensor '" + name + "' has shape " + got.str() + ", expected " + want.str());
  if (!can_dequantize(ti->type))
    throw load_error(g.path() + ": tensor '" + name + "' has type " + ggml_type_name(ti->type) +
                     ", which this loader cannot dequantize");
  stored_matrix m;
  m.type = ti->type;
  m.data = static_cast<const uint8_t*>(ti->data);
  m.rows = ti->rows();
  m.cols = ti->dims[0];
  m.row_bytes = ggml_row_bytes(ti->type, ti->dims[0]);
  m.what = g.path() + ": tensor '" + name + "'";
  return m;
}

/// Dequantizes tensor `name` into an f32 tensor of shape `want` ([out, in] = reversed GGUF dims).
tensor gguf_tensor(const gguf_file& g, const std::string& name, const shape_t& want) {
  const stored_matrix m = gguf_matrix(g, name, want);
  tensor out(want, dtype::f32, backend_kind::cpu);
  dequantize_rows(m.type, m.data, out.f32(), m.rows, m.cols);
  return out;
}

void gguf_inventory(const gguf_file& g, loaded_model& m) {
  for (const auto& ti : g.tensors()) {
    ++m.tensor_types[ggml_type_name(ti.type)];
    m.n_params += ti.numel();
  }
}

loaded_model load_gguf(const std::string& path, const load_options* opt) {
  gguf_file g(path);
  loaded_model m;
  m.format = "gguf";
  m.path = path;
  m.config = gguf_config(g);
  m.tokenizer = gguf_tokenizer(g);
  gguf_inventory(g, m);
  const model_config& c = m.config;
  m.slice = plan_slice(c, opt, path);
  if (!opt) return m;
  const auto [begin, end] = layer_range(*opt, c.n_layers, path);
  m.weights.layers.resize(static_cast<size_t>(c.n_layers));
  if (opt->load_embeddings) m.weights.tok_embd = gguf_tensor(g, "token_embd.weight", {c.vocab, c.hidden});
  const matrix_source src = [&g](const std::string& name, const shape_t& want) {
    return gguf_matrix(g, name, want);
  };
  const bool permuted = c.arch == architecture::llama;
  for (int i = begin; i < end; ++i)
    load_layer(src, "blk.", gguf_names, c, m.slice, permuted, i, m.weights.layers[static_cast<size_t>(i)]);
  if (opt->load_head) {
    m.weights.out_norm = gguf_tensor(g, "output_norm.weight", {c.hidden});
    if (!c.tied_embeddings) m.weights.output = gguf_tensor(g, "output.weight", {c.vocab, c.hidden});
  }
  return m;
}

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

// ---------------------------------------------------------------- HF: weights

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

loaded_model load_any(const std::string& path, const load_options* opt) {
  std::error_code ec;
  const auto status = fs::status(path, ec);
  if (ec || !fs::exists(status)) throw load_error(path + ": no such file or directory");
  if (fs::is_directory(status)) return load_hf(path, opt);
  return load_gguf(path, opt);
}

/// A byte-level tokenizer (256 byte tokens, no merges, eos = 0) for a `random` model that
/// comes without tokenizer.json: prompts are then bytes, generated ids above 255 print as nothing.
tokenizer_data byte_tokenizer() {
  tokenizer_data t;
  t.kind = tokenizer_kind::bpe;
  for (int b = 0; b < 256; ++b) {
    t.tokens.push_back(utf8::byte_to_unicode(static_cast<uint8_t>(b)));
    t.types.push_back(token_type::normal);
  }
  t.eos_id = 0;
  t.eog_ids = {0};
  return t;
}

/// The `random` format: config (+ tokenizer) from `path` (a directory or its config.json).
loaded_model load_random(const std::string& path, const load_options& opt) {
  const std::string dir = fs::is_directory(path) ? path : fs::path(path).parent_path().string();
  loaded_model m;
  m.format = "random";
  m.path = dir;
  m.config = hf_config(dir);
  m.tokenizer = fs::exists(fs::path(dir) / "tokenizer.json") ? hf_tokenizer(dir) : byte_tokenizer();
  m.slice = plan_slice(m.config, &opt, dir);
  make_random_weights(m, opt);
  return m;
}

/// Whether `opt` asks for no weights at all (config and tokenizer only).
bool metadata_only(const load_options& opt) {
  return opt.layer_end == 0 && !opt.load_embeddings && !opt.load_head;
}

/// A directory with config.json and no safetensors: a model for the `random` format.
bool weightless_dir(const std::string& path) {
  std::error_code ec;
  if (!fs::is_directory(path, ec) || !fs::exists(fs::path(path) / "config.json", ec)) return false;
  for (const auto& e : fs::directory_iterator(path, ec))
    if (e.path().extension() == ".safetensors") return false;
  return true;
}

}  // namespace

loaded_model load_model(const std::string& path, const load_options& opt) {
  if (opt.random_weights || (metadata_only(opt) && weightless_dir(path))) return load_random(path, opt);
  loaded_model m = load_any(path, &opt);
  if (!(opt.device == device_ref{}) || opt.weight_type != dtype::f32)
    place_weights(m, opt.device, opt.weight_type, opt.progress);
  return m;
}

loaded_model load_model_metadata(const std::string& path) { return load_any(path, nullptr); }

}  // namespace troupe
