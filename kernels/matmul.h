#pragma once
/// y = x · wᵀ (+ bias): the linear layer.
#include "kernels/op_context.h"

namespace troupe::kernels {

namespace cpu {
/// CPU implementation of kernels::matmul.
void matmul(const op_context& ctx, tensor_view out, tensor_view x, tensor_view w, tensor_view bias);
}  // namespace cpu

#ifdef TROUPE_HAVE_CUDA_KERNELS
namespace cuda {
/// CUDA implementation of kernels::matmul.
void matmul(const op_context& ctx, tensor_view out, tensor_view x, tensor_view w, tensor_view bias);
}  // namespace cuda
#endif

/// out[m, n] = x[m, k] · w[n, k]ᵀ + bias[n] (bias may be empty).
/// Batch-invariant: row i of `out` depends only on row i of `x`, bitwise.
inline void matmul(const op_context& ctx, tensor_view out, tensor_view x, tensor_view w,
    tensor_view bias) {
  switch (ctx.backend) {
    case backend_kind::cpu:
      return cpu::matmul(ctx, out, x, w, bias);
    case backend_kind::cuda:
#ifdef TROUPE_HAVE_CUDA_KERNELS
      return cuda::matmul(ctx, out, x, w, bias);
#else
      throw backend_unavailable("matmul: this build has no CUDA kernels");
#endif
  }
  throw backend_unavailable("matmul: unknown backend");
}

}  // namespace troupe::kernels
