// CUDA gated-MLP activation over the fused gate/up output: out = silu(gate) * up, the two
// halves of each row, element-wise in float (expf, as cuda::silu_mul).
#include "kernels/cuda/common.cuh"
#include "kernels/swiglu.h"

namespace troupe::kernels::cuda {
namespace {

template <class T>
__global__ void swiglu_kernel(T* out, const T* gate_up, int64_t m, int64_t f) {
  pdl_wait();  // launched with launch_pdl: nothing before this reads or writes
  pdl_trigger();
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < m * f;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = i / f, j = i % f;
    const float g = to_f32(gate_up[r * 2 * f + j]);
    out[i] = from_f32<T>(silu_times(g, to_f32(gate_up[r * 2 * f + f + j])));
  }
}

/// The same in 16-byte chunks (f a multiple of 16 / sizeof(T), 16-byte aligned rows): one
/// chunk of gate and of up a thread, the same float arithmetic element by element.
template <class T>
__global__ void swiglu_vec_kernel(T* out, const T* gate_up, int64_t m, int64_t f) {
  pdl_wait();  // launched with launch_pdl: nothing before this reads or writes
  pdl_trigger();
  constexpr int per = 16 / sizeof(T);
  const int64_t fc = f / per;  // chunks per row of out
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < m * fc;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = i / fc, j = i % fc;
    const uint4* row = reinterpret_cast<const uint4*>(gate_up + r * 2 * f);
    const uint4 g4 = row[j], u4 = row[fc + j];
    const T* g = reinterpret_cast<const T*>(&g4);
    const T* u = reinterpret_cast<const T*>(&u4);
    uint4 o4;
    T* o = reinterpret_cast<T*>(&o4);
#pragma unroll
    for (int e = 0; e < per; ++e) o[e] = from_f32<T>(silu_times(to_f32(g[e]), to_f32(u[e])));
    reinterpret_cast<uint4*>(out)[i] = o4;
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
    constexpr int64_t per = 16 / sizeof(T);
    if (f % per == 0 && reinterpret_cast<uintptr_t>(out.data) % 16 == 0 &&
        reinterpret_cast<uintptr_t>(gate_up.data) % 16 == 0) {
      launch_pdl(swiglu_vec_kernel<T>, dim3(grid_for(m * f / per, 256)), dim3(256), 0, stream_of(ctx),
                 static_cast<T*>(out.data), static_cast<const T*>(gate_up.data), m, f);
      return;
    }
    launch_pdl(swiglu_kernel<T>, dim3(grid_for(m * f, 256)), dim3(256), 0, stream_of(ctx), static_cast<T*>(out.data),
                                                                       static_cast<const T*>(gate_up.data), m, f);
  });
  check_launch(op, "swiglu_kernel");
}

}  // namespace troupe::kernels::cuda
