#pragma once
// Internal to the CUDA attention kernels (attention.cu, attention_decode.cu,
// flash_prefill.cu): the kernels' arguments, the batch lookups every kernel shares, and
// the entry points of the specialised kernels. A lookup never reads outside the batch
// arrays; an inconsistent row is reported as position -1 and written as zeros.
#include <algorithm>
#include <cstdint>

#include "kernels/attention.h"
#include "kernels/cuda/common.cuh"

namespace troupe::kernels::cuda {

constexpr int split_len = 256;  ///< kv positions per decode split at most (cut at fixed positions; contexts up to it need no combine)

/// Everything the attention kernels read besides q, out and the caches.
struct attn_args {
  const int32_t* query_start;   // [n_seqs + 1]
  const int32_t* context_len;   // [n_seqs]
  const int32_t* block_tables;  // [n_seqs, max_blocks]
  int n_seqs, max_blocks, block_size, n_blocks;
  int n_heads, n_kv_heads, head_dim;
  int m;
  int q_head_offset, kv_group, kv_head_offset;
  float scale;
  float* workspace;          // [workspace_floats] or null (attention_batch::workspace)
  int64_t workspace_floats;
  int* split_counts;         // [n_split_counts] or null (attention_batch::split_counts)
  int64_t n_split_counts;
  /// kv positions per decode split: split_len, or a smaller multiple of 64 where the grid
  /// would not fill the multiprocessors (decode_grouped, chosen per launch on the host).
  int split = split_len;
};

/// The sequence owning query row r (the last s with query_start[s] <= r), or -1. Tries
/// s = r first (a decode batch, one row per sequence: one round trip to memory instead of
/// a binary search's log2(n_seqs) dependent ones).
__device__ inline int find_seq(const attn_args& a, int r) {
  if (r >= 0 && r < a.n_seqs && a.query_start[r] <= r && r < a.query_start[r + 1]) return r;
  int lo = 0, hi = a.n_seqs;  // answer in [lo, hi)
  if (a.n_seqs <= 0 || a.query_start[0] > r) return -1;
  while (hi - lo > 1) {
    const int mid = (lo + hi) / 2;
    if (a.query_start[mid] <= r) lo = mid; else hi = mid;
  }
  return r < a.query_start[lo + 1] ? lo : -1;
}

/// Element offset of kv position t of sequence s for kv head g, or -1 when its block id
/// is outside the cache.
__device__ __forceinline__ int64_t kv_offset(const attn_args& a, int s, int t, int g) {
  const int block = a.block_tables[static_cast<int64_t>(s) * a.max_blocks + t / a.block_size];
  if (block < 0 || block >= a.n_blocks) return -1;
  const int64_t slot = static_cast<int64_t>(block) * a.block_size + t % a.block_size;
  return (slot * a.n_kv_heads + g) * a.head_dim;
}

/// The kv head read by local query head h.
__device__ __forceinline__ int kv_head_of(const attn_args& a, int h) {
  return (a.q_head_offset + h) / a.kv_group - a.kv_head_offset;
}

/// The absolute position of query row r of sequence s, or -1 when the batch is inconsistent.
__device__ inline int row_position(const attn_args& a, int s, int r) {
  const int n_query = a.query_start[s + 1] - a.query_start[s];
  const int pos = a.context_len[s] - n_query + (r - a.query_start[s]);
  return pos >= 0 && pos < a.max_blocks * a.block_size ? pos : -1;
}

/// Finds the sequence and query tile of prefill block `b`: tiles are numbered sequence
/// by sequence, ceil(n_query / tile_rows) per sequence. Returns false past the last tile.
__device__ inline bool find_tile(const attn_args& a, int tile_rows, int b, int& seq, int& tile) {
  for (int s = 0; s < a.n_seqs; ++s) {
    const int n_query = a.query_start[s + 1] - a.query_start[s];
    const int n_tiles = n_query > 0 ? (n_query + tile_rows - 1) / tile_rows : 0;
    if (b < n_tiles) {
      seq = s;
      tile = b;
      return true;
    }
    b -= n_tiles;
  }
  return false;
}


/// One decode block's share of the batch (block (g, r, z) = kv head, row, split): the local
/// query heads [h_lo, h_lo + group) that read kv head g, the row's sequence, the split's
/// first position and length, its split count and the element offset of the row's first head.
/// `zero`: the block has nothing to compute but must write the row's heads as zeros (an
/// inconsistent row, split 0).
struct decode_split {
  int h_lo = 0, group = 0, seq = -1, start = 0, len = 0, n_splits = 0;
  int64_t row_off = 0;
  bool zero = false;
};

/// Fills d for block (g, r, z); false when the block has nothing to compute: no query head
/// reads g, a split past the row's last, or an inconsistent row. Reads only the step's
/// metadata, which is uploaded before the step's first kernel and written by none: a decode
/// kernel calls it before pdl_wait.
__device__ inline bool decode_split_of(const attn_args& a, int g, int r, int z, int hd, decode_split& d) {
  d.h_lo = max(0, (g + a.kv_head_offset) * a.kv_group - a.q_head_offset);
  d.group = min(a.n_heads, (g + a.kv_head_offset + 1) * a.kv_group - a.q_head_offset) - d.h_lo;
  if (d.group <= 0) return false;
  d.seq = find_seq(a, r);
  const int pos = d.seq < 0 ? -1 : row_position(a, d.seq, r);
  d.row_off = (static_cast<int64_t>(r) * a.n_heads + d.h_lo) * hd;
  if (pos < 0) {
    d.zero = z == 0;
    return false;
  }
  d.n_splits = pos / a.split + 1;
  if (z >= d.n_splits) return false;
  d.start = z * a.split;
  d.len = min(a.split, pos + 1 - d.start);
  return true;
}

/// Writes the zeros of a block decode_split_of found inconsistent (after pdl_wait), with
/// every thread of the block, `threads` of them.
template <class T>
__device__ inline void decode_zero_rows(const decode_split& d, int hd, int threads, T* out) {
  if (!d.zero) return;
  for (int e = threadIdx.x; e < d.group * hd; e += threads) out[d.row_off + e] = from_f32<T>(0.0f);
}

/// Element d of one query head merged from its n_splits split partials (part_o and part_ml
/// from `base`, see decode_partials), in split order: what combine_kernel writes, and the
/// fused merge of a row's last split. Reads through L2 (another block wrote them).
__device__ inline float merged_element(const float* part_o, const float* part_ml, int64_t base, int n_splits, int hd,
                                       int d) {
  float mx = -INFINITY;
  for (int z = 0; z < n_splits; ++z) mx = fmaxf(mx, __ldcg(part_ml + (base + z) * 2));
  float total = 0.0f, acc = 0.0f;
  for (int z = 0; z < n_splits; ++z) {
    const float m_z = __ldcg(part_ml + (base + z) * 2);
    if (m_z == -INFINITY) continue;
    const float w = expf(m_z - mx);
    total += __ldcg(part_ml + (base + z) * 2 + 1) * w;
    acc += __ldcg(part_o + (base + z) * hd + d) * w;
  }
  return total > 0.0f ? acc / total : 0.0f;
}

/// Merges the splits of rows longer than one split, in split order.
template <class T>
__global__ void combine_kernel(T* out, const float* part_o, const float* part_ml, attn_args a,
                               int max_splits) {
  // The row's place is metadata (uploaded before the step, written by no kernel): read
  // before waiting; the partials after.
  const int h = blockIdx.x, r = blockIdx.y, hd = a.head_dim;
  const int s = find_seq(a, r);
  const int pos = s < 0 ? -1 : row_position(a, s, r);
  pdl_wait();
  pdl_trigger();
  if (pos < 0) return;
  const int n_splits = pos / a.split + 1;
  if (n_splits == 1) return;
  const int64_t base = (static_cast<int64_t>(r) * a.n_heads + h) * max_splits;
  for (int d = threadIdx.x; d < hd; d += blockDim.x)
    out[(static_cast<int64_t>(r) * a.n_heads + h) * hd + d] =
        from_f32<T>(merged_element(part_o, part_ml, base, n_splits, hd, d));
}

/// The split-K partials of one decode launch: in attn_args::workspace where it holds them,
/// else allocated on the stream (stream-ordered, so a captured graph owns them): part_o [m,
/// n_heads, max_splits, head_dim] unnormalized outputs, part_ml [m, n_heads, max_splits, 2]
/// (max, sum). None when no row can need two splits (max_splits 1); then a decode kernel
/// writes its rows directly.
struct decode_partials {
  decode_partials(cudaStream_t st, const attn_args& a) : st_(st) {
    max_splits = splits_of(a);
    n_parts_ = max_splits > 1 ? static_cast<size_t>(a.m) * a.n_heads * max_splits : 0;
    if (n_parts_ == 0) return;
    const size_t floats = n_parts_ * (a.head_dim + 2);
    if (a.workspace && static_cast<int64_t>(floats) <= a.workspace_floats) {
      part_o = a.workspace;
    } else {
      check_cuda(cudaMallocAsync(reinterpret_cast<void**>(&part_o), floats * sizeof(float), st),
                 "paged_attention", "allocating split-K partials");
      owned_ = true;
    }
    part_ml = part_o + n_parts_ * a.head_dim;
  }
  ~decode_partials() {
    if (owned_) cudaFreeAsync(part_o, st_);  // only after an error between the two
  }
  decode_partials(const decode_partials&) = delete;
  decode_partials& operator=(const decode_partials&) = delete;
  /// Splits a row of `a` may have: its block tables' span over a.split.
  static int splits_of(const attn_args& a) {
    return std::max((a.max_blocks * a.block_size + a.split - 1) / a.split, 1);
  }
  /// Counts the finished splits of each (row, kv head) in a.split_counts, so that the
  /// decode kernel merges a row's splits in its last one (combine then launches nothing),
  /// when the fused merge is on and the counts fit.
  void fuse_merge(const attn_args& a) {
    if (n_parts_ > 0 && fused_merge_enabled() && a.split_counts &&
        a.n_split_counts >= static_cast<int64_t>(a.m) * a.n_kv_heads)
      counts = a.split_counts;
  }
  /// Merges the partials into out (when there are any and the decode kernel did not) and
  /// frees them.
  template <class T>
  void combine(T* out, const attn_args& a) {
    if (n_parts_ == 0) return;
    if (!counts) {
      launch_pdl(combine_kernel<T>, dim3(a.n_heads, a.m), dim3(128), 0, st_, out, part_o, part_ml, a, max_splits);
      check_launch("paged_attention", "combine_kernel");
    }
    if (owned_) check_cuda(cudaFreeAsync(part_o, st_), "paged_attention", "freeing split-K partials");
    owned_ = false;
    n_parts_ = 0;
  }

  int max_splits = 1;
  float* part_o = nullptr;   // [m, n_heads, max_splits, head_dim]
  float* part_ml = nullptr;  // [m, n_heads, max_splits, 2]
  int* counts = nullptr;     // [m, n_kv_heads] finished splits (fuse_merge), or null: combine_kernel merges

 private:
  cudaStream_t st_;
  size_t n_parts_ = 0;
  bool owned_ = false;  ///< part_o was allocated on the stream (not the workspace)
};

/// Decode attention (m <= n_seqs) with one block per (row, kv head, split of kv positions)
/// serving every query head of the group, K and V read once in 16-byte loads. Returns
/// false, launching nothing, when the shape is outside what it handles (a head_dim whose
/// row is not 4, 8, 16 or 32 chunks of 16 bytes, a group of more than 8 query heads, an
/// unaligned cache); the caller then runs the general kernel.
bool decode_grouped(const op_context& ctx, void* out, const void* q, const void* k_cache,
                    const void* v_cache, dtype type, const attn_args& a);

/// Decode attention on tensor cores (attention_decode_mma.cu): decode_grouped's grid, split
/// rule and partials (part_o, part_ml, max_splits: see decode_partials), for f16/bf16,
/// head_dim 64 or 128 and a GQA group of at most 8. Returns false, launching nothing,
/// outside that; the caller then runs a CUDA-core kernel.
bool decode_mma(cudaStream_t st, void* out, float* part_o, float* part_ml, int max_splits, const void* q,
                const void* k_cache, const void* v_cache, dtype type, const attn_args& a);

/// Prefill attention on tensor cores (f16/bf16, head_dim 64 or 128). Returns false,
/// launching nothing, when the type or head_dim is outside what it handles; the caller then
/// runs the general kernel.
bool flash_prefill(const op_context& ctx, void* out, const void* q, const void* k_cache,
                   const void* v_cache, dtype type, const attn_args& a);

}  // namespace troupe::kernels::cuda
