// CPU fused gate/up projection and SwiGLU: the reference of kernels::gate_up_swiglu, by
// definition matmul into scratch, then swiglu.
#include "kernels/gate_up_swiglu.h"

#include "kernels/matmul.h"
#include "kernels/swiglu.h"

namespace troupe::kernels::cpu {

void gate_up_swiglu(const op_context& ctx, tensor_view out, tensor_view x, tensor_view w, tensor_view scratch) {
  cpu::matmul(ctx, scratch, x, w, {});
  cpu::swiglu(ctx, out, scratch);
}

}  // namespace troupe::kernels::cpu
