#pragma once
/// The gated MLP activation.
#include "kernels/op_context.h"

namespace troupe::kernels {

namespace cpu {
/// CPU implementation of kernels::silu_mul.
void silu_mul(const op_context& ctx, tensor_view out, tensor_view gate, tensor_view up);
}  // namespace cpu

#ifdef TROUPE_HAVE_CUDA_KERNELS
namespace cuda {
/// CUDA implementation of kernels::silu_mul.
void silu_mul(const op_context& ctx, tensor_view out, tensor_view gate, tensor_view up);
}  // namespace cuda
#endif

/// out[m, f] = silu(gate[m, f]) * up[m, f].
inline void silu_mul(const op_context& ctx, tensor_view out, tensor_view gate, tensor_view up) {
  switch (ctx.backend) {
    case backend_kind::cpu:
      return cpu::silu_mul(ctx, out, gate, up);
    case backend_kind::cuda:
#ifdef TROUPE_HAVE_CUDA_KERNELS
      return cuda::silu_mul(ctx, out, gate, up);
#else
      throw backend_unavailable("silu_mul: this build has no CUDA kernels");
#endif
  }
  throw backend_unavailable("silu_mul: unknown backend");
}

}  // namespace troupe::kernels
