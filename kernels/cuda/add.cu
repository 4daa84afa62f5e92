// CUDA element-wise accumulate: acc += x, in float, stored back in acc's type.
#include "kernels/add.h"
#include "kernels/cuda/common.cuh"

namespace troupe::kernels::cuda {
namespace {

template <class T>
__global__ void add_kernel(T* acc, const T* x, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x)
    acc[i] = from_f32<T>(to_f32(acc[i]) + to_f32(x[i]));
}

}  // namespace

void add_inplace(const op_context& ctx, tensor_view acc, tensor_view x) {
  const char* op = "add_inplace";
  require_cuda_ctx(op, ctx);
  require_device_float(op, "acc", acc);
  require_device(op, "x", x);
  require_same_type(op, "x", x, "acc", acc);
  require_shape(op, "x", x, acc.shape);
  const int64_t n = acc.numel();
  if (n == 0) return;
  dispatch_float(acc.type, op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    add_kernel<T><<<grid_for(n, 256), 256, 0, stream_of(ctx)>>>(static_cast<T*>(acc.data),
                                                                 static_cast<const T*>(x.data), n);
  });
  check_launch(op, "add_kernel");
}

}  // namespace troupe::kernels::cuda
