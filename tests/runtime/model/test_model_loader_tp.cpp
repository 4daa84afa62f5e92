// Tensor-parallel slicing at load: each rank's weights are exact rows / columns of the full load.
#include <catch2/catch.hpp>

#include <cstring>
#include <filesystem>
#include <string>

#include "runtime/model/model_loader.h"
#include "test_support.h"

using namespace troupe;
using Catch::Contains;

namespace {

std::string hf_dir() {
  auto p = test::cache_dir() / "models" / "SmolLM2-135M-Instruct-hf";
  if (!std::filesystem::exists(p / "config.json"))
    throw std::runtime_error("Hugging Face export missing at " + p.string() +
                             ": run tools/export_hf.py (tools/setup.sh --test does)");
  return p.string();
}

/// Layers [begin, end) only, without embeddings and head, as rank `rank` of `size`.
load_options layers(int begin, int end, int rank = 0, int size = 1, bool uneven = false) {
  load_options o;
  o.layer_begin = begin;
  o.layer_end = end;
  o.load_embeddings = false;
  o.load_head = false;
  o.tp_rank = rank;
  o.tp_size = size;
  o.allow_uneven_heads = uneven;
  return o;
}

bool same_bits(const tensor& a, const tensor& b) {
  return a.shape() == b.shape() && a.bytes() == b.bytes() &&
         (a.empty() || std::memcmp(a.f32(), b.f32(), a.bytes()) == 0);
}

/// Whether `part` is bitwise rows [begin, begin + count) of `full` (a matrix, or a vector's elements).
bool is_rows(const tensor& full, const tensor& part, int64_t begin, int64_t count) {
  const int64_t cols = full.shape().rank == 1 ? 1 : full.shape()[1];
  if (part.numel() != count * cols || part.shape()[0] != count) return false;
  return std::memcmp(part.f32(), full.f32() + begin * cols, static_cast<size_t>(count * cols) * sizeof(float)) == 0;
}

/// Whether `part` is bitwise columns [begin, begin + count) of matrix `full`.
bool is_cols(const tensor& full, const tensor& part, int64_t begin, int64_t count) {
  const int64_t rows = full.shape()[0], cols = full.shape()[1];
  if (!(part.shape() == shape_t{rows, count})) return false;
  for (int64_t r = 0; r < rows; ++r)
    if (std::memcmp(part.f32() + r * count, full.f32() + r * cols + begin, static_cast<size_t>(count) * sizeof(float)) != 0)
      return false;
  return true;
}

/// Checks every tensor of layer `i` of `part` against the full load for `part.slice`.
void check_layer_slice(const loaded_model& full, const loaded_model& part, int i) {
  const auto& s = part.slice;
  const int64_t hd = full.config.head_dim;
  const auto& f = full.weights.layers[static_cast<size_t>(i)];
  const auto& p = part.weights.layers[static_cast<size_t>(i)];
  INFO("layer " << i << ", rank " << s.rank << " of " << s.size);
  CHECK(same_bits(f.attn_norm, p.attn_norm));
  CHECK(same_bits(f.ffn_norm, p.ffn_norm));
  CHECK(is_rows(f.wq, p.wq, s.head_begin * hd, s.n_heads * hd));
  CHECK(is_rows(f.wk, p.wk, s.kv_head_begin * hd, s.n_kv_heads * hd));
  CHECK(is_rows(f.wv, p.wv, s.kv_head_begin * hd, s.n_kv_heads * hd));
  CHECK(is_cols(f.wo, p.wo, s.head_begin * hd, s.n_heads * hd));
  CHECK(is_rows(f.w_gate, p.w_gate, s.ffn_begin, s.ffn_size));
  CHECK(is_rows(f.w_up, p.w_up, s.ffn_begin, s.ffn_size));
  CHECK(is_cols(f.w_down, p.w_down, s.ffn_begin, s.ffn_size));
  CHECK(p.wo.shape() == shape_t{full.config.hidden, s.n_heads * hd});
  CHECK(p.w_down.shape() == shape_t{full.config.hidden, s.ffn_size});
}

void check_full_config(const loaded_model& m) {
  CHECK(m.config.n_heads == 9);
  CHECK(m.config.n_kv_heads == 3);
  CHECK(m.config.ffn == 1536);
}

}  // namespace

TEST_CASE("a whole-model load records the slice rank 0 of 1 holding everything", "[loader][tp][slow]") {
  const auto m = load_model(test::default_model(), layers(0, 1));
  CHECK(m.slice.rank == 0);
  CHECK(m.slice.size == 1);
  CHECK(m.slice.head_begin == 0);
  CHECK(m.slice.n_heads == 9);
  CHECK(m.slice.kv_head_begin == 0);
  CHECK(m.slice.n_kv_heads == 3);
  CHECK(m.slice.kv_group == 3);
  CHECK(m.slice.ffn_begin == 0);
  CHECK(m.slice.ffn_size == 1536);
  CHECK(m.weights.layers[0].wq.shape() == shape_t{576, 576});
  CHECK(load_model_metadata(test::default_model()).slice.n_heads == 9);
}

TEST_CASE("each of 3 tensor ranks of the GGUF model holds exact rows and columns of the full load",
          "[loader][tp][slow]") {
  const auto full = load_model(test::default_model(), layers(0, 2));
  for (int r = 0; r < 3; ++r) {
    const auto part = load_model(test::default_model(), layers(0, 2, r, 3));
    check_full_config(part);
    CHECK(part.slice.head_begin == 3 * r);
    CHECK(part.slice.n_heads == 3);
    CHECK(part.slice.n_kv_heads == 1);
    CHECK(part.weights.layers[0].wq.shape() == shape_t{192, 576});
    CHECK(part.weights.layers[0].wk.shape() == shape_t{64, 576});
    CHECK(part.weights.layers[0].w_gate.shape() == shape_t{512, 576});
    for (int i = 0; i < 2; ++i) check_layer_slice(full, part, i);
  }
}

TEST_CASE("2 uneven tensor ranks hold 5 and 4 heads with kv heads 0-1 and 1-2 of the full load",
          "[loader][tp][slow]") {
  const auto full = load_model(test::default_model(), layers(0, 2));
  const auto a = load_model(test::default_model(), layers(0, 2, 0, 2, true));
  const auto b = load_model(test::default_model(), layers(0, 2, 1, 2, true));
  CHECK(a.weights.layers[0].wq.shape() == shape_t{320, 576});
  CHECK(a.weights.layers[0].wk.shape() == shape_t{128, 576});
  CHECK(b.weights.layers[0].wq.shape() == shape_t{256, 576});
  CHECK(b.weights.layers[0].wk.shape() == shape_t{128, 576});
  CHECK(b.slice.kv_head_begin == 1);
  for (int i = 0; i < 2; ++i) {
    check_layer_slice(full, a, i);
    check_layer_slice(full, b, i);
  }
}

TEST_CASE("tensor 2 without uneven heads allowed is rejected naming the file and the heads", "[loader][tp][slow]") {
  const std::string path = test::default_model();
  CHECK_THROWS_AS(load_model(path, layers(0, 1, 0, 2)), parallel::partition_error);
  CHECK_THROWS_WITH(load_model(path, layers(0, 1, 1, 2)),
                    Contains(path) && Contains("tensor 2 does not divide the 9 attention heads"));
  CHECK_THROWS_WITH(load_model(path, layers(0, 1, 3, 3)), Contains(path) && Contains("tensor rank 3"));
}

TEST_CASE("a pipeline stage's layer range and a tensor rank combine", "[loader][tp][slow]") {
  load_options whole = layers(28, 30);
  whole.load_head = true;
  load_options opt = whole;
  opt.tp_rank = 2;
  opt.tp_size = 3;
  const auto full = load_model(test::default_model(), whole);
  const auto part = load_model(test::default_model(), opt);
  REQUIRE(part.weights.layers.size() == 30);
  for (int i = 0; i < 28; ++i) CHECK(part.weights.layers[static_cast<size_t>(i)].wq.empty());
  for (int i = 28; i < 30; ++i) check_layer_slice(full, part, i);
  CHECK(part.weights.tok_embd.empty());
  CHECK(same_bits(full.weights.out_norm, part.weights.out_norm));
  CHECK(part.slice.head_begin == 6);
  CHECK(part.slice.ffn_begin == 1024);
}

TEST_CASE("tensor ranks of the Hugging Face checkpoint hold exact rows and columns of its full load",
          "[loader][tp][slow]") {
  const std::string dir = hf_dir();
  const auto full = load_model(dir, layers(0, 2));
  CHECK(full.format == "safetensors");
  for (int r = 0; r < 3; ++r) {
    const auto part = load_model(dir, layers(0, 2, r, 3));
    check_full_config(part);
    for (int i = 0; i < 2; ++i) check_layer_slice(full, part, i);
  }
  const auto b = load_model(dir, layers(0, 1, 1, 2, true));
  CHECK(b.slice.n_heads == 4);
  check_layer_slice(full, b, 0);
}
