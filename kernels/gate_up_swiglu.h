#pragma once
/// The gated MLP's first half in one op: the fused gate/up projection and SwiGLU.
#include "kernels/op_context.h"

namespace troupe::kernels {

namespace cpu {
/// CPU implementation of kernels::gate_up_swiglu.
void gate_up_swiglu(const op_context& ctx, tensor_view out, tensor_view x, tensor_view w, tensor_view scratch);
}  // namespace cpu

#ifdef TROUPE_HAVE_CUDA_KERNELS
namespace cuda {
/// CUDA implementation of kernels::gate_up_swiglu: one skinny GEMV that applies SwiGLU as it
/// stores (where matmul would take the GEMV: one row, f16/bf16, not batch-invariant), else
/// matmul into `scratch` and swiglu.
void gate_up_swiglu(const op_context& ctx, tensor_view out, tensor_view x, tensor_view w, tensor_view scratch);
}  // namespace cuda
#endif

/// out[m, f] = swiglu(x[m, k] · w[2f, k]ᵀ): w holds the gate rows, then the up rows (the
/// fused gate/up weight). `scratch` [m, 2f] (x's type) may receive the projection's output
/// when the backend computes it in two steps; its contents afterwards are unspecified.
/// Bitwise equal to matmul into scratch followed by swiglu on every backend.
inline void gate_up_swiglu(const op_context& ctx, tensor_view out, tensor_view x, tensor_view w,
                           tensor_view scratch) {
  switch (ctx.backend) {
    case backend_kind::cpu:
      return cpu::gate_up_swiglu(ctx, out, x, w, scratch);
    case backend_kind::cuda:
#ifdef TROUPE_HAVE_CUDA_KERNELS
      return cuda::gate_up_swiglu(ctx, out, x, w, scratch);
#else
      throw backend_unavailable("gate_up_swiglu: this build has no CUDA kernels");
#endif
  }
  throw backend_unavailable("gate_up_swiglu: unknown backend");
}

}  // namespace troupe::kernels
