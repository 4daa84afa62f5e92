#pragma once
/// Element-wise accumulate.
#include "kernels/op_context.h"

namespace troupe::kernels {

namespace cpu {
/// CPU implementation of kernels::add_inplace.
void add_inplace(const op_context& ctx, tensor_view acc, tensor_view x);
}  // namespace cpu

#ifdef TROUPE_HAVE_CUDA_KERNELS
namespace cuda {
/// CUDA implementation of kernels::add_inplace.
void add_inplace(const op_context& ctx, tensor_view acc, tensor_view x);
}  // namespace cuda
#endif

/// acc[...] += x[...] (same shape).
inline void add_inplace(const op_context& ctx, tensor_view acc, tensor_view x) {
  switch (ctx.backend) {
    case backend_kind::cpu:
      return cpu::add_inplace(ctx, acc, x);
    case backend_kind::cuda:
#ifdef TROUPE_HAVE_CUDA_KERNELS
      return cuda::add_inplace(ctx, acc, x);
#else
      throw backend_unavailable("add_inplace: this build has no CUDA kernels");
#endif
  }
  throw backend_unavailable("add_inplace: unknown backend");
}

}  // namespace troupe::kernels
