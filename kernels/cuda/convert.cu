// CUDA conversions between f32, f16 and bf16 and the random-weight fills; element for
// element what kernels/cpu/convert.cpp computes.
#include <cmath>

#include "kernels/convert.h"
#include "kernels/cuda/common.cuh"

namespace troupe::kernels::cuda {
namespace {

template <class O, class I>
__global__ void convert_kernel(O* out, const I* in, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x)
    out[i] = from_f32<O>(to_f32(in[i]));
}

template <class T>
__global__ void fill_random_kernel(T* out, int64_t n, uint64_t seed, float scale, int64_t first, int64_t cols,
                                   int64_t stride) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = i / cols, c = i % cols;
    out[i] = from_f32<T>(random_unit(seed, static_cast<uint64_t>(first + r * stride + c)) * scale);
  }
}

template <class T>
__global__ void fill_value_kernel(T* out, int64_t n, float value) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x)
    out[i] = from_f32<T>(value);
}

}  // namespace

void convert(const op_context& ctx, tensor_view out, tensor_view in) {
  const char* op = "convert";
  require_cuda_ctx(op, ctx);
  require_device_float(op, "out", out);
  require_device_float(op, "in", in);
  require(out.numel() == in.numel(), op,
          "out " + out.shape.str() + " and in " + in.shape.str() + " differ in element count");
  const int64_t n = in.numel();
  if (n == 0) return;
  dispatch_float(out.type, op, [&](auto otag) {
    using O = typename decltype(otag)::type;
    dispatch_float(in.type, op, [&](auto itag) {
      using I = typename decltype(itag)::type;
      convert_kernel<O, I><<<grid_for(n, 256), 256, 0, stream_of(ctx)>>>(static_cast<O*>(out.data),
                                                                      static_cast<const I*>(in.data), n);
    });
  });
  check_launch(op, "convert_kernel");
}

void fill_random(const op_context& ctx, tensor_view out, uint64_t seed, float stddev, int64_t first,
                 int64_t stride) {
  const char* op = "fill_random";
  require_cuda_ctx(op, ctx);
  require_device_float(op, "out", out);
  const int64_t n = out.numel();
  if (n == 0) return;
  const float scale = stddev * sqrtf(3.0f);
  const int64_t cols = out.shape.rank > 0 && out.shape[out.shape.rank - 1] > 0 ? out.shape[out.shape.rank - 1] : 1;
  const int64_t st = stride > 0 ? stride : cols;
  dispatch_float(out.type, op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    fill_random_kernel<T><<<grid_for(n, 256), 256, 0, stream_of(ctx)>>>(static_cast<T*>(out.data), n, seed, scale,
                                                                        first, cols, st);
  });
  check_launch(op, "fill_random_kernel");
}

void fill_value(const op_context& ctx, tensor_view out, float value) {
  const char* op = "fill_value";
  require_cuda_ctx(op, ctx);
  require_device_float(op, "out", out);
  const int64_t n = out.numel();
  if (n == 0) return;
  dispatch_float(out.type, op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    fill_value_kernel<T><<<grid_for(n, 256), 256, 0, stream_of(ctx)>>>(static_cast<T*>(out.data), n, value);
  });
  check_launch(op, "fill_value_kernel");
}

}  // namespace troupe::kernels::cuda
