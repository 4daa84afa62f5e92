#pragma once
// The skinny GEMV of decode steps, shared by matmul (kernels/cuda/matmul.cu) and the norm
// fusions (kernels/cuda/norm_matmul.cu).
//
// out[m, n] = x[m, k] · w[n, k]ᵀ (+ bias) for f16/bf16 with m <= 8. Memory-bound: every
// weight byte is read once, in 16-byte loads that stream past L1 (ld.global.cs), with U
// chunks of R rows in flight per lane before the first use. A warp owns R consecutive output
// rows and walks k in 16-byte chunks (lane, lane + 32, ...); x (a few KB, L1/L2 resident) is
// read with ordinary cached loads and reused across the R rows. Accumulation in fp32, one
// fixed order per row (lane partial sums in k order, then a butterfly over the 32 lanes), so a
// row's result does not depend on m or on the other rows. M is m rounded up to 1, 2, 4 or 8:
// the extra x rows are clamped to row m - 1 and never stored.
//
// Modes (gemv_mode): plain; PAIR (the fused gate/up projection and SwiGLU); with NORM the
// block first computes rmsnorm(x) (one row) into shared memory, bitwise as the CUDA rmsnorm
// kernel does (its reduction tree emulated), and multiplies that; with ACC the store adds the
// rounded product to out (out += x · wᵀ, rounded as matmul then add_inplace).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kernels/cuda/common.cuh"

namespace troupe::kernels::cuda {

constexpr int gemv_warps = 8;  // warps per block
constexpr int gemv_rows = 2;   // output rows per warp (R)
constexpr int gemv_norm_max_k = 8192;  // widest row the NORM prologue holds in shared memory
constexpr int rmsnorm_max_chunks = 4;  // 16-byte chunks a thread of the vectorized rmsnorm holds
/// The k from which matmul's GEMV takes one output row a warp (kernels/cuda/matmul.cu).
constexpr int64_t gemv_long_k = 8192;

/// The GEMV's reach in rows: TROUPE_GEMV_MAX_ROWS (0 turns it off), default 1 (matmul.cu).
int gemv_row_limit();
/// Whether the GEMV computes out = x · wᵀ: f16/bf16 x and w, 1-8 rows, k a multiple of 8, x and
/// w 16-byte aligned, out of x's type or f32 (matmul.cu).
bool gemv_fits(tensor_view out, tensor_view x, tensor_view w);

/// What a GEMV launch computes besides the plain product.
struct gemv_extras {
  const void* bias = nullptr;  ///< [n] in out's type or f32, or null
  bool bias_f32 = false;
  const void* norm = nullptr;  ///< NORM: the rmsnorm weight [k], f32 or x's type
  bool norm_f32 = false;
  float eps = 0.0f;            ///< NORM: rmsnorm's epsilon
};

__device__ __forceinline__ uint4 load_stream(const uint4* p) { return __ldcs(p); }

__device__ __forceinline__ float2 pair_f32(uint32_t u, __nv_bfloat16*) {
  return make_float2(__uint_as_float(u << 16), __uint_as_float(u & 0xffff0000u));
}
__device__ __forceinline__ float2 pair_f32(uint32_t u, __half*) {
  __half2 h;
  memcpy(&h, &u, 4);
  return __half22float2(h);
}

/// acc += Σ of the 8 products of two 16-byte chunks.
template <class T>
__device__ __forceinline__ float dot8(uint4 a, uint4 b, float acc) {
  const uint32_t av[4] = {a.x, a.y, a.z, a.w}, bv[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 fa = pair_f32(av[i], static_cast<T*>(nullptr));
    const float2 fb = pair_f32(bv[i], static_cast<T*>(nullptr));
    acc = fmaf(fa.x, fb.x, acc);
    acc = fmaf(fa.y, fb.y, acc);
  }
  return acc;
}

/// The thread count the vectorized CUDA rmsnorm kernel takes for a row of `chunks` 16-byte
/// chunks (kernels/cuda/rmsnorm.cu): the NORM prologue reduces as that many threads would.
__host__ __device__ constexpr int rmsnorm_vec_threads(int chunks) {
  return chunks <= 32 ? 32 : (chunks >= 1024 ? 1024 : (chunks + 31) / 32 * 32);
}

/// NORM prologue: xs[0, k8) = rmsnorm(x row 0) in 16-byte chunks, computed by the whole
/// block and bitwise equal to the vectorized rmsnorm kernel's output: thread t stands for
/// that kernel's threads t, t + blockDim.x, ..., each summing its chunks in the same order,
/// then the same warp butterflies and the same final butterfly over the warp sums.
template <class T, class W>
__device__ void norm_prologue(uint4* xs, const T* __restrict__ x, const W* __restrict__ norm, int k8, float eps) {
  constexpr int per = 16 / sizeof(T);
  __shared__ float warp_sums[32];
  const uint4* x4 = reinterpret_cast<const uint4*>(x);
  const int virt = rmsnorm_vec_threads(k8);
  const int lane = threadIdx.x & 31;
  for (int v0 = threadIdx.x - lane; v0 < virt; v0 += blockDim.x) {  // one virtual warp per pass
    const int v = v0 + lane;
    float sq = 0.0f;
#pragma unroll
    for (int j = 0; j < rmsnorm_max_chunks; ++j) {
      const int c = v + j * virt;
      if (c >= k8) break;
      const uint4 u = x4[c];
      xs[c] = u;
      const T* e = reinterpret_cast<const T*>(&u);
#pragma unroll
      for (int i = 0; i < per; ++i) sq += to_f32(e[i]) * to_f32(e[i]);
    }
    for (int o = 16; o > 0; o >>= 1) sq += __shfl_xor_sync(0xffffffffu, sq, o);
    if (lane == 0) warp_sums[v0 / 32] = sq;
  }
  __syncthreads();
  float total = lane < virt / 32 ? warp_sums[lane] : 0.0f;
  for (int o = 16; o > 0; o >>= 1) total += __shfl_xor_sync(0xffffffffu, total, o);
  const float scale = 1.0f / sqrtf(total / static_cast<float>(k8 * per) + eps);
  for (int c = threadIdx.x; c < k8; c += blockDim.x) {
    uint4 u = xs[c];
    T* e = reinterpret_cast<T*>(&u);
#pragma unroll
    for (int i = 0; i < per; ++i) e[i] = from_f32<T>(to_f32(e[i]) * scale * to_f32(norm[c * per + i]));
    xs[c] = u;
  }
  __syncthreads();
}

enum class gemv_mode { plain, pair, norm, norm_pair, acc };

/// The GEMV (see the top of this file). PAIR modes: w is [2n, k], gate rows then up rows; a
/// warp computes gate row j and up row n + j (R = 2) and stores out[i, j] = silu(g) * u with g
/// and u first rounded to T, exactly what the GEMV and cuda::swiglu give apart. NORM modes
/// need M = 1, k <= gemv_norm_max_k and k8 * 16 bytes of dynamic shared memory.
template <class T, class TO, int M, int R, int U, gemv_mode MODE = gemv_mode::plain>
__global__ void __launch_bounds__(gemv_warps * 32) gemv_kernel(TO* __restrict__ out, const T* __restrict__ x,
                                                               const T* __restrict__ w, gemv_extras ex, int m,
                                                               int n, int k) {
  constexpr bool PAIR = MODE == gemv_mode::pair || MODE == gemv_mode::norm_pair;
  constexpr bool NORM = MODE == gemv_mode::norm || MODE == gemv_mode::norm_pair;
  static_assert(!PAIR || R == 2, "a paired GEMV computes one gate and one up row a warp");
  static_assert(!NORM || M == 1, "the norm prologue normalizes one row");
  extern __shared__ uint4 xs[];
  const int lane = threadIdx.x & 31;
  const int warp_id = blockIdx.x * gemv_warps + (threadIdx.x >> 5);
  const int row0 = PAIR ? warp_id : warp_id * R;
  // A NORM block normalizes x with all its threads: no warp leaves before that.
  if (!NORM && row0 >= n) {
    pdl_wait();  // a finished grid implies the one before finished (see pdl_wait)
    return;
  }
  const int k8 = k / 8;
  const uint4* wr[R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int64_t row = PAIR ? min(row0, n - 1) + static_cast<int64_t>(r) * n : min(row0 + r, n - 1);
    wr[r] = reinterpret_cast<const uint4*>(w + row * k);
  }
  const uint4* xr[M];
#pragma unroll
  for (int i = 0; i < M; ++i) xr[i] = reinterpret_cast<const uint4*>(x + static_cast<int64_t>(min(i, m - 1)) * k);
  float acc[M][R];
#pragma unroll
  for (int i = 0; i < M; ++i)
#pragma unroll
    for (int r = 0; r < R; ++r) acc[i][r] = 0.0f;
  int c = lane;
  // The weights never change during a step: the first pass's loads are issued before
  // waiting on the kernel before (programmatic dependent launch); x is read after.
  uint4 wv[U][R];
  auto load_pass = [&](int at) {
#pragma unroll
    for (int u = 0; u < U; ++u)
#pragma unroll
      for (int r = 0; r < R; ++r) wv[u][r] = load_stream(wr[r] + at + 32 * u);
  };
  if (c + 32 * (U - 1) < k8) load_pass(c);
  pdl_wait();
  pdl_trigger();
  if constexpr (NORM) {
    if (ex.norm_f32)
      norm_prologue<T, float>(xs, x, static_cast<const float*>(ex.norm), k8, ex.eps);
    else
      norm_prologue<T, T>(xs, x, static_cast<const T*>(ex.norm), k8, ex.eps);
    if (row0 >= n) return;
  }
  auto load_x = [&](int i, int at) { return NORM ? xs[at] : __ldg(xr[i] + at); };
  for (; c + 32 * (U - 1) < k8;) {
#pragma unroll
    for (int u = 0; u < U; ++u)
#pragma unroll
      for (int i = 0; i < M; ++i) {
        const uint4 xv = load_x(i, c + 32 * u);
#pragma unroll
        for (int r = 0; r < R; ++r) acc[i][r] = dot8<T>(wv[u][r], xv, acc[i][r]);
      }
    c += 32 * U;
    if (c + 32 * (U - 1) < k8) load_pass(c);
  }
  for (; c < k8; c += 32) {
    uint4 wv1[R];
#pragma unroll
    for (int r = 0; r < R; ++r) wv1[r] = load_stream(wr[r] + c);
#pragma unroll
    for (int i = 0; i < M; ++i) {
      const uint4 xv = load_x(i, c);
#pragma unroll
      for (int r = 0; r < R; ++r) acc[i][r] = dot8<T>(wv1[r], xv, acc[i][r]);
    }
  }
#pragma unroll
  for (int i = 0; i < M; ++i)
#pragma unroll
    for (int r = 0; r < R; ++r) {
      float v = acc[i][r];
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
      acc[i][r] = v;
    }
  if constexpr (PAIR) {
    // Lane 2 * i stores (row i, column row0).
#pragma unroll
    for (int i = 0; i < M; ++i)
      if (lane == 2 * i && i < m) {
        const float g = to_f32(from_f32<T>(acc[i][0])), u = to_f32(from_f32<T>(acc[i][1]));
        out[static_cast<int64_t>(i) * n + row0] = from_f32<TO>(silu_times(g, u));
      }
    return;
  }
  // Lane i * R + r stores (row i, column row0 + r).
#pragma unroll
  for (int i = 0; i < M; ++i)
#pragma unroll
    for (int r = 0; r < R; ++r)
      if (lane == i * R + r && i < m && row0 + r < n) {
        float v = acc[i][r];
        if (ex.bias)
          v += ex.bias_f32 ? static_cast<const float*>(ex.bias)[row0 + r]
                           : to_f32(static_cast<const TO*>(ex.bias)[row0 + r]);
        TO* o = out + static_cast<int64_t>(i) * n + row0 + r;
        if constexpr (MODE == gemv_mode::acc)
          *o = from_f32<TO>(to_f32(*o) + to_f32(from_f32<TO>(v)));
        else
          *o = from_f32<TO>(v);
      }
}

}  // namespace troupe::kernels::cuda
