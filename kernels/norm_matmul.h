#pragma once
/// The decode fusions of a layer's norms and residual adds into its projections: rmsnorm
/// inside the projection that reads it, the residual add in the store of the one that writes
/// it (two kernels a layer fewer at batch 1). Each op is defined as its composition of the
/// plain ops. matmul_add equals it bitwise on every backend; the CUDA norm fusions scale the
/// projection by 1 / rms(x) after the dot instead of rounding the normalized x to its type
/// before it, so they stay within that rounding of the composition (closer to the f32 value).
#include <cstdint>

#include "kernels/op_context.h"

namespace troupe::kernels {

namespace cpu {
/// CPU implementation of kernels::norm_matmul.
void norm_matmul(const op_context& ctx, tensor_view out, tensor_view x, tensor_view norm, float eps, tensor_view w,
                 tensor_view bias, tensor_view scratch);
/// CPU implementation of kernels::norm_gate_up_swiglu.
void norm_gate_up_swiglu(const op_context& ctx, tensor_view out, tensor_view x, tensor_view norm, float eps,
                         tensor_view w, tensor_view scratch, tensor_view scratch_proj);
/// CPU implementation of kernels::matmul_add.
void matmul_add(const op_context& ctx, tensor_view acc, tensor_view x, tensor_view w, tensor_view scratch);
/// CPU implementation of kernels::norm_qkv_rope.
void norm_qkv_rope(const op_context& ctx, tensor_view q, tensor_view k_cache, tensor_view v_cache, tensor_view x,
                   tensor_view norm, float eps, tensor_view w, tensor_view bias, tensor_view positions,
                   tensor_view inv_freq, tensor_view slots, tensor_view scratch, tensor_view scratch_qkv);
}  // namespace cpu

#ifdef TROUPE_HAVE_CUDA_KERNELS
namespace cuda {
/// Whether the one-row fusions are on: off by default until measured on a GPU;
/// TROUPE_FUSE_NORM=1 at start, or set_norm_fusion, turns them on.
bool norm_fusion_enabled();
/// Turns the one-row fusions on or off for the process (benchmarks and tests).
void set_norm_fusion(bool on);
/// Fused kernels launched so far in this process (each op below that did not fall back to
/// the composition counts one): tests tell a fused path from its fallback by it.
uint64_t norm_fusion_launches();
/// Whether the fused kernels apply to `rows` rows of width `k` in type `t`: one row, f16 or
/// bf16, k a multiple of 8, outside the batch-invariant mode, with the GEMV on
/// (TROUPE_GEMV_MAX_ROWS) and the fusions on (norm_fusion_enabled).
bool norm_fusion_applies(const op_context& ctx, int64_t rows, int64_t k, dtype t);
/// CUDA implementation of kernels::norm_matmul: one GEMV that sums x² beside its dot products
/// and scales them by 1 / rms(x) (x · norm streamed, never stored) where norm_fusion_applies
/// and the norm weight has x's type, else rmsnorm into scratch and matmul.
void norm_matmul(const op_context& ctx, tensor_view out, tensor_view x, tensor_view norm, float eps, tensor_view w,
                 tensor_view bias, tensor_view scratch);
/// CUDA implementation of kernels::norm_gate_up_swiglu (the paired GEMV normalizing as
/// norm_matmul's, else rmsnorm and gate_up_swiglu).
void norm_gate_up_swiglu(const op_context& ctx, tensor_view out, tensor_view x, tensor_view norm, float eps,
                         tensor_view w, tensor_view scratch, tensor_view scratch_proj);
/// CUDA implementation of kernels::matmul_add: one GEMV adding as it stores where
/// norm_fusion_applies, else matmul into scratch and add_inplace.
void matmul_add(const op_context& ctx, tensor_view acc, tensor_view x, tensor_view w, tensor_view scratch);
/// The one-row GEMVs behind the three (kernels/cuda/gemv.cu); false (nothing enqueued) where
/// they do not apply: not one f16/bf16 row, k not a multiple of 8, an operand not aligned,
/// the norm weight not [k] in x's type (gemv_norm's out may be f32).
bool gemv_norm(const op_context& ctx, tensor_view out, tensor_view x, tensor_view norm, float eps, tensor_view w,
               tensor_view bias);
bool gemv_norm_swiglu(const op_context& ctx, tensor_view out, tensor_view x, tensor_view norm, float eps,
                      tensor_view w);
bool gemv_add(const op_context& ctx, tensor_view acc, tensor_view x, tensor_view w);
bool gemv_norm_qkv_rope(const op_context& ctx, tensor_view q, tensor_view k_cache, tensor_view v_cache, tensor_view x,
                        tensor_view norm, float eps, tensor_view w, tensor_view bias, tensor_view positions,
                        tensor_view inv_freq, tensor_view slots);
/// CUDA implementation of kernels::norm_qkv_rope: one GEMV normalizing as norm_matmul's whose
/// warps each compute a head's rows d and d + head_dim / 2 and store them rotated (q, k) or
/// copied (v) where norm_fusion_applies, else norm_matmul into scratch_qkv and rope_kv_write.
void norm_qkv_rope(const op_context& ctx, tensor_view q, tensor_view k_cache, tensor_view v_cache, tensor_view x,
                   tensor_view norm, float eps, tensor_view w, tensor_view bias, tensor_view positions,
                   tensor_view inv_freq, tensor_view slots, tensor_view scratch, tensor_view scratch_qkv);
}  // namespace cuda
#endif

/// Whether the backend computes the ops below in one kernel each for `rows` rows of width
/// `k` in type `t` (else they run as their compositions, which cost a kernel more than
/// add_rmsnorm before a plain projection: the forward takes them only where this holds).
inline bool norm_fusion_applies(const op_context& ctx, int64_t rows, int64_t k, dtype t) {
  switch (ctx.backend) {
    case backend_kind::cpu:
      return false;
    case backend_kind::cuda:
#ifdef TROUPE_HAVE_CUDA_KERNELS
      return cuda::norm_fusion_applies(ctx, rows, k, t);
#else
      return false;
#endif
  }
  return false;
}

/// out[m, n] = rmsnorm(x[m, k], norm[k], eps) · w[n, k]ᵀ + bias[n] (bias may be empty);
/// `scratch` [m, k] (x's type) may receive the normalized rows. rmsnorm into scratch, then
/// matmul (the fused CUDA kernel within the normalized rows' rounding of it).
inline void norm_matmul(const op_context& ctx, tensor_view out, tensor_view x, tensor_view norm, float eps,
                        tensor_view w, tensor_view bias, tensor_view scratch) {
  switch (ctx.backend) {
    case backend_kind::cpu:
      return cpu::norm_matmul(ctx, out, x, norm, eps, w, bias, scratch);
    case backend_kind::cuda:
#ifdef TROUPE_HAVE_CUDA_KERNELS
      return cuda::norm_matmul(ctx, out, x, norm, eps, w, bias, scratch);
#else
      throw backend_unavailable("norm_matmul: this build has no CUDA kernels");
#endif
  }
  throw backend_unavailable("norm_matmul: unknown backend");
}

/// out[m, f] = swiglu(rmsnorm(x[m, k], norm, eps) · w[2f, k]ᵀ) (w: gate rows, then up rows);
/// `scratch` [m, k] and `scratch_proj` [m, 2f] may receive the intermediates. rmsnorm into
/// scratch, then gate_up_swiglu (the fused CUDA kernel within the normalized rows' rounding).
inline void norm_gate_up_swiglu(const op_context& ctx, tensor_view out, tensor_view x, tensor_view norm, float eps,
                                tensor_view w, tensor_view scratch, tensor_view scratch_proj) {
  switch (ctx.backend) {
    case backend_kind::cpu:
      return cpu::norm_gate_up_swiglu(ctx, out, x, norm, eps, w, scratch, scratch_proj);
    case backend_kind::cuda:
#ifdef TROUPE_HAVE_CUDA_KERNELS
      return cuda::norm_gate_up_swiglu(ctx, out, x, norm, eps, w, scratch, scratch_proj);
#else
      throw backend_unavailable("norm_gate_up_swiglu: this build has no CUDA kernels");
#endif
  }
  throw backend_unavailable("norm_gate_up_swiglu: unknown backend");
}

/// acc[m, n] += x[m, k] · w[n, k]ᵀ, the product rounded to acc's type first; `scratch`
/// [m, n] (acc's type) may receive the product. Bitwise matmul into scratch, then add_inplace.
inline void matmul_add(const op_context& ctx, tensor_view acc, tensor_view x, tensor_view w, tensor_view scratch) {
  switch (ctx.backend) {
    case backend_kind::cpu:
      return cpu::matmul_add(ctx, acc, x, w, scratch);
    case backend_kind::cuda:
#ifdef TROUPE_HAVE_CUDA_KERNELS
      return cuda::matmul_add(ctx, acc, x, w, scratch);
#else
      throw backend_unavailable("matmul_add: this build has no CUDA kernels");
#endif
  }
  throw backend_unavailable("matmul_add: unknown backend");
}

/// The attention's first half of a decode row: rope_kv_write(q, k_cache, v_cache,
/// norm_matmul(x, norm, eps, w, bias), positions, inv_freq, slots) (kernels/rope_kv_write.h;
/// w the fused q/k/v weight [(n_heads + 2 n_kv_heads) head_dim, k]); `scratch` [m, k] and
/// `scratch_qkv` [m, w rows] may receive the intermediates. Bitwise norm_matmul then
/// rope_kv_write on every backend.
inline void norm_qkv_rope(const op_context& ctx, tensor_view q, tensor_view k_cache, tensor_view v_cache,
                          tensor_view x, tensor_view norm, float eps, tensor_view w, tensor_view bias,
                          tensor_view positions, tensor_view inv_freq, tensor_view slots, tensor_view scratch,
                          tensor_view scratch_qkv) {
  switch (ctx.backend) {
    case backend_kind::cpu:
      return cpu::norm_qkv_rope(ctx, q, k_cache, v_cache, x, norm, eps, w, bias, positions, inv_freq, slots, scratch,
                                scratch_qkv);
    case backend_kind::cuda:
#ifdef TROUPE_HAVE_CUDA_KERNELS
      return cuda::norm_qkv_rope(ctx, q, k_cache, v_cache, x, norm, eps, w, bias, positions, inv_freq, slots, scratch,
                                 scratch_qkv);
#else
      throw backend_unavailable("norm_qkv_rope: this build has no CUDA kernels");
#endif
  }
  throw backend_unavailable("norm_qkv_rope: unknown backend");
}

}  // namespace troupe::kernels
