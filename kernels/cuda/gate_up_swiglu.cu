// CUDA fused gate/up projection and SwiGLU (kernels/gate_up_swiglu.h): the paired skinny
// GEMV where it applies (kernels/cuda/matmul.cu, gemv_swiglu), else matmul and swiglu.
#include "kernels/gate_up_swiglu.h"
#include "kernels/matmul.h"
#include "kernels/swiglu.h"

namespace troupe::kernels::cuda {

void gate_up_swiglu(const op_context& ctx, tensor_view out, tensor_view x, tensor_view w, tensor_view scratch) {
  if (gemv_swiglu(ctx, out, x, w)) return;
  cuda::matmul(ctx, scratch, x, w, {});
  cuda::swiglu(ctx, out, scratch);
}

}  // namespace troupe::kernels::cuda
