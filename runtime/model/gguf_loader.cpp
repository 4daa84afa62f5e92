// GGUF models: config and tokenizer from the file's metadata, weights from its tensors.
#include <algorithm>
#include <climits>
#include <filesystem>
#include <optional>
#include <vector>

#include "runtime/model/gguf.h"
#include "runtime/model/model_loader_detail.h"

namespace troupe::loader_detail {
namespace fs = std::filesystem;

namespace {

constexpr layer_tensor_names gguf_names{
    ".attn_norm.weight", ".attn_q.weight",   ".attn_k.weight", ".attn_v.weight",
    ".attn_q.bias",      ".attn_k.bias",     ".attn_v.bias",   ".attn_output.weight",
    ".ffn_norm.weight",  ".ffn_gate.weight", ".ffn_up.weight", ".ffn_down.weight"};

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

/// The sampling defaults llama.cpp's general.sampling.* keys hold (none when absent).
generation_defaults gguf_generation(const gguf_file& g) {
  static const std::vector<std::pair<std::string, std::string>> keys = {
      {"temperature", "general.sampling.temp"},          {"top_p", "general.sampling.top_p"},
      {"top_k", "general.sampling.top_k"},               {"min_p", "general.sampling.min_p"},
      {"repetition_penalty", "general.sampling.penalty_repeat"}};
  auto number = [&g](const std::string& key) -> std::optional<float> {
    if (auto v = g.get_float(key)) return static_cast<float>(*v);
    return std::nullopt;
  };
  generation_defaults d;
  d.temperature = number(keys[0].second);
  d.top_p = number(keys[1].second);
  if (auto k = g.get_int(keys[2].second)) {
    if (*k < INT_MIN || *k > INT_MAX)
      throw load_error(g.path() + ": " + keys[2].second + " has invalid value " + std::to_string(*k));
    d.top_k = static_cast<int>(*k);
  }
  d.min_p = number(keys[3].second);
  d.repetition_penalty = number(keys[4].second);
  check_generation(d, g.path(), keys);
  return d;
}

void gguf_inventory(const gguf_file& g, loaded_model& m) {
  for (const auto& ti : g.tensors()) {
    ++m.tensor_types[ggml_type_name(ti.type)];
    m.n_params += ti.numel();
  }
}

}  // namespace

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

generation_defaults gguf_generation(const std::string& path) { return gguf_generation(gguf_file(path)); }

}  // namespace troupe::loader_detail
