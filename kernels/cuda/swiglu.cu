// CUDA gated-MLP activation over the fused gate/up output: out = silu(gate) * up, the two
// halves of each row, element-wise in float (expf, as cuda::silu_mul).
#include "kernels/cuda/common.cuh"
#include "kernels/swiglu.h"

namespace troupe::kernels::cuda {
namespace {

template <class T>
__global__ void swiglu_kernel(T* out, const T* gate_up, int64_t m, int64_t f) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < m * f;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = i / f, j = i % f;
    const float g = to_f32(gate_up[r * 2 * f + j]);
    out[i] = from_f32<T>(g / (1.0f + expf(-g)) * to_f32(gate_up[r * 2 * f + f + j]));
  }
}

}  // namespace

void swiglu(const op_context& ctx, tensor_view out, tensor_view gate_up) {
  const char* op = "swiglu";
  require_cuda_ctx(op, ctx);
  require_device_float(op, "gate_up", gate_up);
  require_device(op, "out", out);
  require_same_type(op, "out", out, "gate_up", gate_up);
  require_rank(op, "gate_up", gate_up, 2);
  require(gate_up.shape[1] % 2 == 0, op, "gate_up " + gate_up.shape.str() + " needs an even row length");
  const int64_t m = gate_up.shape[0], f = gate_up.shape[1] / 2;
  require_shape(op, "out", out, shape_t{m, f});
  if (m * f == 0) return;
  dispatch_float(gate_up.type, op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    swiglu_kernel<T><<<grid_for(m * f, 256), 256, 0, stream_of(ctx)>>>(static_cast<T*>(out.data),
                                                                       static_cast<const T*>(gate_up.data), m, f);
  });
  check_launch(op, "swiglu_kernel");
}

}  // namespace troupe::kernels::cuda
