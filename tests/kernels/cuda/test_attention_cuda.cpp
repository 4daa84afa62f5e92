// The CUDA kv_write and paged attention (decode with split-K, flash-style prefill) against
// the CPU reference (needs a GPU; skipped without one).
#ifdef TROUPE_HAVE_CUDA_KERNELS
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "cuda_test_util.h"
#include "kernels/kernel_test_util.h"
#include "kernels/attention.h"

using namespace troupe;
using namespace troupe::test;

namespace {

/// One sequence of a test batch: its kv length after the step and its query rows.
struct seq_spec {
  int ctx;
  int n_query;
};

/// The heads of a test: local query heads, local kv heads, head_dim and the TP mapping.
struct head_spec {
  int n_heads, n_kv, head_dim;
  int q_head_offset = 0, kv_group = 0, kv_head_offset = 0;
};

/// Fills both caches through kv_write on each backend and runs paged_attention on each;
/// returns the largest relative difference of the outputs.
double attention_error(std::mt19937& rng, const std::vector<seq_spec>& seqs, head_spec h,
                       dtype t) {
  const int bs = 16;
  int n_blocks = 3, max_blocks = 1, rows = 0, total_ctx = 0;
  for (const auto& s : seqs) {
    n_blocks += (s.ctx + bs - 1) / bs;
    max_blocks = std::max(max_blocks, (s.ctx + bs - 1) / bs + 1);
    rows += s.n_query;
    total_ctx += s.ctx;
  }
  std::vector<int32_t> ids(static_cast<size_t>(n_blocks));
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), rng);
  std::vector<int32_t> qs{0}, cl, bt, slots;
  size_t next = 0;
  for (const auto& s : seqs) {
    qs.push_back(qs.back() + s.n_query);
    cl.push_back(s.ctx);
    const int own = (s.ctx + bs - 1) / bs;
    for (int b = 0; b < max_blocks; ++b) bt.push_back(b < own ? ids[next + static_cast<size_t>(b)] : -1);
    for (int p = 0; p < s.ctx; ++p) slots.push_back(ids[next + static_cast<size_t>(p / bs)] * bs + p % bs);
    next += static_cast<size_t>(own);
  }
  const int64_t kv_row = int64_t{h.n_kv} * h.head_dim;
  const auto k = round_to(random_floats(rng, total_ctx * kv_row), t);
  const auto v = round_to(random_floats(rng, total_ctx * kv_row), t);
  const auto q = round_to(random_floats(rng, int64_t{rows} * h.n_heads * h.head_dim), t);
  const shape_t cache{n_blocks, bs, h.n_kv, h.head_dim}, kv{total_ctx, h.n_kv, h.head_dim};
  const shape_t qshape{rows, h.n_heads, h.head_dim};
  const int64_t n_seqs = static_cast<int64_t>(seqs.size());
  const float scale = 1.0f / std::sqrt(static_cast<float>(h.head_dim));
  auto batch_of = [&](const tensor& tq, const tensor& tc, const tensor& tb) {
    kernels::attention_batch b;
    b.n_seqs = static_cast<int>(n_seqs);
    b.max_blocks = max_blocks;
    b.block_size = bs;
    b.query_start = tq.view();
    b.context_len = tc.view();
    b.block_tables = tb.view();
    b.q_head_offset = h.q_head_offset;
    b.kv_group = h.kv_group;
    b.kv_head_offset = h.kv_head_offset;
    return b;
  };
  // CPU reference
  tensor hkc(cache, dtype::f32, backend_kind::cpu), hvc(cache, dtype::f32, backend_kind::cpu);
  tensor hk = f32_tensor(kv, k), hv = f32_tensor(kv, v), hs = i32_tensor({total_ctx}, slots);
  kernels::kv_write(cpu_ctx(), hkc.view(), hvc.view(), hk.view(), hv.view(), hs.view());
  tensor hq = f32_tensor(qshape, q), ho(qshape, dtype::f32, backend_kind::cpu);
  tensor hqs = i32_tensor({n_seqs + 1}, qs), hcl = i32_tensor({n_seqs}, cl);
  tensor hbt = i32_tensor({n_seqs, max_blocks}, bt);
  kernels::paged_attention(cpu_ctx(2), ho.view(), hq.view(), hkc.view(), hvc.view(),
                           batch_of(hqs, hcl, hbt), scale);
  // CUDA
  tensor dkc(cache, t, backend_kind::cuda), dvc(cache, t, backend_kind::cuda);
  tensor dk = to_device(k, kv, t), dv = to_device(v, kv, t), ds = to_device_i32(slots, {total_ctx});
  kernels::kv_write(cuda_ctx(), dkc.view(), dvc.view(), dk.view(), dv.view(), ds.view());
  tensor dq = to_device(q, qshape, t), d_out(qshape, t, backend_kind::cuda);
  tensor dqs = to_device_i32(qs, {n_seqs + 1}), dcl = to_device_i32(cl, {n_seqs});
  tensor dbt = to_device_i32(bt, {n_seqs, max_blocks});
  kernels::paged_attention(cuda_ctx(), d_out.view(), dq.view(), dkc.view(), dvc.view(),
                           batch_of(dqs, dcl, dbt), scale);
  return max_rel_error(to_host(d_out), values(ho));
}

}  // namespace

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
