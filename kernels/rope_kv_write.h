#pragma once
/// RoPE and the KV-cache write, fused over the output of the fused q/k/v projection.
#include "kernels/op_context.h"

namespace troupe::kernels {

namespace cpu {
/// CPU implementation of kernels::rope_kv_write.
void rope_kv_write(const op_context& ctx, tensor_view q, tensor_view k_cache, tensor_view v_cache,
                   tensor_view qkv, tensor_view positions, tensor_view inv_freq, tensor_view slots);
}  // namespace cpu

#ifdef TROUPE_HAVE_CUDA_KERNELS
namespace cuda {
/// CUDA implementation of kernels::rope_kv_write.
void rope_kv_write(const op_context& ctx, tensor_view q, tensor_view k_cache, tensor_view v_cache,
                   tensor_view qkv, tensor_view positions, tensor_view inv_freq, tensor_view slots);
}  // namespace cuda
#endif

/// qkv [m, (n_heads + 2 n_kv_heads) * head_dim] holds each row's q, k and v heads in that
/// order (the fused projection's output). Writes q [m, n_heads, head_dim] = rope(q part) and
/// the caches [n_blocks, block_size, n_kv_heads, head_dim] at slots[r]: rope(k part) and the
/// v part. The same values as rope on q and k followed by kv_write (kernels/rope.h,
/// kernels/attention.h); positions i32 [m], inv_freq f32 [head_dim / 2], slots i32 [m].
inline void rope_kv_write(const op_context& ctx, tensor_view q, tensor_view k_cache, tensor_view v_cache,
                          tensor_view qkv, tensor_view positions, tensor_view inv_freq, tensor_view slots) {
  switch (ctx.backend) {
    case backend_kind::cpu:
      return cpu::rope_kv_write(ctx, q, k_cache, v_cache, qkv, positions, inv_freq, slots);
    case backend_kind::cuda:
#ifdef TROUPE_HAVE_CUDA_KERNELS
      return cuda::rope_kv_write(ctx, q, k_cache, v_cache, qkv, positions, inv_freq, slots);
#else
      throw backend_unavailable("rope_kv_write: this build has no CUDA kernels");
#endif
  }
  throw backend_unavailable("rope_kv_write: unknown backend");
}

}  // namespace troupe::kernels
