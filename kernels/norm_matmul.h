#pragma once
/// The decode fusions of a layer's norms and residual adds into its projections: rmsnorm as
/// the prologue of the projection that reads it, the residual add as the epilogue of the one
/// that writes it (two kernels a layer fewer at batch 1). Each op is defined as its
/// composition of the plain ops, and equals it bitwise on every backend.
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
}  // namespace cpu

#ifdef TROUPE_HAVE_CUDA_KERNELS
namespace cuda {
/// Whether the fused kernels apply to `rows` rows of width `k` in type `t`: one row, f16 or
/// bf16, k a multiple of 8 up to 8192, outside the batch-invariant mode, with the GEMV on
/// (TROUPE_GEMV_MAX_ROWS) and TROUPE_FUSE_NORM not 0.
bool norm_fusion_applies(const op_context& ctx, int64_t rows, int64_t k, dtype t);
/// CUDA implementation of kernels::norm_matmul: one GEMV normalizing x in its prologue where
/// norm_fusion_applies, else rmsnorm into scratch and matmul.
void norm_matmul(const op_context& ctx, tensor_view out, tensor_view x, tensor_view norm, float eps, tensor_view w,
                 tensor_view bias, tensor_view scratch);
/// CUDA implementation of kernels::norm_gate_up_swiglu (the paired GEMV with the prologue,
/// else rmsnorm and gate_up_swiglu).
void norm_gate_up_swiglu(const op_context& ctx, tensor_view out, tensor_view x, tensor_view norm, float eps,
                         tensor_view w, tensor_view scratch, tensor_view scratch_proj);
/// CUDA implementation of kernels::matmul_add: one GEMV adding as it stores where
/// norm_fusion_applies, else matmul into scratch and add_inplace.
void matmul_add(const op_context& ctx, tensor_view acc, tensor_view x, tensor_view w, tensor_view scratch);
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
/// `scratch` [m, k] (x's type) may receive the normalized rows. Bitwise rmsnorm into
/// scratch, then matmul.
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
/// `scratch` [m, k] and `scratch_proj` [m, 2f] may receive the intermediates. Bitwise
/// rmsnorm into scratch, then gate_up_swiglu.
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

}  // namespace troupe::kernels
