#pragma once
/// RMSNorm, plain and fused with the residual add.
#include "kernels/op_context.h"

namespace troupe::kernels {

namespace cpu {
/// CPU implementation of kernels::rmsnorm.
void rmsnorm(const op_context& ctx, tensor_view out, tensor_view x, tensor_view weight, float eps);
/// CPU implementation of kernels::add_rmsnorm.
void add_rmsnorm(const op_context& ctx, tensor_view out, tensor_view residual, tensor_view x,
    tensor_view weight, float eps);
}  // namespace cpu

#ifdef TROUPE_HAVE_CUDA_KERNELS
namespace cuda {
/// CUDA implementation of kernels::rmsnorm.
void rmsnorm(const op_context& ctx, tensor_view out, tensor_view x, tensor_view weight, float eps);
/// CUDA implementation of kernels::add_rmsnorm.
void add_rmsnorm(const op_context& ctx, tensor_view out, tensor_view residual, tensor_view x,
    tensor_view weight, float eps);
}  // namespace cuda
#endif

/// out[m, d] = x / sqrt(mean(x²) + eps) * weight[d].
inline void rmsnorm(const op_context& ctx, tensor_view out, tensor_view x, tensor_view weight,
    float eps) {
  switch (ctx.backend) {
    case backend_kind::cpu:
      return cpu::rmsnorm(ctx, out, x, weight, eps);
    case backend_kind::cuda:
#ifdef TROUPE_HAVE_CUDA_KERNELS
      return cuda::rmsnorm(ctx, out, x, weight, eps);
#else
      throw backend_unavailable("rmsnorm: this build has no CUDA kernels");
#endif
  }
  throw backend_unavailable("rmsnorm: unknown backend");
}

/// residual[m, d] += x[m, d]; then out = rmsnorm(residual) * weight.
inline void add_rmsnorm(const op_context& ctx, tensor_view out, tensor_view residual, tensor_view x,
    tensor_view weight, float eps) {
  switch (ctx.backend) {
    case backend_kind::cpu:
      return cpu::add_rmsnorm(ctx, out, residual, x, weight, eps);
    case backend_kind::cuda:
#ifdef TROUPE_HAVE_CUDA_KERNELS
      return cuda::add_rmsnorm(ctx, out, residual, x, weight, eps);
#else
      throw backend_unavailable("add_rmsnorm: this build has no CUDA kernels");
#endif
  }
  throw backend_unavailable("add_rmsnorm: unknown backend");
}

}  // namespace troupe::kernels
