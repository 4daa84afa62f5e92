#pragma once
/// Helpers shared by the CUDA kernels (internal): element conversion, argument checks,
/// CUDA error checks that name the op, and a dtype dispatch.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <utility>

#include "kernels/cpu/op_checks.h"
#include "kernels/op_context.h"

namespace troupe::kernels::cuda {

using cpu::require;
using cpu::require_rank;
using cpu::require_shape;

/// Loads one element as float.
__device__ __forceinline__ float to_f32(float v) { return v; }
/// Loads one element as float.
__device__ __forceinline__ float to_f32(__half v) { return __half2float(v); }
/// Loads one element as float.
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }

/// Converts a float to the element type T (round to nearest even).
template <class T>
__device__ __forceinline__ T from_f32(float v);
template <>
__device__ __forceinline__ float from_f32<float>(float v) { return v; }
template <>
__device__ __forceinline__ __half from_f32<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

/// silu(g) * u in float (expf, as the CPU reference's std::exp): the one formula of every
/// CUDA SwiGLU (silu_mul, swiglu, the paired GEMV of gate_up_swiglu), so they agree bitwise.
__device__ __forceinline__ float silu_times(float g, float u) { return g / (1.0f + expf(-g)) * u; }

/// The NeoX rotation of the pair (x0, x1) by `angle` (pos * inv_freq[i]): sincosf (precise,
/// not the fast intrinsics), then (x0 c - x1 s, x0 s + x1 c) in float: the one formula of
/// cuda::rope and cuda::rope_kv_write, so they agree bitwise.
__device__ __forceinline__ float2 rope_rotate(float x0, float x1, float angle) {
  float s, c;
  sincosf(angle, &s, &c);
  return make_float2(x0 * c - x1 * s, x0 * s + x1 * c);
}

/// Programmatic dependent launch (Hopper and later): waits until the grid launched before
/// this one on the stream has finished and its writes are visible. A kernel launched with
/// launch_pdl calls it before it reads anything an earlier kernel wrote or writes anything
/// an earlier kernel reads; only loads of data no kernel writes (weights) may come before.
/// Every block reaches it, also one with nothing to do, so a grid never finishes before the
/// one it depends on. A no-op for a kernel launched without the attribute.
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

/// Lets the next kernel on the stream (if launched with launch_pdl) start its blocks and
/// the part before its pdl_wait while this one finishes, once every block of this grid has
/// called it or exited (so the next grid never takes the place of a block of this one not
/// yet started). It says nothing about memory: the next kernel's pdl_wait still waits for
/// this whole grid.
__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

/// Whether launch_pdl sets the programmatic-serialization attribute: TROUPE_PDL=0 turns it
/// off (each kernel then waits for the one before as with a plain launch).
inline bool pdl_enabled() {
  static const bool on = [] {
    const char* e = std::getenv("TROUPE_PDL");
    return !(e && std::string(e) == "0");
  }();
  return on;
}

/// Launches `kernel` with programmatic stream serialization (when pdl_enabled()): it may
/// start while the kernel before it on the stream finishes; it must call pdl_wait() as
/// described there. Graph capture keeps the programmatic edge. Errors are left for
/// check_launch.
template <class... Params, class... Args>
void launch_pdl(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                Args&&... args) {
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = pdl_enabled() ? 1 : 0;
  (void)cudaLaunchKernelEx(&cfg, kernel, static_cast<Params>(std::forward<Args>(args))...);
}

/// Throws std::runtime_error("<op>: <what>: <CUDA error>") unless err is cudaSuccess.
inline void check_cuda(cudaError_t err, const char* op, const char* what) {
  if (err != cudaSuccess)
    throw std::runtime_error(std::string(op) + ": " + what + ": " + cudaGetErrorName(err) + " (" +
                             cudaGetErrorString(err) + ")");
}

/// Checks the launch just made (cudaGetLastError) and names the kernel in the error.
inline void check_launch(const char* op, const char* kernel) {
  check_cuda(cudaGetLastError(), op, (std::string("launch of ") + kernel).c_str());
}

/// The stream of `ctx`.
inline cudaStream_t stream_of(const op_context& ctx) {
  return static_cast<cudaStream_t>(ctx.stream);
}

/// A process-wide on/off switch of a kernel path not yet on by default: read once from an
/// environment variable (on only when it is "1"), set by tests and benchmarks.
class env_switch {
 public:
  explicit constexpr env_switch(const char* var) : var_(var) {}
  bool enabled() {
    int s = state_.load();
    if (s < 0) {
      const char* e = std::getenv(var_);
      int expected = -1;
      state_.compare_exchange_strong(expected, e && e[0] == '1' ? 1 : 0);
      s = state_.load();
    }
    return s == 1;
  }
  void set(bool on) { state_ = on ? 1 : 0; }

 private:
  const char* var_;
  std::atomic<int> state_{-1};  ///< -1 until read, then 0 or 1
};

/// Checks that `ctx` runs on the CUDA backend.
inline void require_cuda_ctx(const char* op, const op_context& ctx) {
  require(ctx.backend == backend_kind::cuda, op,
          std::string("the op context runs on ") + backend_name(ctx.backend) + ", not on cuda");
}

/// True for the element types the CUDA kernels compute in (f32, f16, bf16).
inline bool is_float_type(dtype t) { return t == dtype::f32 || t == dtype::f16 || t == dtype::bf16; }

/// Checks that `t` lives on the CUDA device and has data.
inline void require_device(const char* op, const char* name, const tensor_view& t) {
  require(t.where == backend_kind::cuda, op,
          std::string(name) + " lives on " + backend_name(t.where) + ", not on cuda");
  require(t.data != nullptr || t.numel() == 0, op, std::string(name) + " has no data");
}

/// Checks that `t` is a device tensor of type `type`.
inline void require_device(const char* op, const char* name, const tensor_view& t, dtype type) {
  require_device(op, name, t);
  require(t.type == type, op,
          std::string(name) + " is " + dtype_name(t.type) + ", expected " + dtype_name(type));
}

/// Checks that `t` is a device tensor of a float type (f32, f16 or bf16).
inline void require_device_float(const char* op, const char* name, const tensor_view& t) {
  require_device(op, name, t);
  require(is_float_type(t.type), op,
          std::string(name) + " is " + dtype_name(t.type) + ", expected f32, f16 or bf16");
}

/// Checks that `t` has the same element type as `ref` (named `ref_name`).
inline void require_same_type(const char* op, const char* name, const tensor_view& t,
                              const char* ref_name, const tensor_view& ref) {
  require(t.type == ref.type, op,
          std::string(name) + " is " + dtype_name(t.type) + " but " + ref_name + " is " +
              dtype_name(ref.type) + ": they must match");
}

/// A type tag for dispatch_float.
template <class T>
struct type_tag {
  using type = T;
};

/// Calls f(type_tag<T>{}) with T the CUDA element type of `t` (float, __half, __nv_bfloat16).
template <class F>
void dispatch_float(dtype t, const char* op, F&& f) {
  switch (t) {
    case dtype::f32: return f(type_tag<float>{});
    case dtype::f16: return f(type_tag<__half>{});
    case dtype::bf16: return f(type_tag<__nv_bfloat16>{});
    case dtype::i32: break;
  }
  throw std::invalid_argument(std::string(op) + ": " + dtype_name(t) +
                              " is not a float type (f32, f16 or bf16)");
}

/// Blocks of `threads` that cover `n` elements, capped for grid-stride loops.
inline unsigned grid_for(int64_t n, int threads) {
  const int64_t blocks = (n + threads - 1) / threads;
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > 65535 * 8 ? 65535 * 8 : blocks));
}

/// Sum of `v` over the block (blockDim.x a multiple of 32, at most 1024); every thread gets
/// it. `scratch` holds 32 floats of shared memory; the reduction order is fixed.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, n_warps = blockDim.x / 32;
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < n_warps ? scratch[lane] : 0.0f;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

/// Max of `v` over the block (same contract as block_sum).
__device__ __forceinline__ float block_max(float v, float* scratch) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, n_warps = blockDim.x / 32;
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < n_warps ? scratch[lane] : -INFINITY;
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

}  // namespace troupe::kernels::cuda
