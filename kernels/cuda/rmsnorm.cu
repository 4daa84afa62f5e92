// CUDA RMSNorm, plain and fused with the residual add: one block per row; the sum of
// squares in float through a fixed-order block reduction, then, as the CPU reference,
// out = (x * (1 / sqrt(mean + eps))) * weight. The weight is f32 or the activations' type.
// Rows of whole 16-byte chunks (aligned, at most 4096 chunks) take the vectorized kernel:
// each thread keeps its chunks in registers, so the row is read and written once; other
// rows take the general kernel. The thread count depends only on the width, so a row's
// result does not depend on the batch.
#include <algorithm>
#include <initializer_list>

#include "kernels/cuda/common.cuh"
#include "kernels/rmsnorm.h"

namespace troupe::kernels::cuda {
namespace {

/// Normalizes row blockIdx.x of x into out; with `residual`, first stores
/// residual += x (rounded to T) and normalizes that sum.
template <class T, class W>
__global__ void rmsnorm_kernel(T* out, T* residual, const T* x, const W* weight, int64_t d,
                               float eps) {
  pdl_wait();  // launched with launch_pdl: nothing before this reads or writes
  pdl_trigger();
  __shared__ float scratch[32];
  const int64_t base = static_cast<int64_t>(blockIdx.x) * d;
  T* src = residual ? residual + base : const_cast<T*>(x + base);
  float sq = 0.0f;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
    float v;
    if (residual) {
      const T sum = from_f32<T>(to_f32(src[i]) + to_f32(x[base + i]));
      src[i] = sum;
      v = to_f32(sum);
    } else {
      v = to_f32(src[i]);
    }
    sq += v * v;
  }
  const float total = block_sum(sq, scratch);
  const float scale = 1.0f / sqrtf(total / static_cast<float>(d) + eps);
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
    const float y = to_f32(src[i]) * scale;
    out[base + i] = from_f32<T>(y * to_f32(weight[i]));
  }
}

constexpr int max_chunks = 4;  // 16-byte chunks a thread of the vectorized kernel holds

/// The vectorized kernel: thread t holds chunks t, t + blockDim.x, ... (at most max_chunks)
/// of row blockIdx.x in registers. Same contract as rmsnorm_kernel.
template <class T, class W>
__global__ void rmsnorm_vec_kernel(T* out, T* residual, const T* x, const W* weight, int chunks,
                                   float eps) {
  pdl_wait();  // launched with launch_pdl: nothing before this reads or writes
  pdl_trigger();
  constexpr int per = 16 / sizeof(T);
  __shared__ float scratch[32];
  const int64_t base = static_cast<int64_t>(blockIdx.x) * chunks;  // in chunks
  uint4* res4 = residual ? reinterpret_cast<uint4*>(residual) + base : nullptr;
  const uint4* x4 = reinterpret_cast<const uint4*>(x) + base;
  uint4 held[max_chunks];
  float sq = 0.0f;
#pragma unroll
  for (int j = 0; j < max_chunks; ++j) {
    const int c = threadIdx.x + j * blockDim.x;
    if (c >= chunks) break;
    uint4 v = x4[c];
    T* e = reinterpret_cast<T*>(&v);
    if (res4) {
      uint4 r = res4[c];
      const T* re = reinterpret_cast<const T*>(&r);
#pragma unroll
      for (int i = 0; i < per; ++i) e[i] = from_f32<T>(to_f32(re[i]) + to_f32(e[i]));
      res4[c] = v;
    }
#pragma unroll
    for (int i = 0; i < per; ++i) sq += to_f32(e[i]) * to_f32(e[i]);
    held[j] = v;
  }
  const float total = block_sum(sq, scratch);
  const float scale = 1.0f / sqrtf(total / static_cast<float>(chunks * per) + eps);
  uint4* out4 = reinterpret_cast<uint4*>(out) + base;
#pragma unroll
  for (int j = 0; j < max_chunks; ++j) {
    const int c = threadIdx.x + j * blockDim.x;
    if (c >= chunks) break;
    uint4 o;
    const T* e = reinterpret_cast<const T*>(&held[j]);
    T* oe = reinterpret_cast<T*>(&o);
#pragma unroll
    for (int i = 0; i < per; ++i) oe[i] = from_f32<T>(to_f32(e[i]) * scale * to_f32(weight[c * per + i]));
    out4[c] = o;
  }
}

/// Checks out, x (named x_name) and weight of an [m, d] norm on the device.
void check(const char* op, const op_context& ctx, tensor_view out, tensor_view x,
           const char* x_name, tensor_view weight) {
  require_cuda_ctx(op, ctx);
  require_device_float(op, x_name, x);
  require_device(op, "out", out);
  require_device_float(op, "weight", weight);
  require_same_type(op, "out", out, x_name, x);
  require(weight.type == dtype::f32 || weight.type == x.type, op,
          std::string("weight is ") + dtype_name(weight.type) + ", expected f32 or " +
              dtype_name(x.type) + " (the type of " + x_name + ")");
  require_rank(op, x_name, x, 2);
  require(x.shape[1] > 0, op, std::string(x_name) + " " + x.shape.str() + " has empty rows");
  require(x.shape[0] <= 2147483647, op, std::string(x_name) + " " + x.shape.str() + " has too many rows");
  require_shape(op, "out", out, x.shape);
  require_shape(op, "weight", weight, shape_t{x.shape[1]});
}

/// True when every pointer is 16-byte aligned.
bool aligned16(std::initializer_list<const void*> ps) {
  for (const void* p : ps)
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
  return true;
}

/// Launches the vectorized kernel when the row fits it, else rmsnorm_kernel, for every row
/// (residual may be null).
void launch(const char* op, const op_context& ctx, tensor_view out, void* residual, tensor_view x,
            tensor_view weight, float eps) {
  const int64_t m = x.shape[0], d = x.shape[1];
  if (m == 0) return;
  dispatch_float(x.type, op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    T* o = static_cast<T*>(out.data);
    T* r = static_cast<T*>(residual);
    const T* xs = static_cast<const T*>(x.data);
    const unsigned grid = static_cast<unsigned>(m);
    cudaStream_t st = stream_of(ctx);
    constexpr int64_t per = 16 / sizeof(T);
    const int64_t chunks = d / per;
    if (d % per == 0 && chunks <= 1024 * max_chunks && aligned16({o, r, xs})) {
      const int threads = static_cast<int>(std::min<int64_t>(1024, std::max<int64_t>(32, (chunks + 31) / 32 * 32)));
      const int ch = static_cast<int>(chunks);
      if (weight.type == dtype::f32)
        launch_pdl(rmsnorm_vec_kernel<T, float>, dim3(grid), dim3(threads), 0, st, o, r, xs, weight.f32(), ch, eps);
      else
        launch_pdl(rmsnorm_vec_kernel<T, T>, dim3(grid), dim3(threads), 0, st, o, r, xs, static_cast<const T*>(weight.data), ch, eps);
      return;
    }
    const int threads = d <= 4096 ? 256 : 1024;
    if (weight.type == dtype::f32)
      launch_pdl(rmsnorm_kernel<T, float>, dim3(grid), dim3(threads), 0, st, o, r, xs, weight.f32(), d, eps);
    else
      launch_pdl(rmsnorm_kernel<T, T>, dim3(grid), dim3(threads), 0, st, o, r, xs, static_cast<const T*>(weight.data), d, eps);
  });
  check_launch(op, "rmsnorm kernel");
}

}  // namespace

void rmsnorm(const op_context& ctx, tensor_view out, tensor_view x, tensor_view weight, float eps) {
  check("rmsnorm", ctx, out, x, "x", weight);
  launch("rmsnorm", ctx, out, nullptr, x, weight, eps);
}

void add_rmsnorm(const op_context& ctx, tensor_view out, tensor_view residual, tensor_view x,
                 tensor_view weight, float eps) {
  const char* op = "add_rmsnorm";
  check(op, ctx, out, residual, "residual", weight);
  require_device(op, "x", x);
  require_same_type(op, "x", x, "residual", residual);
  require_shape(op, "x", x, residual.shape);
  launch(op, ctx, out, residual.data, x, weight, eps);
}

}  // namespace troupe::kernels::cuda
