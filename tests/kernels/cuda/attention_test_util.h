#pragma once
/// The attention tests' harness: a random paged batch (shuffled block ids) run through
/// kv_write and paged_attention on the CPU and on CUDA.
#ifdef TROUPE_HAVE_CUDA_KERNELS
#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "cuda_test_util.h"
#include "kernels/kernel_test_util.h"
#include "kernels/attention.h"

namespace troupe::test {

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

/// The outputs of one attention case: the CPU reference (f32) and the CUDA result (as
/// floats), both [rows, n_heads, head_dim] flattened.
struct attention_outputs {
  std::vector<float> cpu, cuda;
  std::vector<int32_t> counts;  ///< the split counts after the CUDA runs (with split_counts)
  bool repeats_equal = true;    ///< with split_counts: two more runs on the same counts gave the same bits
};

/// Fills both caches through kv_write on each backend and runs paged_attention on each.
/// Block ids are shuffled with `rng`; the data too, unless `data_seed` is set: then each
/// sequence's k, v and q come from a generator seeded by the seed and its spec, so a
/// sequence gets the same data in any batch. `batch_invariant` sets the CUDA op context's
/// batch-invariant mode; `workspace` gives the CUDA run a decode workspace of
/// kernels::decode_workspace_floats for the batch; `split_counts` zeroed split counts too
/// (attention_batch::split_counts), and then runs the op twice more on them.
inline attention_outputs attention_run(std::mt19937& rng, const std::vector<seq_spec>& seqs, head_spec h,
                                       dtype t, uint32_t data_seed = 0, bool batch_invariant = false,
                                       bool workspace = false, bool split_counts = false) {
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
  std::vector<float> k, v, q;
  if (data_seed == 0) {
    k = round_to(random_floats(rng, total_ctx * kv_row), t);
    v = round_to(random_floats(rng, total_ctx * kv_row), t);
    q = round_to(random_floats(rng, int64_t{rows} * h.n_heads * h.head_dim), t);
  } else {
    for (const auto& s : seqs) {  // each sequence's data from its own seed: equal specs, equal data
      std::mt19937 own(data_seed + static_cast<uint32_t>(s.ctx) * 7919u + static_cast<uint32_t>(s.n_query));
      const auto append = [&](std::vector<float>& to, int64_t n) {
        const auto r = round_to(random_floats(own, static_cast<size_t>(n)), t);
        to.insert(to.end(), r.begin(), r.end());
      };
      append(k, s.ctx * kv_row);
      append(v, s.ctx * kv_row);
      append(q, int64_t{s.n_query} * h.n_heads * h.head_dim);
    }
  }
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
    while (b.decode_rows < b.n_seqs && seqs[static_cast<size_t>(b.decode_rows)].n_query == 1) ++b.decode_rows;
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
  kernels::op_context ctx = cuda_ctx();
  ctx.batch_invariant = batch_invariant;
  kernels::attention_batch db = batch_of(dqs, dcl, dbt);
  tensor dws;
  if (workspace) {
    const int64_t n = kernels::decode_workspace_floats(ctx, rows, h.n_heads, h.n_kv, h.head_dim, max_blocks * bs);
    if (n > 0) dws = tensor({n}, dtype::f32, backend_kind::cuda);
    db.workspace = dws.view();
  }
  tensor dcounts;
  if (split_counts) {
    dcounts = to_device_i32(std::vector<int32_t>(static_cast<size_t>(rows) * h.n_kv, 0), {int64_t{rows} * h.n_kv});
    db.split_counts = dcounts.view();
  }
  kernels::paged_attention(ctx, d_out.view(), dq.view(), dkc.view(), dvc.view(), db, scale);
  attention_outputs o{values(ho), to_host(d_out), {}, true};
  if (split_counts) {
    for (int again = 0; again < 2; ++again) {  // the counts must be back at zero for the next launch
      kernels::paged_attention(ctx, d_out.view(), dq.view(), dkc.view(), dvc.view(), db, scale);
      o.repeats_equal = o.repeats_equal && to_host(d_out) == o.cuda;
    }
    o.counts = to_host_i32(dcounts);
  }
  return o;
}

/// The largest relative difference of the CUDA output from the CPU reference.
inline double attention_error(std::mt19937& rng, const std::vector<seq_spec>& seqs, head_spec h, dtype t) {
  const auto o = attention_run(rng, seqs, h, t);
  return max_rel_error(o.cuda, o.cpu);
}


}  // namespace troupe::test
#endif
