// The tensor-core prefill attention (kernels/cuda/flash_prefill.cu, f16/bf16 at head_dim
// 64 and 128) against the CPU reference, and its batch and chunk invariance (needs a GPU;
// skipped without one). Shapes it does not handle (f32, head_dim 80) must still match
// through the general kernel.
#ifdef TROUPE_HAVE_CUDA_KERNELS
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "cuda_test_util.h"
#include "kernels/attention.h"
#include "kernels/kernel_test_util.h"

using namespace troupe;
using namespace troupe::test;

namespace {

/// One sequence: kv length after the step, query rows (its last n_query positions), and
/// the seed of its data (q, k and v of every position), so that the same sequence in two
/// batches, or chunked differently, sees the same values.
struct seq_spec {
  int ctx, n_query;
  unsigned seed;
};

/// Local query heads, local kv heads, head_dim, the TP mapping and the cache block size.
struct head_spec {
  int n_heads, n_kv, head_dim;
  int q_head_offset = 0, kv_group = 0, kv_head_offset = 0;
  int block_size = 16;
};

/// A paged batch in host memory, every value already rounded to the tested type; cache
/// slots no sequence owns hold NaN, so a stray read shows in the output.
struct paged_case {
  head_spec h{};
  dtype t = dtype::f32;
  int n_blocks = 3, max_blocks = 1, m = 0;
  std::vector<float> k, v;  // [n_blocks, block_size, n_kv, head_dim]
  std::vector<float> q;     // [m, n_heads, head_dim]
  std::vector<int32_t> query_start, context_len, block_tables;  // [n + 1], [n], [n, max_blocks]
};

/// Builds the batch of `seqs` with blocks at shuffled ids; q values in [-q_amp, q_amp].
paged_case make_case(std::mt19937& rng, const std::vector<seq_spec>& seqs, head_spec h, dtype t,
                     float q_amp = 1.0f) {
  paged_case c;
  c.h = h;
  c.t = t;
  const int bs = h.block_size, hd = h.head_dim;
  for (const auto& s : seqs) {
    c.n_blocks += (s.ctx + bs - 1) / bs;
    c.max_blocks = std::max(c.max_blocks, (s.ctx + bs - 1) / bs + 1);
  }
  std::vector<int32_t> ids(static_cast<size_t>(c.n_blocks));
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), rng);
  const size_t kv_row = static_cast<size_t>(h.n_kv) * hd;
  const size_t q_row = static_cast<size_t>(h.n_heads) * hd;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  c.k.assign(static_cast<size_t>(c.n_blocks) * bs * kv_row, nan);
  c.v = c.k;
  c.query_start = {0};
  size_t next = 0;
  for (const auto& s : seqs) {
    std::mt19937 data(s.seed);
    const auto k = round_to(random_floats(data, s.ctx * kv_row), t);
    const auto v = round_to(random_floats(data, s.ctx * kv_row), t);
    const auto q = round_to(random_floats(data, s.ctx * q_row, -q_amp, q_amp), t);
    for (int p = 0; p < s.ctx; ++p) {
      const size_t block = static_cast<size_t>(ids[next + static_cast<size_t>(p / bs)]);
      const size_t slot = block * bs + p % bs;
      std::copy_n(k.begin() + p * kv_row, kv_row, c.k.begin() + slot * kv_row);
      std::copy_n(v.begin() + p * kv_row, kv_row, c.v.begin() + slot * kv_row);
    }
    c.q.insert(c.q.end(), q.end() - s.n_query * q_row, q.end());
    const int own = (s.ctx + bs - 1) / bs;
    for (int b = 0; b < c.max_blocks; ++b)
      c.block_tables.push_back(b < own ? ids[next + static_cast<size_t>(b)] : -1);
    next += static_cast<size_t>(own);
    c.query_start.push_back(c.query_start.back() + s.n_query);
    c.context_len.push_back(s.ctx);
  }
  c.m = c.query_start.back();
  return c;
}

/// Runs paged_attention on the batch (CPU in f32, or CUDA in the case's type); returns the
/// output [m, n_heads, head_dim] as floats.
std::vector<float> run(const paged_case& c, bool on_cuda) {
  const int64_t n = static_cast<int64_t>(c.context_len.size());
  const shape_t cache{c.n_blocks, c.h.block_size, c.h.n_kv, c.h.head_dim};
  const shape_t qs{c.m, c.h.n_heads, c.h.head_dim};
  auto floats = [&](const std::vector<float>& v, shape_t s) {
    return on_cuda ? to_device(v, s, c.t) : f32_tensor(s, v);
  };
  auto ints = [&](const std::vector<int32_t>& v, shape_t s) {
    return on_cuda ? to_device_i32(v, s) : i32_tensor(s, v);
  };
  const tensor kc = floats(c.k, cache), vc = floats(c.v, cache), q = floats(c.q, qs);
  const tensor tq = ints(c.query_start, {n + 1}), tc = ints(c.context_len, {n});
  const tensor tb = ints(c.block_tables, {n, c.max_blocks});
  tensor out(qs, on_cuda ? c.t : dtype::f32, on_cuda ? backend_kind::cuda : backend_kind::cpu);
  kernels::attention_batch b;
  b.n_seqs = static_cast<int>(n);
  b.max_blocks = c.max_blocks;
  b.block_size = c.h.block_size;
  b.query_start = tq.view();
  b.context_len = tc.view();
  b.block_tables = tb.view();
  b.q_head_offset = c.h.q_head_offset;
  b.kv_group = c.h.kv_group;
  b.kv_head_offset = c.h.kv_head_offset;
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.h.head_dim));
  kernels::paged_attention(on_cuda ? cuda_ctx() : cpu_ctx(4), out.view(), q.view(), kc.view(),
                           vc.view(), b, scale);
  return on_cuda ? to_host(out) : values(out);
}

/// The largest relative difference between the CUDA and the CPU outputs of a batch.
double flash_error(std::mt19937& rng, const std::vector<seq_spec>& seqs, head_spec h, dtype t,
                   float q_amp = 1.0f) {
  const paged_case c = make_case(rng, seqs, h, t, q_amp);
  return max_rel_error(run(c, true), run(c, false));
}

/// Rows [from, from + n) of an output with `row` values per query row.
std::vector<float> rows(const std::vector<float>& out, int from, int n, int row) {
  return std::vector<float>(out.begin() + static_cast<int64_t>(from) * row,
                            out.begin() + static_cast<int64_t>(from + n) * row);
}

const std::vector<dtype> half_types{dtype::f16, dtype::bf16};

}  // namespace

TEST_CASE("CUDA flash prefill matches the CPU for prompts of 1, 63, 64, 65 and 769 tokens "
          "at head_dim 64 and 128 with GQA groups 1, 4 and 8",
          "[cuda]") {
  if (!cuda_device_or_skip()) return;
  std::mt19937 rng(40);
  const std::vector<seq_spec> seqs{{1, 1, 1}, {63, 63, 2}, {64, 64, 3}, {65, 65, 4}, {769, 769, 5}};
  for (dtype t : half_types)
    for (head_spec h : {head_spec{8, 2, 128}, head_spec{8, 1, 64}, head_spec{4, 4, 64},
                        head_spec{4, 4, 128}}) {
      CAPTURE(dtype_name(t), h.n_heads, h.n_kv, h.head_dim);
      CHECK(flash_error(rng, seqs, h, t) <= tolerance(t));
    }
}

TEST_CASE("CUDA flash prefill over a 2100-token prompt matches the CPU", "[cuda]") {
  if (!cuda_device_or_skip()) return;
  std::mt19937 rng(41);
  for (dtype t : half_types) {
    CAPTURE(dtype_name(t));
    CHECK(flash_error(rng, {{2100, 2100, 6}}, {2, 1, 128}, t) <= tolerance(t));
    CHECK(flash_error(rng, {{2100, 2100, 7}}, {1, 1, 64}, t) <= tolerance(t));
  }
}

TEST_CASE("CUDA flash prefill matches the CPU for chunked prefill, decode rows and an empty "
          "sequence in one batch, at block sizes 16 and 5",
          "[cuda]") {
  if (!cuda_device_or_skip()) return;
  std::mt19937 rng(42);
  const std::vector<seq_spec> seqs{{300, 100, 8}, {769, 1, 9}, {40, 0, 10}, {33, 2, 11},
                                   {130, 130, 12}, {5, 1, 13}, {200, 129, 14}};
  for (dtype t : half_types)
    for (int bs : {16, 5}) {
      head_spec gqa{8, 2, 128}, mha{4, 4, 64};
      gqa.block_size = mha.block_size = bs;
      CAPTURE(dtype_name(t), bs);
      CHECK(flash_error(rng, seqs, gqa, t) <= tolerance(t));
      CHECK(flash_error(rng, seqs, mha, t) <= tolerance(t));
    }
}

TEST_CASE("CUDA flash prefill matches the CPU when large scores make the softmax peaked",
          "[cuda]") {
  if (!cuda_device_or_skip()) return;
  std::mt19937 rng(43);
  for (dtype t : half_types) {
    CAPTURE(dtype_name(t));
    CHECK(flash_error(rng, {{300, 300, 15}, {90, 20, 16}}, {4, 2, 128}, t, 8.0f) <= tolerance(t));
    CHECK(flash_error(rng, {{300, 300, 17}}, {2, 2, 64}, t, 8.0f) <= tolerance(t));
  }
}

TEST_CASE("CUDA flash prefill follows a tensor-parallel slice's head mapping", "[cuda]") {
  if (!cuda_device_or_skip()) return;
  std::mt19937 rng(44);
  head_spec slice{4, 2, 128};  // local heads 0-3 are global heads 2-5, kv heads 1-2 of 4
  slice.q_head_offset = 2;
  slice.kv_group = 2;
  slice.kv_head_offset = 1;
  head_spec slice64{2, 1, 64};
  slice64.q_head_offset = 2;
  slice64.kv_group = 2;
  slice64.kv_head_offset = 1;
  for (dtype t : half_types) {
    CAPTURE(dtype_name(t));
    CHECK(flash_error(rng, {{150, 150, 18}, {70, 3, 19}}, slice, t) <= tolerance(t));
    CHECK(flash_error(rng, {{150, 150, 20}, {70, 3, 21}}, slice64, t) <= tolerance(t));
  }
}

TEST_CASE("CUDA prefill attention in f32 or at head_dim 80 (outside the flash kernel) still "
          "matches the CPU",
          "[cuda]") {
  if (!cuda_device_or_skip()) return;
  std::mt19937 rng(45);
  const std::vector<seq_spec> seqs{{100, 100, 22}, {65, 30, 23}};
  CHECK(flash_error(rng, seqs, {4, 2, 128}, dtype::f32) <= tolerance(dtype::f32));
  CHECK(flash_error(rng, seqs, {4, 2, 64}, dtype::f32) <= tolerance(dtype::f32));
  for (dtype t : half_types) {
    CAPTURE(dtype_name(t));
    CHECK(flash_error(rng, seqs, {4, 2, 80}, t) <= tolerance(t));
  }
}

TEST_CASE("CUDA flash prefill gives a row the same bits alone or batched with other sequences",
          "[cuda]") {
  if (!cuda_device_or_skip()) return;
  std::mt19937 rng(46);
  for (dtype t : half_types)
    for (head_spec h : {head_spec{8, 2, 128}, head_spec{4, 4, 64}}) {
      CAPTURE(dtype_name(t), h.head_dim);
      const int row = h.n_heads * h.head_dim;
      const auto alone = run(make_case(rng, {{300, 300, 24}}, h, t), true);
      const auto batched =
          run(make_case(rng, {{50, 1, 25}, {300, 300, 24}, {90, 64, 26}}, h, t), true);
      CHECK(rows(batched, 1, 300, row) == alone);
    }
}

TEST_CASE("CUDA flash prefill gives a row the same bits in a whole prompt and in a later chunk",
          "[cuda]") {
  if (!cuda_device_or_skip()) return;
  std::mt19937 rng(47);
  for (dtype t : half_types)
    for (head_spec h : {head_spec{8, 2, 128}, head_spec{4, 4, 64}}) {
      CAPTURE(dtype_name(t), h.head_dim);
      const int row = h.n_heads * h.head_dim;
      const auto whole = run(make_case(rng, {{300, 300, 27}}, h, t), true);
      const auto chunk = run(make_case(rng, {{300, 100, 27}, {20, 20, 28}}, h, t), true);
      CHECK(rows(chunk, 0, 100, row) == rows(whole, 200, 100, row));
    }
}
#endif
