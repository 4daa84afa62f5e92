// GGUF parsing and GGUF model loading, on small files written by the test itself.
#include <catch2/catch.hpp>

#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "runtime/model/generation_defaults.h"
#include "runtime/model/gguf.h"
#include "runtime/model/model_loader.h"
#include "test_support.h"

using namespace troupe;
using Catch::Contains;

namespace {

/// Builds a GGUF file in memory: header, metadata, tensor infos, aligned data.
class gguf_writer {
 public:
  uint32_t version = 3;
  std::string magic = "GGUF";
  uint64_t alignment = 32;

  void kv_raw(const std::string& key, uint32_t type, const std::vector<uint8_t>& payload) {
    ++n_kv_;
    put_str(kv_, key);
    put(kv_, type);
    kv_.insert(kv_.end(), payload.begin(), payload.end());
  }
  template <class T>
  void kv(const std::string& key, uint32_t type, T v) {
    kv_raw(key, type, bytes_of(v));
  }
  void kv_u32(const std::string& key, uint32_t v) { kv(key, 4, v); }
  void kv_f32(const std::string& key, float v) { kv(key, 6, v); }
  void kv_bool(const std::string& key, bool v) { kv(key, 7, static_cast<uint8_t>(v)); }
  void kv_str(const std::string& key, const std::string& v) {
    std::vector<uint8_t> p;
    put_str(p, v);
    kv_raw(key, 8, p);
  }
  void kv_strs(const std::string& key, const std::vector<std::string>& v) {
    std::vector<uint8_t> p;
    put(p, uint32_t{8});
    put(p, static_cast<uint64_t>(v.size()));
    for (const auto& s : v) put_str(p, s);
    kv_raw(key, 9, p);
  }
  void kv_i32s(const std::string& key, const std::vector<int32_t>& v) {
    std::vector<uint8_t> p;
    put(p, uint32_t{5});
    put(p, static_cast<uint64_t>(v.size()));
    for (int32_t x : v) put(p, x);
    kv_raw(key, 9, p);
  }
  /// Adds a tensor with raw stored bytes; dims are GGUF order (ne[0] first).
  void tensor(const std::string& name, std::vector<uint64_t> dims, uint32_t type, const std::vector<uint8_t>& data) {
    ++n_tensors_;
    put_str(infos_, name);
    put(infos_, static_cast<uint32_t>(dims.size()));
    for (uint64_t d : dims) put(infos_, d);
    put(infos_, type);
    while (data_.size() % alignment) data_.push_back(0);
    put(infos_, static_cast<uint64_t>(data_.size()));
    data_.insert(data_.end(), data.begin(), data.end());
  }
  void tensor_f32(const std::string& name, std::vector<uint64_t> dims, const std::vector<float>& v) {
    std::vector<uint8_t> b(v.size() * 4);
    std::memcpy(b.data(), v.data(), b.size());
    tensor(name, std::move(dims), 0, b);
  }
  std::vector<uint8_t> bytes() const {
    std::vector<uint8_t> out(magic.begin(), magic.end());
    put(out, version);
    put(out, n_tensors_);
    put(out, n_kv_);
    out.insert(out.end(), kv_.begin(), kv_.end());
    out.insert(out.end(), infos_.begin(), infos_.end());
    while (out.size() % alignment) out.push_back(0);
    out.insert(out.end(), data_.begin(), data_.end());
    return out;
  }
  std::string write(const std::string& dir_name, const std::string& file = "model.gguf") const {
    auto path = (test::scratch_dir(dir_name) / file).string();
    auto b = bytes();
    std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
    return path;
  }

  template <class T>
  static std::vector<uint8_t> bytes_of(T v) {
    std::vector<uint8_t> b(sizeof(T));
    std::memcpy(b.data(), &v, sizeof(T));
    return b;
  }

 private:
  template <class T>
  static void put(std::vector<uint8_t>& out, T v) {
    auto b = bytes_of(v);
    out.insert(out.end(), b.begin(), b.end());
  }
  static void put_str(std::vector<uint8_t>& out, const std::string& s) {
    put(out, static_cast<uint64_t>(s.size()));
    out.insert(out.end(), s.begin(), s.end());
  }
  uint64_t n_kv_ = 0, n_tensors_ = 0;
  std::vector<uint8_t> kv_, infos_, data_;
};

/// Writes `b` to `path` (replacing the file).
void write_bytes(const std::string& path, const std::vector<uint8_t>& b) {
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

std::vector<float> iota_values(size_t n, float scale) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = scale * static_cast<float>(i);
  return v;
}

/// The HF-to-GGUF permutation written independently of the loader, as numpy does it:
/// w.reshape(n_head, 2, hd/2, cols).swapaxes(1, 2).
std::vector<float> numpy_permute(const std::vector<float>& w, int64_t rows, int64_t cols, int64_t n_head) {
  const int64_t hd = rows / n_head;
  std::vector<float> out(w.size());
  int64_t dst = 0;
  for (int64_t h = 0; h < n_head; ++h)
    for (int64_t i = 0; i < hd / 2; ++i)      // axis 1 after swap: hd/2
      for (int64_t j = 0; j < 2; ++j, ++dst)  // axis 2 after swap: 2
        for (int64_t c = 0; c < cols; ++c) out[static_cast<size_t>(dst * cols + c)] = w[static_cast<size_t>((h * hd + j * (hd / 2) + i) * cols + c)];
  return out;
}

/// Q8_0 bytes for `rows` x `cols` (cols % 32 == 0): scale 1, quant = (row + col) % 7 - 3.
std::vector<uint8_t> q8_0_bytes(int64_t rows, int64_t cols) {
  std::vector<uint8_t> b;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t blk = 0; blk < cols / 32; ++blk) {
      b.push_back(0x00);
      b.push_back(0x3C);
      for (int64_t k = 0; k < 32; ++k) b.push_back(static_cast<uint8_t>(static_cast<int8_t>((r + blk * 32 + k) % 7 - 3)));
    }
  return b;
}

constexpr int64_t k_hidden = 64, k_heads = 4, k_kv_heads = 2, k_head_dim = 16, k_ffn = 96, k_layers = 2, k_vocab = 8;

/// A complete tiny model of architecture `arch` (llama: wq/wk stored permuted; qwen2: biases).
gguf_writer tiny_model(const std::string& arch = "llama", bool with_output = false) {
  gguf_writer w;
  w.kv_str("general.architecture", arch);
  w.kv_str("general.name", "tiny");
  w.kv_u32(arch + ".block_count", k_layers);
  w.kv_u32(arch + ".context_length", 256);
  w.kv_u32(arch + ".embedding_length", k_hidden);
  w.kv_u32(arch + ".feed_forward_length", k_ffn);
  w.kv_u32(arch + ".attention.head_count", k_heads);
  w.kv_u32(arch + ".attention.head_count_kv", k_kv_heads);
  w.kv_f32(arch + ".rope.freq_base", 500000.0f);
  w.kv_f32(arch + ".attention.layer_norm_rms_epsilon", 1e-6f);
  w.kv_str("tokenizer.ggml.model", "gpt2");
  w.kv_str("tokenizer.ggml.pre", "qwen2");
  w.kv_strs("tokenizer.ggml.tokens", {"<unk>", "<s>", "</s>", "<|im_end|>", "<|eot_id|>", "a", "b", "ab"});
  w.kv_i32s("tokenizer.ggml.token_type", {3, 3, 3, 3, 1, 1, 1, 1});
  w.kv_strs("tokenizer.ggml.merges", {"a b"});
  w.kv_u32("tokenizer.ggml.bos_token_id", 1);
  w.kv_u32("tokenizer.ggml.eos_token_id", 2);
  w.kv_str("tokenizer.chat_template", "{{ messages }}");
  const int64_t q = k_heads * k_head_dim, kv = k_kv_heads * k_head_dim;
  w.tensor("token_embd.weight", {k_hidden, k_vocab}, 8, q8_0_bytes(k_vocab, k_hidden));
  w.tensor_f32("output_norm.weight", {k_hidden}, iota_values(k_hidden, 0.5f));
  if (with_output) w.tensor_f32("output.weight", {k_hidden, k_vocab}, iota_values(k_hidden * k_vocab, 0.25f));
  const bool permute = arch == "llama";
  for (int i = 0; i < k_layers; ++i) {
    const std::string p = "blk." + std::to_string(i) + ".";
    auto wq = iota_values(static_cast<size_t>(q * k_hidden), 1.0f + i);
    auto wk = iota_values(static_cast<size_t>(kv * k_hidden), -1.0f - i);
    w.tensor_f32(p + "attn_norm.weight", {k_hidden}, iota_values(k_hidden, 1.0f));
    w.tensor_f32(p + "attn_q.weight", {k_hidden, static_cast<uint64_t>(q)}, permute ? numpy_permute(wq, q, k_hidden, k_heads) : wq);
    w.tensor_f32(p + "attn_k.weight", {k_hidden, static_cast<uint64_t>(kv)}, permute ? numpy_permute(wk, kv, k_hidden, k_kv_heads) : wk);
    w.tensor_f32(p + "attn_v.weight", {k_hidden, static_cast<uint64_t>(kv)}, iota_values(kv * k_hidden, 2.0f));
    if (!permute) {
      w.tensor_f32(p + "attn_q.bias", {static_cast<uint64_t>(q)}, iota_values(q, 3.0f));
      w.tensor_f32(p + "attn_k.bias", {static_cast<uint64_t>(kv)}, iota_values(kv, 4.0f));
      w.tensor_f32(p + "attn_v.bias", {static_cast<uint64_t>(kv)}, iota_values(kv, 5.0f));
    }
    w.tensor_f32(p + "attn_output.weight", {static_cast<uint64_t>(q), k_hidden}, iota_values(q * k_hidden, 0.1f));
    w.tensor_f32(p + "ffn_norm.weight", {k_hidden}, iota_values(k_hidden, 1.0f));
    w.tensor_f32(p + "ffn_gate.weight", {k_hidden, k_ffn}, iota_values(k_hidden * k_ffn, 0.01f));
    w.tensor_f32(p + "ffn_up.weight", {k_hidden, k_ffn}, iota_values(k_hidden * k_ffn, 0.02f));
    w.tensor_f32(p + "ffn_down.weight", {k_ffn, k_hidden}, iota_values(k_hidden * k_ffn, 0.03f));
  }
  return w;
}

bool equals(const tensor& t, const std::vector<float>& v) {
  return static_cast<size_t>(t.numel()) == v.size() && std::memcmp(t.f32(), v.data(), v.size() * sizeof(float)) == 0;
}

}  // namespace

TEST_CASE("GGUF metadata of every value type parses back to the written values", "[loader][gguf]") {
  gguf_writer w;
  w.kv("u8", 0, uint8_t{200});
  w.kv("i8", 1, int8_t{-100});
  w.kv("u16", 2, uint16_t{60000});
  w.kv("i16", 3, int16_t{-30000});
  w.kv_u32("u32", 4000000000u);
  w.kv("i32", 5, int32_t{-2000000000});
  w.kv_f32("f32", 1.5f);
  w.kv_bool("b", true);
  w.kv_str("s", "hello");
  w.kv("u64", 10, uint64_t{1} << 40);
  w.kv("i64", 11, int64_t{-(int64_t{1} << 40)});
  w.kv("f64", 12, 2.25);
  w.kv_strs("strs", {"x", "", "yz"});
  w.kv_i32s("ints", {1, -2, 3});
  // An array of two arrays of uint8: [[7], [8, 9]].
  // Payload: element type 9 (array), count 2; then each inner array: type 0 (uint8), count, values.
  w.kv_raw("nested", 9, {9, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0,
                        0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 7,
                        0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 8, 9});
  w.tensor_f32("t", {4, 2}, {1, 2, 3, 4, 5, 6, 7, 8});
  const gguf_file g(w.write("gguf-types"));
  CHECK(g.version() == 3);
  CHECK(g.get_int("u8") == 200);
  CHECK(g.get_int("i8") == -100);
  CHECK(g.get_int("u16") == 60000);
  CHECK(g.get_int("i16") == -30000);
  CHECK(g.get_int("u32") == 4000000000ll);
  CHECK(g.get_int("i32") == -2000000000);
  CHECK(g.get_float("f32") == 1.5);
  CHECK(g.get_bool("b") == true);
  CHECK(g.get_string("s") == std::string("hello"));
  CHECK(g.get_int("u64") == (int64_t{1} << 40));
  CHECK(g.get_int("i64") == -(int64_t{1} << 40));
  CHECK(g.get_float("f64") == 2.25);
  CHECK(*g.get_strings("strs") == std::vector<std::string>{"x", "", "yz"});
  CHECK(*g.get_ints("ints") == std::vector<int64_t>{1, -2, 3});
  const gguf_value* nested = g.find("nested");
  REQUIRE(nested);
  REQUIRE(nested->arrays.size() == 2);
  CHECK(nested->arrays[0].ints == std::vector<int64_t>{7});
  CHECK(nested->arrays[1].ints == std::vector<int64_t>{8, 9});
  CHECK_FALSE(g.get_int("absent"));
  REQUIRE(g.tensors().size() == 1);
  const auto* t = g.find_tensor("t");
  REQUIRE(t);
  CHECK(t->dims == std::vector<int64_t>{4, 2});
  CHECK(t->bytes == 32);
  CHECK(g.data_offset() % 32 == 0);
  float v[8];
  std::memcpy(v, t->data, sizeof v);
  CHECK(v[0] == 1.0f);
  CHECK(v[7] == 8.0f);
}

TEST_CASE("a GGUF metadata value read with the wrong type names the key and both types", "[loader][gguf]") {
  gguf_writer w;
  w.kv_str("general.architecture", "llama");
  w.kv_u32("n", 3);
  const auto path = w.write("gguf-wrong-type");
  const gguf_file g(path);
  CHECK_THROWS_WITH(g.get_int("general.architecture"),
                    Contains(path) && Contains("'general.architecture' has type string, expected an integer"));
  CHECK_THROWS_WITH(g.get_strings("n"), Contains("'n' has type uint32, expected an array of strings"));
}

TEST_CASE("general.alignment places the GGUF data section on its boundary", "[loader][gguf]") {
  gguf_writer w;
  w.alignment = 256;
  w.kv_u32("general.alignment", 256);
  w.tensor_f32("a", {3}, {1, 2, 3});
  w.tensor_f32("b", {2}, {4, 5});
  const gguf_file g(w.write("gguf-align"));
  CHECK(g.alignment() == 256);
  CHECK(g.data_offset() % 256 == 0);
  REQUIRE(g.find_tensor("b"));
  CHECK(g.find_tensor("b")->offset == 256);
  float v;
  std::memcpy(&v, g.find_tensor("b")->data, 4);
  CHECK(v == 4.0f);
}

TEST_CASE("a file without the GGUF magic is rejected with the file name", "[loader][gguf]") {
  auto w = tiny_model();
  w.magic = "GGML";
  const auto path = w.write("gguf-magic");
  CHECK_THROWS_WITH(gguf_file(path), Contains(path) && Contains("not a GGUF file (bad magic)"));
}

TEST_CASE("GGUF versions other than 2 and 3 are rejected, version 2 is read", "[loader][gguf]") {
  auto w = tiny_model();
  w.version = 4;
  const auto path = w.write("gguf-version");
  CHECK_THROWS_WITH(gguf_file(path), Contains(path) && Contains("unsupported GGUF version 4"));
  w.version = 1;
  CHECK_THROWS_WITH(gguf_file(w.write("gguf-version")), Contains("unsupported GGUF version 1"));
  w.version = 2;
  CHECK(gguf_file(w.write("gguf-version")).version() == 2);
}

TEST_CASE("an unknown tensor type id is rejected naming the tensor", "[loader][gguf]") {
  gguf_writer w;
  w.tensor("blk.0.attn_q.weight", {32}, 77, std::vector<uint8_t>(64));
  const auto path = w.write("gguf-type-id");
  CHECK_THROWS_WITH(gguf_file(path),
                    Contains(path) && Contains("tensor 'blk.0.attn_q.weight' has unknown tensor type id 77"));
}

TEST_CASE("an unknown metadata value type is rejected naming the key", "[loader][gguf]") {
  gguf_writer w;
  w.kv_raw("weird.key", 42, {1, 2, 3, 4});
  CHECK_THROWS_WITH(gguf_file(w.write("gguf-value-type")), Contains("'weird.key' has unknown value type 42"));
}

TEST_CASE("a GGUF file cut anywhere is rejected as truncated, naming the file", "[loader][gguf]") {
  const auto w = tiny_model();
  const auto full = w.bytes();
  const auto path = w.write("gguf-cut");
  const size_t data_offset = gguf_file(path).data_offset();
  // Every byte of the header, then every 7th byte of metadata and tensor infos (odd strides hit
  // every field kind), then a sample of cuts inside the data.
  for (size_t cut = 0; cut < full.size(); cut += (cut < 64 ? 1 : cut < data_offset ? 7 : 4099)) {
    INFO("cut at byte " << cut << " of " << full.size());
    write_bytes(path, std::vector<uint8_t>(full.begin(), full.begin() + static_cast<long>(cut)));
    CHECK_THROWS_WITH(gguf_file(path), Contains(path) && Contains("truncated while reading"));
  }
}

TEST_CASE("a tensor whose data lies past the end of the file is reported by name", "[loader][gguf]") {
  gguf_writer w;
  w.tensor_f32("a", {8}, iota_values(8, 1.0f));
  auto b = w.bytes();
  b.resize(b.size() - 4);
  const auto path = (test::scratch_dir("gguf-data-cut") / "model.gguf").string();
  write_bytes(path, b);
  CHECK_THROWS_WITH(gguf_file(path), Contains(path) && Contains("truncated while reading tensor data of 'a'"));
}

TEST_CASE("the RoPE un-permutation inverts llama.cpp's permutation", "[loader][gguf]") {
  const int64_t rows = 3 * 8, cols = 5;
  const auto hf = iota_values(static_cast<size_t>(rows * cols), 1.0f);
  const auto stored = numpy_permute(hf, rows, cols, 3);
  std::vector<float> ours(hf.size()), back(hf.size());
  permute_rope_rows(hf.data(), ours.data(), rows, cols, 3);
  CHECK(ours == stored);
  unpermute_rope_rows(stored.data(), back.data(), rows, cols, 3);
  CHECK(back == hf);
  // Head 1, HF row 1 * 8 + 4 (second half, i = 0) is stored right after row 8 (first half, i = 0).
  CHECK(stored[static_cast<size_t>(9 * cols)] == hf[static_cast<size_t>(12 * cols)]);
  CHECK_THROWS_AS(permute_rope_rows(hf.data(), ours.data(), rows, cols, 5), std::invalid_argument);
}

TEST_CASE("a tiny llama GGUF loads with its config, HF-order wq/wk and its tokenizer", "[loader][gguf]") {
  const auto m = load_model(tiny_model("llama").write("gguf-tiny-llama"));
  const auto& c = m.config;
  CHECK(m.format == "gguf");
  CHECK(c.arch == architecture::llama);
  CHECK(c.name == "tiny");
  CHECK(c.n_layers == k_layers);
  CHECK(c.hidden == k_hidden);
  CHECK(c.n_heads == k_heads);
  CHECK(c.n_kv_heads == k_kv_heads);
  CHECK(c.head_dim == k_head_dim);
  CHECK(c.ffn == k_ffn);
  CHECK(c.vocab == k_vocab);
  CHECK(c.max_context == 256);
  CHECK(c.rope_theta == 500000.0f);
  CHECK(c.rms_eps == 1e-6f);
  CHECK(c.tied_embeddings);
  CHECK_FALSE(c.attn_bias);
  CHECK(c.scaling.type == rope_scaling::kind::none);
  REQUIRE(m.weights.layers.size() == 2);
  const int64_t q = k_heads * k_head_dim, kv = k_kv_heads * k_head_dim;
  CHECK(equals(m.weights.layers[1].wq, iota_values(static_cast<size_t>(q * k_hidden), 2.0f)));
  CHECK(equals(m.weights.layers[1].wk, iota_values(static_cast<size_t>(kv * k_hidden), -2.0f)));
  CHECK(m.weights.layers[0].w_down.shape() == shape_t{k_hidden, k_ffn});
  CHECK(m.weights.layers[0].bq.empty());
  CHECK(m.weights.tok_embd.shape() == shape_t{k_vocab, k_hidden});
  CHECK(m.weights.tok_embd.f32()[3 * k_hidden + 40] == static_cast<float>((3 + 40) % 7 - 3));
  CHECK(m.weights.output.empty());
  CHECK(m.weights.out_norm.f32()[2] == 1.0f);
  CHECK(m.tensor_types.at("F32") == 19);
  CHECK(m.tensor_types.at("Q8_0") == 1);
  CHECK(m.n_params == k_vocab * k_hidden + k_hidden +
                          k_layers * (2 * k_hidden + 2 * q * k_hidden + 2 * kv * k_hidden + 3 * k_ffn * k_hidden));
  const auto& t = m.tokenizer;
  CHECK(t.kind == tokenizer_kind::bpe);
  CHECK(t.pre == "qwen2");
  CHECK(t.tokens.size() == 8);
  CHECK(t.types[0] == token_type::control);
  CHECK(t.merges == std::vector<std::string>{"a b"});
  CHECK(t.bos_id == 1);
  CHECK(t.eos_id == 2);
  CHECK(t.unk_id == -1);
  CHECK(t.eog_ids == std::vector<int32_t>{2, 3});  // <|eot_id|> is a normal token here, so not an EOG
  CHECK_FALSE(t.add_bos);
  CHECK_FALSE(t.add_space_prefix);
  CHECK(t.chat_template == "{{ messages }}");
}

TEST_CASE("a tiny qwen2 GGUF keeps wq unpermuted and loads the q/k/v biases", "[loader][gguf]") {
  const auto m = load_model(tiny_model("qwen2", true).write("gguf-tiny-qwen2"));
  CHECK(m.config.arch == architecture::qwen2);
  CHECK(m.config.attn_bias);
  CHECK_FALSE(m.config.tied_embeddings);
  const auto& l = m.weights.layers[0];
  CHECK(equals(l.wq, iota_values(static_cast<size_t>(k_heads * k_head_dim * k_hidden), 1.0f)));
  CHECK(equals(l.bq, iota_values(k_heads * k_head_dim, 3.0f)));
  CHECK(equals(l.bv, iota_values(k_kv_heads * k_head_dim, 5.0f)));
  CHECK(m.weights.output.shape() == shape_t{k_vocab, k_hidden});
}

TEST_CASE("load options materialize only the requested layers, embeddings and head", "[loader][gguf]") {
  const auto path = tiny_model().write("gguf-range");
  load_options o;
  o.layer_begin = 1;
  o.layer_end = 2;
  o.load_embeddings = false;
  o.load_head = false;
  const auto m = load_model(path, o);
  REQUIRE(m.weights.layers.size() == 2);
  CHECK(m.weights.layers[0].wq.empty());
  CHECK(m.weights.layers[0].attn_norm.empty());
  CHECK_FALSE(m.weights.layers[1].wq.empty());
  CHECK(m.weights.tok_embd.empty());
  CHECK(m.weights.out_norm.empty());
  o.layer_end = 3;
  CHECK_THROWS_WITH(load_model(path, o), Contains(path) && Contains("layer range [1, 3)"));
  const auto meta = load_model_metadata(path);
  CHECK(meta.config.n_layers == 2);
  CHECK(meta.weights.layers.empty());
  CHECK(meta.tokenizer.tokens.size() == 8);
}

TEST_CASE("an unsupported GGUF architecture is rejected by name", "[loader][gguf]") {
  const auto path = tiny_model("gpt2").write("gguf-arch");
  CHECK_THROWS_WITH(load_model(path), Contains(path) && Contains("unsupported architecture 'gpt2'"));
}

TEST_CASE("a GGUF model missing a tensor or with a wrong shape names the tensor", "[loader][gguf]") {
  auto w = tiny_model();
  w.tensor_f32("blk.5.extra", {4}, iota_values(4, 1.0f));
  CHECK_NOTHROW(load_model(w.write("gguf-extra")));
  gguf_writer broken;
  broken.kv_str("general.architecture", "llama");
  broken.kv_u32("llama.block_count", 1);
  broken.kv_u32("llama.context_length", 16);
  broken.kv_u32("llama.embedding_length", 32);
  broken.kv_u32("llama.feed_forward_length", 32);
  broken.kv_u32("llama.attention.head_count", 2);
  broken.kv_f32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
  broken.kv_u32("llama.vocab_size", 4);
  broken.kv_str("tokenizer.ggml.model", "llama");
  broken.kv_strs("tokenizer.ggml.tokens", {"<unk>", "<s>", "</s>", "x"});
  broken.tensor_f32("token_embd.weight", {32, 5}, iota_values(160, 1.0f));
  const auto path = broken.write("gguf-missing");
  CHECK_THROWS_WITH(load_model(path), Contains(path) && Contains("tensor 'token_embd.weight' has shape [5, 32], expected [4, 32]"));
  load_options o;
  o.load_embeddings = false;
  CHECK_THROWS_WITH(load_model(path, o), Contains(path) && Contains("missing tensor 'blk.0.attn_norm.weight'"));
  const auto meta = load_model_metadata(path);
  CHECK(meta.tokenizer.kind == tokenizer_kind::spm);
  CHECK(meta.tokenizer.add_bos);
  CHECK(meta.tokenizer.add_space_prefix);
  CHECK(meta.config.n_kv_heads == 2);
  CHECK(meta.config.rope_theta == 10000.0f);
}

TEST_CASE("a missing GGUF metadata key is named in the error", "[loader][gguf]") {
  gguf_writer w;
  w.kv_str("general.architecture", "qwen2");
  w.kv_u32("qwen2.block_count", 1);
  const auto path = w.write("gguf-missing-key");
  CHECK_THROWS_WITH(load_model_metadata(path), Contains(path) && Contains("missing metadata key 'qwen2.embedding_length'"));
}

TEST_CASE("rope_freqs.weight marks Llama 3 RoPE scaling with its largest factor", "[loader][gguf]") {
  auto w = tiny_model();
  std::vector<float> freqs(k_head_dim / 2, 1.0f);
  freqs[6] = 8.0f;
  freqs[7] = 8.0f;
  w.tensor_f32("rope_freqs.weight", {k_head_dim / 2}, freqs);
  w.kv_u32("llama.rope.scaling.original_context_length", 8192);
  const auto c = load_model_metadata(w.write("gguf-rope-freqs")).config;
  CHECK(c.scaling.type == rope_scaling::kind::llama3);
  CHECK(c.scaling.factor == 8.0f);
  CHECK(c.scaling.original_max_position == 8192);
}

TEST_CASE("a GGUF file with corrupted metadata bytes loads or fails with load_error, never otherwise",
          "[loader][gguf]") {
  const auto w = tiny_model();
  const auto full = w.bytes();
  const auto path = w.write("gguf-corrupt");
  const size_t data_offset = gguf_file(path).data_offset();
  int rejected = 0;
  for (size_t at = 0; at < data_offset; at += 5) {
    INFO("byte " << at << " set to 0xff");
    auto b = full;
    b[at] = 0xff;
    write_bytes(path, b);
    try {
      load_model(path);
    } catch (const load_error& e) {
      CHECK_THAT(e.what(), Contains(path));
      ++rejected;
    }
  }
  CHECK(rejected > 0);
}

TEST_CASE("general.sampling.* metadata gives the model's sampling defaults", "[loader][gguf][generation]") {
  gguf_writer w;
  w.kv_str("general.architecture", "llama");
  w.kv_f32("general.sampling.temp", 0.6f);
  w.kv_f32("general.sampling.top_p", 0.95f);
  w.kv("general.sampling.top_k", 5, int32_t{40});
  w.kv_f32("general.sampling.min_p", 0.05f);
  w.kv_f32("general.sampling.penalty_repeat", 1.1f);
  const generation_defaults g = read_generation_defaults(w.write("gguf-sampling"));
  CHECK(g.temperature == 0.6f);
  CHECK(g.top_p == 0.95f);
  CHECK(g.top_k == 40);
  CHECK(g.min_p == 0.05f);
  CHECK(g.repetition_penalty == 1.1f);
  CHECK_FALSE(g.max_tokens);
}

TEST_CASE("a general.sampling value out of range names the file and the GGUF key", "[loader][gguf][generation]") {
  gguf_writer w;
  w.kv_str("general.architecture", "llama");
  w.kv_f32("general.sampling.top_p", 1.5f);
  const auto path = w.write("gguf-sampling-bad");
  CHECK_THROWS_WITH(read_generation_defaults(path),
                    Contains(path) && Contains("general.sampling.top_p must be in (0, 1], got 1.5"));
  gguf_writer text;
  text.kv_str("general.sampling.temp", "warm");
  CHECK_THROWS_WITH(read_generation_defaults(text.write("gguf-sampling-text")), Contains("general.sampling.temp"));
}
