// Model loading: the layer slicing both formats share, the `random` format and the entry
// points. The formats themselves are in gguf_loader.cpp and hf_loader.cpp.
#include "runtime/model/model_loader.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <functional>
#include <vector>

#include "kernels/base/dequant.h"
#include "runtime/model/gguf.h"
#include "runtime/model/model.h"
#include "runtime/model/model_loader_detail.h"
#include "runtime/text/utf8.h"

namespace troupe {
namespace fs = std::filesystem;

namespace loader_detail {

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

void check_generation(const generation_defaults& g, const std::string& file,
                      const std::vector<std::pair<std::string, std::string>>& keys) {
  const auto [field, why] = first_problem(g);
  if (field.empty()) return;
  std::string key = field;
  for (const auto& [f, k] : keys)
    if (f == field) key = k;
  throw load_error(file + ": " + key + " " + why);
}

namespace {

std::string layer_name(const char* prefix, int layer, const char* suffix) {
  return prefix + std::to_string(layer) + suffix;
}

// ---------------------------------------------------------------- slicing

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

}  // namespace

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

}  // namespace loader_detail

namespace {

using loader_detail::hf_config;
using loader_detail::hf_generation;
using loader_detail::hf_tokenizer;
using loader_detail::load_gguf;
using loader_detail::load_hf;
using loader_detail::plan_slice;

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

generation_defaults read_generation_defaults(const std::string& path) {
  const std::string file = resolve_model_path(path);
  std::error_code ec;
  const auto status = fs::status(file, ec);
  if (ec || !fs::exists(status)) throw load_error(file + ": no such file or directory");
  if (fs::is_directory(status)) return hf_generation(file);
  if (fs::path(file).filename() == "config.json") return hf_generation(fs::path(file).parent_path().string());
  const generation_defaults shipped = loader_detail::gguf_generation(file);
  // The default model's GGUF holds no general.sampling.* keys: it gets its HF release's.
  return path == "default" ? default_model_generation().overlaid_with(shipped) : shipped;
}

}  // namespace troupe
