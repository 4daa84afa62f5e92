// CPU KV-cache write and paged attention. Every (query row, head) pair is computed on its
// own, with a fixed reduction order: q·k as 8-lane FMAs over head_dim then one horizontal
// sum; softmax in float with the max subtracted, its sum and the weighted sum of V both
// accumulated in kv-position order. So a row's output never depends on its batch.
#include "kernels/attention.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cpu/op_checks.h"

namespace troupe::kernels::cpu {
namespace {

/// Checks a cache pair [n_blocks, block_size, n_kv_heads, head_dim].
void check_caches(const char* op, tensor_view k_cache, tensor_view v_cache) {
  require_host(op, "k_cache", k_cache);
  require_host(op, "v_cache", v_cache);
  require_rank(op, "k_cache", k_cache, 4);
  require_shape(op, "v_cache", v_cache, k_cache.shape);
}

/// dot(a, b) over n floats: 8-lane FMAs (a zero-filled masked tail), one horizontal sum.
float dot(const float* a, const float* b, int64_t n) {
  __m256 acc = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc);
  if (i < n) {
    alignas(32) int32_t mask[8];
    for (int l = 0; l < 8; ++l) mask[l] = i + l < n ? -1 : 0;
    const __m256i mk = _mm256_load_si256(reinterpret_cast<const __m256i*>(mask));
    acc = _mm256_fmadd_ps(_mm256_maskload_ps(a + i, mk), _mm256_maskload_ps(b + i, mk), acc);
  }
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

/// The validated shape of one paged_attention call.
struct attn_plan {
  int64_t m = 0, n_heads = 0, n_kv_heads = 0, head_dim = 0, block_size = 0, n_blocks = 0;
  int64_t max_context = 0;       ///< longest context_len in the batch
  std::vector<int32_t> row_seq;  ///< [m]: the sequence owning each query row
};

/// Checks the batch description against q and the caches; fills plan.row_seq.
void check_batch(const attention_batch& b, attn_plan& plan) {
  const char* op = "paged_attention";
  require(b.n_seqs >= 0 && b.max_blocks >= 0, op, "n_seqs and max_blocks must be non-negative");
  require(b.block_size == plan.block_size, op,
          "batch block_size " + std::to_string(b.block_size) + " differs from the cache's " +
              std::to_string(plan.block_size));
  require_host(op, "query_start", b.query_start, dtype::i32);
  require_host(op, "context_len", b.context_len, dtype::i32);
  require_host(op, "block_tables", b.block_tables, dtype::i32);
  require_shape(op, "query_start", b.query_start, shape_t{b.n_seqs + 1});
  require_shape(op, "context_len", b.context_len, shape_t{b.n_seqs});
  require_shape(op, "block_tables", b.block_tables, shape_t{b.n_seqs, b.max_blocks});
  const int32_t* qs = b.query_start.i32();
  const int32_t* cl = b.context_len.i32();
  const int32_t* bt = b.block_tables.i32();
  require(qs[0] == 0 && qs[b.n_seqs] == plan.m, op,
          "query_start must run from 0 to the " + std::to_string(plan.m) + " query rows");
  for (int s = 0; s < b.n_seqs; ++s)
    require(qs[s + 1] >= qs[s], op, "query_start decreases at sequence " + std::to_string(s));
  plan.row_seq.assign(static_cast<size_t>(plan.m), 0);
  for (int s = 0; s < b.n_seqs; ++s) {
    const std::string seq = "sequence " + std::to_string(s);
    const int64_t n_query = qs[s + 1] - qs[s], ctx = cl[s];
    require(ctx >= n_query, op,
            seq + ": context_len " + std::to_string(ctx) + " is shorter than its " +
                std::to_string(n_query) + " query rows");
    require(ctx <= static_cast<int64_t>(b.max_blocks) * plan.block_size, op,
            seq + ": context_len " + std::to_string(ctx) + " exceeds its block table");
    for (int64_t p = 0; p < ctx; p += plan.block_size) {
      const int32_t block = bt[static_cast<int64_t>(s) * b.max_blocks + p / plan.block_size];
      if (block < 0 || block >= plan.n_blocks)
        throw std::out_of_range("paged_attention: " + seq + ": block id " + std::to_string(block) +
                                " is outside the cache of " + std::to_string(plan.n_blocks) +
                                " blocks");
    }
    std::fill(plan.row_seq.begin() + qs[s], plan.row_seq.begin() + qs[s + 1], s);
    plan.max_context = std::max(plan.max_context, ctx);
  }
}

/// out = softmax(q · K[0..pos] * scale) · V[0..pos] for one (row, head).
void attend_one(float* out, const float* q, const float* k_cache, const float* v_cache,
                const int32_t* blocks, int64_t pos, int64_t kv_head, const attn_plan& p,
                float scale, float* scores) {
  const int64_t hd = p.head_dim, stride = p.n_kv_heads * hd;
  auto slot = [&](int64_t t) {
    return (static_cast<int64_t>(blocks[t / p.block_size]) * p.block_size + t % p.block_size) *
               stride +
           kv_head * hd;
  };
  float mx = -std::numeric_limits<float>::infinity();
  for (int64_t t = 0; t <= pos; ++t) {
    scores[t] = dot(q, k_cache + slot(t), hd) * scale;
    mx = std::max(mx, scores[t]);
  }
  float sum = 0.0f;
  for (int64_t t = 0; t <= pos; ++t) {
    scores[t] = std::exp(scores[t] - mx);
    sum += scores[t];
  }
  std::fill(out, out + hd, 0.0f);
  for (int64_t t = 0; t <= pos; ++t) {
    const float* v = v_cache + slot(t);
    const float e = scores[t];
    for (int64_t d = 0; d < hd; ++d) out[d] += e * v[d];
  }
  const float inv = 1.0f / sum;
  for (int64_t d = 0; d < hd; ++d) out[d] *= inv;
}

}  // namespace

void kv_write(const op_context& ctx, tensor_view k_cache, tensor_view v_cache, tensor_view k,
              tensor_view v, tensor_view slots) {
  const char* op = "kv_write";
  check_caches(op, k_cache, v_cache);
  require_host(op, "k", k);
  require_host(op, "v", v);
  require_host(op, "slots", slots, dtype::i32);
  require_rank(op, "k", k, 3);
  require_shape(op, "k", k, shape_t{k.shape[0], k_cache.shape[2], k_cache.shape[3]});
  require_shape(op, "v", v, k.shape);
  require_shape(op, "slots", slots, shape_t{k.shape[0]});
  const int64_t m = k.shape[0], row = k.shape[1] * k.shape[2];
  const int64_t n_slots = k_cache.shape[0] * k_cache.shape[1];
  const int32_t* sl = slots.i32();
  for (int64_t r = 0; r < m; ++r)
    if (sl[r] < 0 || sl[r] >= n_slots)
      throw std::out_of_range("kv_write: slot " + std::to_string(sl[r]) + " of row " +
                              std::to_string(r) + " is outside the cache of " +
                              std::to_string(n_slots) + " slots");
  const int threads = team_size(ctx);
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
  for (int64_t r = 0; r < m; ++r) {
    std::copy(k.f32() + r * row, k.f32() + (r + 1) * row, k_cache.f32() + sl[r] * row);
    std::copy(v.f32() + r * row, v.f32() + (r + 1) * row, v_cache.f32() + sl[r] * row);
  }
}

void paged_attention(const op_context& ctx, tensor_view out, tensor_view q, tensor_view k_cache,
                     tensor_view v_cache, const attention_batch& batch, float scale) {
  const char* op = "paged_attention";
  check_caches(op, k_cache, v_cache);
  require_host(op, "q", q);
  require_host(op, "out", out);
  require_rank(op, "q", q, 3);
  require_shape(op, "out", out, q.shape);
  attn_plan p;
  p.m = q.shape[0];
  p.n_heads = q.shape[1];
  p.head_dim = q.shape[2];
  p.n_blocks = k_cache.shape[0];
  p.block_size = k_cache.shape[1];
  p.n_kv_heads = k_cache.shape[2];
  require(k_cache.shape[3] == p.head_dim, op,
          "q " + q.shape.str() + " and k_cache " + k_cache.shape.str() + " disagree on head_dim");
  require(p.n_kv_heads > 0 && (batch.kv_group > 0 || p.n_heads % p.n_kv_heads == 0), op,
          "q " + q.shape.str() + ": n_heads is not a multiple of k_cache " + k_cache.shape.str() +
              "'s n_kv_heads");
  const int64_t group = batch.kv_group > 0 ? batch.kv_group : p.n_heads / p.n_kv_heads;
  auto kv_of = [&](int64_t h) { return (batch.q_head_offset + h) / group - batch.kv_head_offset; };
  require(kv_of(0) >= 0 && kv_of(p.n_heads - 1) < p.n_kv_heads, op,
          "query heads [" + std::to_string(batch.q_head_offset) + ", " +
              std::to_string(batch.q_head_offset + p.n_heads) + ") map outside the " +
              std::to_string(p.n_kv_heads) + " kv heads from " + std::to_string(batch.kv_head_offset));
  check_batch(batch, p);
  const int32_t* qs = batch.query_start.i32();
  const int32_t* cl = batch.context_len.i32();
  const int32_t* bt = batch.block_tables.i32();
  const int64_t items = p.m * p.n_heads;
  const int threads = team_size(ctx);
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    std::vector<float> scores(static_cast<size_t>(std::max<int64_t>(p.max_context, 1)));
#pragma omp for schedule(dynamic, 4)
    for (int64_t it = 0; it < items; ++it) {
      const int64_t r = it / p.n_heads, h = it % p.n_heads;
      const int s = p.row_seq[static_cast<size_t>(r)];
      const int64_t n_query = qs[s + 1] - qs[s];
      const int64_t pos = cl[s] - n_query + (r - qs[s]);
      attend_one(out.f32() + it * p.head_dim, q.f32() + it * p.head_dim, k_cache.f32(),
                 v_cache.f32(), bt + static_cast<int64_t>(s) * batch.max_blocks, pos, kv_of(h), p,
                 scale, scores.data());
    }
  }
}

}  // namespace troupe::kernels::cpu
