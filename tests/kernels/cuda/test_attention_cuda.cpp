// The CUDA kv_write and paged attention (decode with split-K, flash-style prefill) against
// the CPU reference (needs a GPU; skipped without one).
#ifdef TROUPE_HAVE_CUDA_KERNELS
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "attention_test_util.h"

using namespace troupe;
using namespace troupe::test;


TEST_CASE("CUDA decode attention with GQA and split-K matches the CPU at contexts 1, 769 and 5125",
          "[cuda]") {
  if (!cuda_device_or_skip()) return;
  std::mt19937 rng(19);
  const std::vector<seq_spec> seqs{{1, 1}, {769, 1}, {5125, 1}, {16, 1}, {513, 1}};
  for (dtype t : float_types()) {
    CAPTURE(dtype_name(t));
    CHECK(attention_error(rng, seqs, {6, 2, 64}, t) <= tolerance(t));
    CHECK(attention_error(rng, seqs, {4, 4, 80}, t) <= tolerance(t));
    CHECK(attention_error(rng, seqs, {2, 1, 1}, t) <= tolerance(t));
  }
}

TEST_CASE("CUDA grouped decode attention matches the CPU for GQA groups 1 to 8 and head_dim 64 to 256",
          "[cuda]") {
  if (!cuda_device_or_skip()) return;
  std::mt19937 rng(23);
  const std::vector<seq_spec> seqs{{1, 1}, {769, 1}, {5125, 1}, {129, 1}};
  for (dtype t : float_types())
    for (head_spec h : {head_spec{8, 2, 128}, head_spec{8, 1, 64}, head_spec{4, 4, 128},
                        head_spec{2, 1, 256}, head_spec{16, 1, 64}}) {
      CAPTURE(dtype_name(t), h.n_heads, h.n_kv, h.head_dim);
      CHECK(attention_error(rng, seqs, h, t) <= tolerance(t));
    }
}

TEST_CASE("CUDA tensor-core decode attention (a batch that fills the GPU) matches the CPU at awkward contexts",
          "[cuda]") {
  // 40 rows x the kv heads x the splits exceed the SM count (132 on an H200), so f16 and
  // bf16 at head_dim 64 and 128 run attention_decode_mma.cu; f32 and head_dim 80 run the
  // CUDA-core kernel on the same batch.
  if (!cuda_device_or_skip()) return;
  std::mt19937 rng(29);
  const int ctxs[] = {1, 769, 5125, 16, 64, 65, 255, 256, 257, 513};
  std::vector<seq_spec> seqs;
  for (int i = 0; i < 40; ++i) seqs.push_back({ctxs[i % 10], 1});
  for (dtype t : float_types())
    for (head_spec h : {head_spec{32, 8, 128}, head_spec{16, 2, 64}, head_spec{8, 8, 128}, head_spec{12, 4, 80}}) {
      CAPTURE(dtype_name(t), h.n_heads, h.n_kv, h.head_dim);
      CHECK(attention_error(rng, seqs, h, t) <= tolerance(t));
    }
}

TEST_CASE("CUDA decode attention gives a row bitwise the same alone and in a batch of 9 when batch-invariant",
          "[cuda]") {
  // Without the mode the grouped decode kernel picks its block size from the grid (a small
  // batch gets 256 threads), which sums a row in another order: equal within tolerance only.
  if (!cuda_device_or_skip()) return;
  std::mt19937 rng(24);
  const std::vector<seq_spec> batch{{700, 1}, {1, 1},   {129, 1}, {5125, 1}, {16, 1},
                                    {300, 1}, {2048, 1}, {77, 1},  {640, 1}};
  for (dtype t : float_types())
    for (head_spec h : {head_spec{8, 2, 128}, head_spec{4, 4, 80}}) {
      CAPTURE(dtype_name(t), h.n_heads, h.head_dim);
      const size_t row = static_cast<size_t>(h.n_heads) * h.head_dim;
      const auto alone = attention_run(rng, {batch[0]}, h, t, 99, true);
      const auto in_batch = attention_run(rng, batch, h, t, 99, true);
      REQUIRE(alone.cuda.size() == row);
      CHECK(std::equal(alone.cuda.begin(), alone.cuda.end(), in_batch.cuda.begin()));
      CHECK(max_rel_error(alone.cuda, alone.cpu) <= tolerance(t));
      const auto fast_alone = attention_run(rng, {batch[0]}, h, t, 99);
      const auto fast_batch = attention_run(rng, batch, h, t, 99);
      const std::vector<float> fast_row(fast_batch.cuda.begin(), fast_batch.cuda.begin() + static_cast<long>(row));
      CHECK(max_rel_error(fast_alone.cuda, fast_alone.cpu) <= tolerance(t));
      CHECK(max_rel_error(fast_row, fast_alone.cpu) <= tolerance(t));
    }
}

TEST_CASE("CUDA prefill attention matches the CPU for full, chunked and mixed-in decode rows",
          "[cuda]") {
  if (!cuda_device_or_skip()) return;
  std::mt19937 rng(20);
  const std::vector<seq_spec> seqs{{77, 77}, {100, 37}, {769, 1}, {40, 0}, {33, 2}};
  for (dtype t : float_types())
    for (head_spec h : {head_spec{4, 4, 80}, head_spec{6, 2, 128}, head_spec{2, 1, 1}}) {
      CAPTURE(dtype_name(t), h.n_heads, h.n_kv, h.head_dim);
      CHECK(attention_error(rng, seqs, h, t) <= tolerance(t));
    }
}

TEST_CASE("CUDA attention of a mixed batch with its decode rows first (decode kernels, then flash prefill) "
          "matches the CPU", "[cuda]") {
  if (!cuda_device_or_skip()) return;
  std::mt19937 rng(22);
  // Four leading decode rows (contexts 1 to 5125), then chunks and a late single row; and
  // 40 leading decode rows, enough for the tensor-core decode kernel's grid.
  std::vector<seq_spec> many(40, seq_spec{300, 1});
  many.push_back({200, 64});
  many.push_back({90, 90});
  for (const auto& seqs : {std::vector<seq_spec>{{300, 1}, {5125, 1}, {1, 1}, {769, 1}, {77, 77}, {100, 37}, {40, 1}},
                           many})
    for (dtype t : float_types())
      for (head_spec h : {head_spec{8, 2, 128}, head_spec{4, 4, 64}, head_spec{6, 2, 80}}) {
        CAPTURE(seqs.size(), dtype_name(t), h.n_heads, h.n_kv, h.head_dim);
        CHECK(attention_error(rng, seqs, h, t) <= tolerance(t));
      }
}

TEST_CASE("CUDA prefill attention over a 1100-token prompt matches the CPU", "[cuda]") {
  if (!cuda_device_or_skip()) return;
  std::mt19937 rng(21);
  for (dtype t : {dtype::f32, dtype::bf16}) {
    CAPTURE(dtype_name(t));
    CHECK(attention_error(rng, {{1100, 1100}}, {2, 1, 128}, t) <= tolerance(t));
  }
}

TEST_CASE("CUDA attention follows a tensor-parallel slice's head mapping in decode and prefill",
          "[cuda]") {
  if (!cuda_device_or_skip()) return;
  std::mt19937 rng(22);
  head_spec slice{2, 1, 64};
  slice.q_head_offset = 2;
  slice.kv_group = 2;
  slice.kv_head_offset = 1;
  CHECK(attention_error(rng, {{600, 1}, {5, 1}}, slice, dtype::f32) <= tolerance(dtype::f32));
  CHECK(attention_error(rng, {{60, 60}, {5, 1}}, slice, dtype::f32) <= tolerance(dtype::f32));
}

TEST_CASE("CUDA paged_attention rejects a head mapping outside the cache's kv heads", "[cuda]") {
  if (!cuda_device_or_skip()) return;
  tensor dq({1, 4, 8}, dtype::f32, backend_kind::cuda), d_out({1, 4, 8}, dtype::f32, backend_kind::cuda);
  tensor dkc({1, 16, 1, 8}, dtype::f32, backend_kind::cuda), dvc({1, 16, 1, 8}, dtype::f32, backend_kind::cuda);
  tensor dqs = to_device_i32({0, 1}, {2}), dcl = to_device_i32({1}, {1}), dbt = to_device_i32({0}, {1, 1});
  kernels::attention_batch b;
  b.n_seqs = 1;
  b.max_blocks = 1;
  b.query_start = dqs.view();
  b.context_len = dcl.view();
  b.block_tables = dbt.view();
  b.kv_group = 2;
  CHECK_THROWS_WITH(kernels::paged_attention(cuda_ctx(), d_out.view(), dq.view(), dkc.view(),
                                             dvc.view(), b, 1.0f),
                    Catch::Contains("map outside the 1 kv heads"));
}
#endif
