#pragma once
/// The gated MLP activation over the fused gate/up projection's output.
#include "kernels/op_context.h"

namespace troupe::kernels {

namespace cpu {
/// CPU implementation of kernels::swiglu.
void swiglu(const op_context& ctx, tensor_view out, tensor_view gate_up);
}  // namespace cpu

#ifdef TROUPE_HAVE_CUDA_KERNELS
namespace cuda {
/// CUDA implementation of kernels::swiglu.
void swiglu(const op_context& ctx, tensor_view out, tensor_view gate_up);
}  // namespace cuda
#endif

/// out[m, f] = silu(gate_up[m, j]) * gate_up[m, f + j] for j < f: silu_mul over the two
/// halves of each row of the fused gate/up output [m, 2f] (gate first, then up).
inline void swiglu(const op_context& ctx, tensor_view out, tensor_view gate_up) {
  switch (ctx.backend) {
    case backend_kind::cpu:
      return cpu::swiglu(ctx, out, gate_up);
    case backend_kind::cuda:
#ifdef TROUPE_HAVE_CUDA_KERNELS
      return cuda::swiglu(ctx, out, gate_up);
#else
      throw backend_unavailable("swiglu: this build has no CUDA kernels");
#endif
  }
  throw backend_unavailable("swiglu: unknown backend");
}

}  // namespace troupe::kernels
