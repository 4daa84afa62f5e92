#pragma once
/// Paged attention over a block-structured KV cache (prefill and decode alike).
#include <cstdint>

#include "kernels/op_context.h"

namespace troupe::kernels {

/// Where each sequence of a flattened batch sits, all arrays on the context's device.
/// Sequence s owns query rows [query_start[s], query_start[s+1]); its query row j has
/// absolute position (context_len[s] - n_query_s + j) and attends causally to kv
/// positions [0, that position]. KV position p of sequence s lives in block
/// block_tables[s * max_blocks + p / block_size], slot p % block_size.
struct attention_batch {
  int n_seqs = 0;
  int max_blocks = 0;            ///< row stride of block_tables
  int block_size = 16;
  tensor_view query_start;       ///< i32 [n_seqs + 1]
  tensor_view context_len;       ///< i32 [n_seqs]: kv length after this step
  tensor_view block_tables;      ///< i32 [n_seqs, max_blocks]
  /// Grouped-query mapping for a tensor-parallel slice: local query head h reads local kv
  /// head (q_head_offset + h) / kv_group - kv_head_offset. kv_group 0 = the whole model
  /// is here: n_heads / n_kv_heads, no offsets.
  int q_head_offset = 0;
  int kv_group = 0;
  int kv_head_offset = 0;
  /// Host knowledge of a mixed batch: its first `decode_rows` sequences have one query row
  /// each (row i is sequence i's), so CUDA runs them through the decode kernels and only the
  /// rest through prefill. 0 = unknown; must be in [0, n_seqs] and true when set.
  int decode_rows = 0;
  /// f32 [n], optional (CUDA): where the decode kernels keep the split partials of rows
  /// longer than one split, when n reaches decode_workspace_floats of the step's shape, instead
  /// of allocating them on the stream; a captured graph then holds no memory nodes, which
  /// would cut the programmatic dependent launches before and after attention.
  tensor_view workspace;
  /// i32 [>= rows x n_kv_heads], all zero, optional (CUDA): with the fused split merge on
  /// (cuda::set_fused_merge, TROUPE_ATTN_FUSED_MERGE=1), the decode split of a row that ends
  /// last merges the row's splits itself, in split order (no merge kernel), counting the
  /// row's finished splits here; every count is zero again when the op has run.
  tensor_view split_counts;
};

namespace cpu {
/// CPU implementation of kernels::kv_write.
void kv_write(const op_context& ctx, tensor_view k_cache, tensor_view v_cache, tensor_view k,
    tensor_view v, tensor_view slots);
/// CPU implementation of kernels::paged_attention.
void paged_attention(const op_context& ctx, tensor_view out, tensor_view q, tensor_view k_cache,
    tensor_view v_cache, const attention_batch& batch, float scale);
}  // namespace cpu

#ifdef TROUPE_HAVE_CUDA_KERNELS
namespace cuda {
/// CUDA implementation of kernels::kv_write.
void kv_write(const op_context& ctx, tensor_view k_cache, tensor_view v_cache, tensor_view k,
    tensor_view v, tensor_view slots);
/// CUDA implementation of kernels::paged_attention.
void paged_attention(const op_context& ctx, tensor_view out, tensor_view q, tensor_view k_cache,
    tensor_view v_cache, const attention_batch& batch, float scale);
/// CUDA implementation of kernels::decode_workspace_floats.
int64_t decode_workspace_floats(int rows, int n_heads, int n_kv_heads, int head_dim, int context);
/// Whether the CUDA-core decode kernel merges a row's splits in its last split (with
/// attention_batch::split_counts) instead of a merge kernel after it: off by default until
/// measured on a GPU; TROUPE_ATTN_FUSED_MERGE=1 at start, or set_fused_merge, turns it on.
bool fused_merge_enabled();
/// Turns the fused split merge on or off for the process (benchmarks and tests).
void set_fused_merge(bool on);
}  // namespace cuda
#endif

/// Floats of attention_batch::workspace that hold the split partials of any decode step of
/// up to `rows` rows (one a sequence) whose block tables span up to `context` positions
/// (0: the backend keeps none; CUDA with TROUPE_ATTN_WORKSPACE=0 too).
inline int64_t decode_workspace_floats(const op_context& ctx, int rows, int n_heads, int n_kv_heads, int head_dim,
                                       int context) {
  switch (ctx.backend) {
    case backend_kind::cpu:
      return 0;
    case backend_kind::cuda:
#ifdef TROUPE_HAVE_CUDA_KERNELS
      return cuda::decode_workspace_floats(rows, n_heads, n_kv_heads, head_dim, context);
#else
      return 0;
#endif
  }
  return 0;
}

/// Writes k, v [m, n_kv_heads, head_dim] into the caches
/// [n_blocks, block_size, n_kv_heads, head_dim] at slots[r] = block * block_size + offset
/// (i32 [m]).
inline void kv_write(const op_context& ctx, tensor_view k_cache, tensor_view v_cache, tensor_view k,
    tensor_view v, tensor_view slots) {
  switch (ctx.backend) {
    case backend_kind::cpu:
      return cpu::kv_write(ctx, k_cache, v_cache, k, v, slots);
    case backend_kind::cuda:
#ifdef TROUPE_HAVE_CUDA_KERNELS
      return cuda::kv_write(ctx, k_cache, v_cache, k, v, slots);
#else
      throw backend_unavailable("kv_write: this build has no CUDA kernels");
#endif
  }
  throw backend_unavailable("kv_write: unknown backend");
}

/// out[m, n_heads, head_dim] = softmax(q kᵀ * scale, causal) v, grouped-query: head h
/// reads kv head h / (n_heads / n_kv_heads) (see attention_batch for TP slices). Each (row, head) is computed independently
/// of the rest of the batch (batch-invariant).
inline void paged_attention(const op_context& ctx, tensor_view out, tensor_view q,
    tensor_view k_cache, tensor_view v_cache, const attention_batch& batch, float scale) {
  switch (ctx.backend) {
    case backend_kind::cpu:
      return cpu::paged_attention(ctx, out, q, k_cache, v_cache, batch, scale);
    case backend_kind::cuda:
#ifdef TROUPE_HAVE_CUDA_KERNELS
      return cuda::paged_attention(ctx, out, q, k_cache, v_cache, batch, scale);
#else
      throw backend_unavailable("paged_attention: this build has no CUDA kernels");
#endif
  }
  throw backend_unavailable("paged_attention: unknown backend");
}

}  // namespace troupe::kernels
