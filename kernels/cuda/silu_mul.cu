// CUDA gated-MLP activation: out = silu(gate) * up, element-wise in float (expf, as the
// CPU reference's std::exp).
#include "kernels/cuda/common.cuh"
#include "kernels/silu_mul.h"

namespace troupe::kernels::cuda {
namespace {

template <class T>
__global__ void silu_mul_kernel(T* out, const T* gate, const T* up, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const float g = to_f32(gate[i]);
    out[i] = from_f32<T>(silu_times(g, to_f32(up[i])));
  }
}

}  // namespace

void silu_mul(const op_context& ctx, tensor_view out, tensor_view gate, tensor_view up) {
  const char* op = "silu_mul";
  require_cuda_ctx(op, ctx);
  require_device_float(op, "gate", gate);
  require_device(op, "up", up);
  require_device(op, "out", out);
  require_same_type(op, "up", up, "gate", gate);
  require_same_type(op, "out", out, "gate", gate);
  require_shape(op, "up", up, gate.shape);
  require_shape(op, "out", out, gate.shape);
  const int64_t n = gate.numel();
  if (n == 0) return;
  dispatch_float(gate.type, op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    silu_mul_kernel<T><<<grid_for(n, 256), 256, 0, stream_of(ctx)>>>(
        static_cast<T*>(out.data), static_cast<const T*>(gate.data),
        static_cast<const T*>(up.data), n);
  });
  check_launch(op, "silu_mul_kernel");
}

}  // namespace troupe::kernels::cuda
