// The skinny GEMV of kernels::cuda::matmul (m <= 8 rows, f16/bf16), and its paired form
// with SwiGLU in the store (gate_up_swiglu).
//
// out[m, n] = x[m, k] · w[n, k]ᵀ (+ bias) for f16/bf16 with m <= gemv_max_rows. Memory-bound:
// every weight byte is read once, in 16-byte loads that stream past L1 (ld.global.cs), with
// U chunks of R rows in flight per lane before the first use. A warp owns R consecutive output
// rows and walks k in 16-byte chunks (lane, lane + 32, ...); x (a few KB, L1/L2 resident) is
// read with ordinary cached loads and reused across the R rows. Accumulation in fp32, one
// fixed order per row (lane partial sums in k order, then a butterfly over the 32 lanes), so a
// row's result does not depend on m or on the other rows. M is m rounded up to 1, 2, 4 or 8:
// the extra x rows are clamped to row m - 1 and never stored.

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <type_traits>
#include <utility>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/matmul_common.cuh"
#include "kernels/matmul.h"

namespace troupe::kernels::cuda {
namespace matmul_detail {

int gemv_row_limit() {
  static const int limit = [] {
    const char* e = std::getenv("TROUPE_GEMV_MAX_ROWS");
    if (!e || !*e) return gemv_default_rows;
    return std::max(0, std::min(8, std::atoi(e)));
  }();
  return limit;
}

namespace {
std::atomic<int> short_k_variant{-1}, long_k_variant{-1};

int parse_variant(const std::string& s) {
  return s.empty() ? -1 : std::max(0, std::min(7, std::atoi(s.c_str())));
}

void read_variant_env() {
  static std::once_flag once;
  std::call_once(once, [] {
    const char* e = std::getenv("TROUPE_GEMV_VARIANT");
    if (!e || !*e) return;
    const std::string v = e;
    const auto comma = v.find(',');
    short_k_variant = parse_variant(v.substr(0, comma));
    long_k_variant = comma == std::string::npos ? short_k_variant.load() : parse_variant(v.substr(comma + 1));
  });
}
}  // namespace

std::pair<int, int> gemv_variants() {
  read_variant_env();
  return {short_k_variant.load(), long_k_variant.load()};
}

}  // namespace matmul_detail

void set_gemv_variants(int short_k, int long_k) {
  matmul_detail::read_variant_env();
  matmul_detail::short_k_variant = short_k < 0 ? -1 : std::min(7, short_k);
  matmul_detail::long_k_variant = long_k < 0 ? -1 : std::min(7, long_k);
}

namespace {
using namespace matmul_detail;

constexpr int gemv_warps = 8;  // warps per block (W) of the default tiling
constexpr int gemv_rows = 2;   // output rows per warp (R) of the default tiling

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

/// x · g for the 8 elements of a 16-byte chunk of x and of the norm weight g, in float;
/// ss += Σ x² (the norm's sum, beside the products).
template <class T>
__device__ __forceinline__ void scaled8(uint4 xv, uint4 gv, float (&xs)[8], float& ss) {
  const uint32_t xa[4] = {xv.x, xv.y, xv.z, xv.w}, ga[4] = {gv.x, gv.y, gv.z, gv.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 fx = pair_f32(xa[i], static_cast<T*>(nullptr));
    const float2 fg = pair_f32(ga[i], static_cast<T*>(nullptr));
    ss = fmaf(fx.x, fx.x, ss);
    ss = fmaf(fx.y, fx.y, ss);
    xs[2 * i] = fx.x * fg.x;
    xs[2 * i + 1] = fx.y * fg.y;
  }
}

/// acc += Σ of the 8 products of a 16-byte weight chunk and 8 floats.
template <class T>
__device__ __forceinline__ float dotf8(uint4 a, const float (&xs)[8], float acc) {
  const uint32_t av[4] = {a.x, a.y, a.z, a.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 fa = pair_f32(av[i], static_cast<T*>(nullptr));
    acc = fmaf(fa.x, xs[2 * i], acc);
    acc = fmaf(fa.y, xs[2 * i + 1], acc);
  }
  return acc;
}

/// What the fused forms add to a GEMV (kernels/norm_matmul.h), bits of its F:
/// - fuse_norm multiplies x by the norm weight as it streams it, sums x² beside the dots and
///   scales each row's dots by 1 / sqrt(mean(x²) + eps) before the store;
/// - fuse_add adds the product, rounded to T, to out's value (the residual) as add_inplace;
/// - fuse_rope (the fused q/k/v weight, one row): a warp computes rows d and d + head_dim / 2
///   of a head and stores them as rope_kv_write does (rotated into q or the k cache at the
///   row's slot, copied into the v cache), never into out.
enum gemv_fuse : unsigned { fuse_norm = 1, fuse_add = 2, fuse_rope = 4 };

struct gemv_fusion {
  const void* norm = nullptr;  // [k] in T, with fuse_norm
  float eps = 0.0f;
  void* q = nullptr;           // fuse_rope: [n_heads, head_dim]
  void* k_cache = nullptr;     // fuse_rope: [n_slots, n_kv, head_dim]
  void* v_cache = nullptr;
  const int32_t* position = nullptr;  // fuse_rope: [1]
  const int32_t* slot = nullptr;      // fuse_rope: [1]
  const float* inv_freq = nullptr;    // fuse_rope: [head_dim / 2]
  int n_heads = 0, n_kv = 0, head_dim = 0;
  int64_t n_slots = 0;
};

/// fuse_rope's store of rows (d, d + half) of head h, a and b already rounded to T.
template <class T>
__device__ __forceinline__ void rope_store(const gemv_fusion& fu, int h, int d, T a, T b, int pos, int64_t slot) {
  const int hd = fu.head_dim, half = hd / 2;
  T* dst = nullptr;
  if (h < fu.n_heads) {
    dst = static_cast<T*>(fu.q) + static_cast<int64_t>(h) * hd;
  } else {
    if (slot < 0 || slot >= fu.n_slots) return;  // no KV write, as rope_kv_write
    const bool is_k = h < fu.n_heads + fu.n_kv;
    dst = static_cast<T*>(is_k ? fu.k_cache : fu.v_cache) + slot * fu.n_kv * hd +
          static_cast<int64_t>(h - fu.n_heads - (is_k ? 0 : fu.n_kv)) * hd;
  }
  if (h >= fu.n_heads + fu.n_kv) {  // v: copied
    dst[d] = a;
    dst[d + half] = b;
    return;
  }
  const float2 y = rope_rotate(to_f32(a), to_f32(b), static_cast<float>(pos) * fu.inv_freq[d]);
  dst[d] = from_f32<T>(y.x);
  dst[d + half] = from_f32<T>(y.y);
}

/// Adds chunk `at` of every x row (times the norm weight, with NORM) into acc.
template <class T, int M, int R, bool NORM>
__device__ __forceinline__ void gemv_chunk(const uint4 (&wv)[R], const uint4* const (&xr)[M], const uint4* g, int at,
                                           float (&acc)[M][R], float (&ss)[M]) {
  if constexpr (NORM) {
    const uint4 gv = __ldg(g + at);
#pragma unroll
    for (int i = 0; i < M; ++i) {
      float xs[8];
      scaled8<T>(__ldg(xr[i] + at), gv, xs, ss[i]);
#pragma unroll
      for (int r = 0; r < R; ++r) acc[i][r] = dotf8<T>(wv[r], xs, acc[i][r]);
    }
  } else {
#pragma unroll
    for (int i = 0; i < M; ++i) {
      const uint4 xv = __ldg(xr[i] + at);
#pragma unroll
      for (int r = 0; r < R; ++r) acc[i][r] = dot8<T>(wv[r], xv, acc[i][r]);
    }
  }
}

/// PAIR (the fused gate/up projection and SwiGLU): w is [2n, k], gate rows then up rows; a
/// warp computes gate row j and up row n + j (R = 2) and stores out[i, j] = silu(g) * u
/// with g and u first rounded to T, exactly what the GEMV and cuda::swiglu give apart.
/// W warps a block; MINB blocks an SM asked of the register allocator. F: the fusions of
/// gemv_fuse.
template <class T, class TO, int M, int R, int U, bool PAIR = false, int W = gemv_warps, int MINB = 0, unsigned F = 0>
__global__ void __launch_bounds__(W * 32, MINB) gemv_kernel(TO* __restrict__ out, const T* __restrict__ x,
                                                            const T* __restrict__ w, const void* bias,
                                                            bool bias_f32, gemv_fusion fu, int m, int n, int k) {
  constexpr bool NORM = F & fuse_norm, ADD = F & fuse_add, ROPE = F & fuse_rope;
  static_assert(!PAIR || R == 2, "a paired GEMV computes one gate and one up row a warp");
  static_assert(!ADD || (std::is_same_v<T, TO> && !PAIR), "the residual add stores in x's type, unpaired");
  static_assert(!ROPE || (R == 2 && M == 1 && !PAIR && !ADD), "RoPE pairs two rows of a head, at one row");
  const int lane = threadIdx.x & 31;
  const int warp_id = blockIdx.x * W + (threadIdx.x >> 5);
  // ROPE: warp j computes rows d and d + half of head j / half, d = j % half.
  const int half = ROPE ? fu.head_dim / 2 : 1;
  const int row0 = PAIR ? warp_id : ROPE ? (warp_id / half) * fu.head_dim + warp_id % half : warp_id * R;
  if (row0 >= n) {
    pdl_wait();  // a finished grid implies the one before finished (see pdl_wait)
    return;
  }
  const int k8 = k / 8;
  const uint4* wr[R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int64_t row = PAIR ? row0 + static_cast<int64_t>(r) * n : ROPE ? row0 + r * half : min(row0 + r, n - 1);
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
  // ADD: lane i * R + r reads the value it adds to now, its latency under the loop's.
  float old = 0.0f;
  if constexpr (ADD) {
    const int i = lane / R, r = lane % R;
    if (i < m && i < M && row0 + r < n) old = to_f32(out[static_cast<int64_t>(i) * n + row0 + r]);
  }
  int rope_pos = 0;  // ROPE: lane 0's position and slot (metadata), read under the loop
  int64_t rope_slot = -1;
  if constexpr (ROPE)
    if (lane == 0) {
      rope_pos = *fu.position;
      rope_slot = *fu.slot;
    }
  const uint4* g = static_cast<const uint4*>(fu.norm);
  float ss[M];
#pragma unroll
  for (int i = 0; i < M; ++i) ss[i] = 0.0f;
  for (; c + 32 * (U - 1) < k8;) {
#pragma unroll
    for (int u = 0; u < U; ++u) gemv_chunk<T, M, R, NORM>(wv[u], xr, g, c + 32 * u, acc, ss);
    c += 32 * U;
    if (c + 32 * (U - 1) < k8) load_pass(c);
  }
  for (; c < k8; c += 32) {
    uint4 wt[R];
#pragma unroll
    for (int r = 0; r < R; ++r) wt[r] = load_stream(wr[r] + c);
    gemv_chunk<T, M, R, NORM>(wt, xr, g, c, acc, ss);
  }
#pragma unroll
  for (int i = 0; i < M; ++i) {
#pragma unroll
    for (int r = 0; r < R; ++r) {
      float v = acc[i][r];
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
      acc[i][r] = v;
    }
    if constexpr (NORM) {
      float v = ss[i];
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
      const float scale = 1.0f / sqrtf(v / static_cast<float>(k) + fu.eps);  // as rmsnorm scales
#pragma unroll
      for (int r = 0; r < R; ++r) acc[i][r] *= scale;
    }
  }
  if constexpr (ROPE) {
    if (lane == 0) {
      float a = acc[0][0], b = acc[0][1];
      if (bias) {
        a += bias_f32 ? static_cast<const float*>(bias)[row0] : to_f32(static_cast<const T*>(bias)[row0]);
        b += bias_f32 ? static_cast<const float*>(bias)[row0 + half] : to_f32(static_cast<const T*>(bias)[row0 + half]);
      }
      rope_store<T>(fu, row0 / fu.head_dim, row0 % fu.head_dim, from_f32<T>(a), from_f32<T>(b), rope_pos, rope_slot);
    }
  } else if constexpr (PAIR) {
    // Lane 2 * i stores (row i, column row0).
#pragma unroll
    for (int i = 0; i < M; ++i)
      if (lane == 2 * i && i < m) {
        const float gate = to_f32(from_f32<T>(acc[i][0])), u = to_f32(from_f32<T>(acc[i][1]));
        out[static_cast<int64_t>(i) * n + row0] = from_f32<TO>(silu_times(gate, u));
      }
  } else {
    // Lane i * R + r stores (row i, column row0 + r).
#pragma unroll
    for (int i = 0; i < M; ++i)
#pragma unroll
      for (int r = 0; r < R; ++r)
        if (lane == i * R + r && i < m && row0 + r < n) {
          float v = acc[i][r];
          if (bias)
            v += bias_f32 ? static_cast<const float*>(bias)[row0 + r] : to_f32(static_cast<const TO*>(bias)[row0 + r]);
          if constexpr (ADD) v = old + to_f32(from_f32<TO>(v));
          out[static_cast<int64_t>(i) * n + row0 + r] = from_f32<TO>(v);
        }
  }
}

template <class T, class TO, int M, int R, int U, int W = gemv_warps, int MINB = 0>
void launch_gemv_ru(const op_context& ctx, tensor_view out, tensor_view x, tensor_view w, tensor_view bias, int m,
                    int n, int k) {
  const int rows_per_block = W * R;
  const unsigned grid = static_cast<unsigned>((n + rows_per_block - 1) / rows_per_block);
  launch_pdl(gemv_kernel<T, TO, M, R, U, false, W, MINB>, dim3(grid), dim3(W * 32), 0, stream_of(ctx),
             static_cast<TO*>(out.data), static_cast<const T*>(x.data), static_cast<const T*>(w.data),
             bias.empty() ? nullptr : bias.data, bias.type == dtype::f32, gemv_fusion{}, m, n, k);
}

template <class T, int M, int W = gemv_warps, int MINB = 0, unsigned F = 0>
void launch_gemv_pair(const op_context& ctx, tensor_view out, tensor_view x, tensor_view w, int m, int f, int k,
                      gemv_fusion fu = {}) {
  const unsigned grid = static_cast<unsigned>((f + W - 1) / W);
  launch_pdl(gemv_kernel<T, T, M, 2, (M <= 2 ? 8 : 4), true, W, MINB, F>, dim3(grid), dim3(W * 32), 0,
             stream_of(ctx), static_cast<T*>(out.data), static_cast<const T*>(x.data), static_cast<const T*>(w.data),
             nullptr, false, fu, m, f, k);
}

/// Variant 0: the default (W = 8 warps a block, R = 2 rows a warp, U = 8 chunks in flight for
/// M <= 2, else 4); 1: R = 1, U = 8; 2: R = 4, U = 4 for M <= 2, else U = 2. At one row
/// only (else 0): 3: the default asked to fit 3 blocks an SM; 4: R = 1, U = 16 (a whole row of
/// k = 4096 loaded before the wait); 5: W = 4 asked to fit 6 blocks an SM; 6: W = 4, R = 1, U = 8;
/// 7: R = 1, U = 16 asked to fit 3 blocks an SM. Benchmarks compare them.
template <class T, class TO, int M>
void launch_gemv_m(const op_context& ctx, tensor_view out, tensor_view x, tensor_view w, tensor_view bias, int m,
                   int n, int k, int variant) {
  constexpr int UD = M <= 2 ? 8 : 4;
  if (variant == 1) return launch_gemv_ru<T, TO, M, 1, 8>(ctx, out, x, w, bias, m, n, k);
  if (variant == 2) return launch_gemv_ru<T, TO, M, 4, (M <= 2 ? 4 : 2)>(ctx, out, x, w, bias, m, n, k);
  if constexpr (M == 1) {
    if (variant == 3) return launch_gemv_ru<T, TO, M, gemv_rows, UD, 8, 3>(ctx, out, x, w, bias, m, n, k);
    if (variant == 4) return launch_gemv_ru<T, TO, M, 1, 16>(ctx, out, x, w, bias, m, n, k);
    if (variant == 5) return launch_gemv_ru<T, TO, M, gemv_rows, UD, 4, 6>(ctx, out, x, w, bias, m, n, k);
    if (variant == 6) return launch_gemv_ru<T, TO, M, 1, 8, 4>(ctx, out, x, w, bias, m, n, k);
    if (variant == 7) return launch_gemv_ru<T, TO, M, 1, 16, 8, 3>(ctx, out, x, w, bias, m, n, k);
  }
  launch_gemv_ru<T, TO, M, gemv_rows, UD>(ctx, out, x, w, bias, m, n, k);
}

template <class T, class TO>
void launch_gemv(const op_context& ctx, tensor_view out, tensor_view x, tensor_view w, tensor_view bias, int m,
                 int n, int k, int variant) {
  if (m <= 1) return launch_gemv_m<T, TO, 1>(ctx, out, x, w, bias, m, n, k, variant);
  if (m <= 2) return launch_gemv_m<T, TO, 2>(ctx, out, x, w, bias, m, n, k, variant);
  if (m <= 4) return launch_gemv_m<T, TO, 4>(ctx, out, x, w, bias, m, n, k, variant);
  return launch_gemv_m<T, TO, 8>(ctx, out, x, w, bias, m, n, k, variant);
}

/// The paired GEMV at one row takes variant 3 or 5 of the short-k variant when pinned, else
/// the default tiling.
template <class T>
void launch_pair(const op_context& ctx, tensor_view out, tensor_view x, tensor_view w, int m, int f, int k) {
  if (m <= 1) {
    const int v = gemv_variants().first;
    if (v == 3) return launch_gemv_pair<T, 1, 8, 3>(ctx, out, x, w, m, f, k);
    if (v == 5) return launch_gemv_pair<T, 1, 4, 6>(ctx, out, x, w, m, f, k);
    return launch_gemv_pair<T, 1>(ctx, out, x, w, m, f, k);
  }
  if (m <= 2) return launch_gemv_pair<T, 2>(ctx, out, x, w, m, f, k);
  if (m <= 4) return launch_gemv_pair<T, 4>(ctx, out, x, w, m, f, k);
  launch_gemv_pair<T, 8>(ctx, out, x, w, m, f, k);
}

bool gemv_fits(tensor_view out, tensor_view x, tensor_view w) {
  const int64_t m = x.shape[0], k = x.shape[1], n = w.shape[0];
  return (x.type == dtype::bf16 || x.type == dtype::f16) && m >= 1 && m <= 8 && k % 8 == 0 && k > 0 &&
         n < (int64_t{1} << 31) && k < (int64_t{1} << 31) && alignment_of(x.data) >= 16 &&
         alignment_of(w.data) >= 16 && (out.type == x.type || out.type == dtype::f32);
}

}  // namespace

bool gemv(const op_context& ctx, tensor_view out, tensor_view x, tensor_view w, tensor_view bias, int variant) {
  check(ctx, out, x, w, bias);
  if (!gemv_fits(out, x, w) || (!bias.empty() && alignment_of(bias.data) < 4)) return false;
  const int m = static_cast<int>(x.shape[0]), k = static_cast<int>(x.shape[1]), n = static_cast<int>(w.shape[0]);
  if (n == 0) return true;
  dispatch_float(x.type, "matmul", [&](auto tag) {
    using T = typename decltype(tag)::type;
    if constexpr (!std::is_same_v<T, float>) {
      if (out.type == dtype::f32)
        launch_gemv<T, float>(ctx, out, x, w, bias, m, n, k, variant);
      else
        launch_gemv<T, T>(ctx, out, x, w, bias, m, n, k, variant);
    }
  });
  check_launch("matmul", "gemv_kernel");
  return true;
}

bool gemv_swiglu(const op_context& ctx, tensor_view out, tensor_view x, tensor_view w) {
  const char* op = "gate_up_swiglu";
  check_operands(op, ctx, out, x, w);
  require_same_type(op, "out", out, "x", x);
  require(w.shape[0] % 2 == 0, op, "w " + w.shape.str() + " needs an even row count (gate rows, then up rows)");
  require_shape(op, "out", out, shape_t{x.shape[0], w.shape[0] / 2});
  if (ctx.batch_invariant || x.shape[0] > gemv_row_limit() || !gemv_fits(out, x, w)) return false;
  const int m = static_cast<int>(x.shape[0]), k = static_cast<int>(x.shape[1]), f = static_cast<int>(w.shape[0] / 2);
  if (f == 0) return true;
  dispatch_float(x.type, op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if constexpr (!std::is_same_v<T, float>) launch_pair<T>(ctx, out, x, w, m, f, k);
  });
  check_launch(op, "gemv_kernel (paired)");
  return true;
}

}  // namespace troupe::kernels::cuda

namespace troupe::kernels::cuda {
namespace {
using namespace matmul_detail;

/// The fused GEMV at one row with matmul's tiling for this k (default below gemv_long_k,
/// one row a warp from it).
template <class T, class TO, unsigned F>
void launch_fused(const op_context& ctx, tensor_view out, tensor_view x, tensor_view w, tensor_view bias,
                  gemv_fusion fu) {
  const int k = static_cast<int>(x.shape[1]), n = static_cast<int>(w.shape[0]);
  auto go = [&](auto kernel, int rows_per_warp) {
    const int per_block = gemv_warps * rows_per_warp;
    launch_pdl(kernel, dim3(static_cast<unsigned>((n + per_block - 1) / per_block)), dim3(gemv_warps * 32), 0,
               stream_of(ctx), static_cast<TO*>(out.data), static_cast<const T*>(x.data),
               static_cast<const T*>(w.data), bias.empty() ? nullptr : bias.data, bias.type == dtype::f32, fu, 1, n,
               k);
  };
  if (k >= gemv_long_k)
    go(gemv_kernel<T, TO, 1, 1, 8, false, gemv_warps, 0, F>, 1);
  else
    go(gemv_kernel<T, TO, 1, gemv_rows, 8, false, gemv_warps, 0, F>, gemv_rows);
}

bool one_row_fits(tensor_view out, tensor_view x, tensor_view w) {
  return x.shape.rank == 2 && x.shape[0] == 1 && gemv_fits(out, x, w) && alignment_of(out.data) >= 4;
}

bool norm_fits(tensor_view norm, tensor_view x) {
  return norm.where == backend_kind::cuda && norm.type == x.type && norm.shape.rank == 1 &&
         norm.shape[0] == x.shape[1] && alignment_of(norm.data) >= 16;
}

}  // namespace

bool gemv_norm(const op_context& ctx, tensor_view out, tensor_view x, tensor_view norm, float eps, tensor_view w,
               tensor_view bias) {
  if (!one_row_fits(out, x, w) || !norm_fits(norm, x) || (!bias.empty() && alignment_of(bias.data) < 4)) return false;
  if (w.shape[0] == 0) return true;
  gemv_fusion fu;
  fu.norm = norm.data;
  fu.eps = eps;
  dispatch_float(x.type, "norm_matmul", [&](auto tag) {
    using T = typename decltype(tag)::type;
    if constexpr (!std::is_same_v<T, float>) {
      if (out.type == dtype::f32)
        launch_fused<T, float, fuse_norm>(ctx, out, x, w, bias, fu);
      else
        launch_fused<T, T, fuse_norm>(ctx, out, x, w, bias, fu);
    }
  });
  check_launch("norm_matmul", "gemv_kernel (normalizing)");
  return true;
}

bool gemv_norm_swiglu(const op_context& ctx, tensor_view out, tensor_view x, tensor_view norm, float eps,
                      tensor_view w) {
  if (!one_row_fits(out, x, w) || !norm_fits(norm, x) || out.type != x.type || w.shape[0] % 2 != 0) return false;
  const int f = static_cast<int>(w.shape[0] / 2), k = static_cast<int>(x.shape[1]);
  if (f == 0) return true;
  gemv_fusion fu;
  fu.norm = norm.data;
  fu.eps = eps;
  dispatch_float(x.type, "norm_gate_up_swiglu", [&](auto tag) {
    using T = typename decltype(tag)::type;
    if constexpr (!std::is_same_v<T, float>) launch_gemv_pair<T, 1, gemv_warps, 0, fuse_norm>(ctx, out, x, w, 1, f, k, fu);
  });
  check_launch("norm_gate_up_swiglu", "gemv_kernel (paired, normalizing)");
  return true;
}

bool gemv_norm_qkv_rope(const op_context& ctx, tensor_view q, tensor_view k_cache, tensor_view v_cache, tensor_view x,
                        tensor_view norm, float eps, tensor_view w, tensor_view bias, tensor_view positions,
                        tensor_view inv_freq, tensor_view slots) {
  if (q.shape.rank != 3 || k_cache.shape.rank != 4) return false;
  const int64_t nh = q.shape[1], hd = q.shape[2], nkv = k_cache.shape[2];
  tensor_view out = q;  // only its type and device are checked: the rows go to q and the caches
  out.shape = shape_t{1, w.shape[0]};
  // Anything else takes the composition (norm_matmul, rope_kv_write), whose checks name it.
  const bool bias_fits = bias.empty() || (bias.where == backend_kind::cuda && bias.shape == shape_t{w.shape[0]} &&
                                          (bias.type == dtype::f32 || bias.type == x.type) &&
                                          alignment_of(bias.data) >= 4);
  const bool fits = one_row_fits(out, x, w) && norm_fits(norm, x) && q.shape[0] == 1 && q.type == x.type &&
                    hd > 0 && hd % 2 == 0 && w.type == x.type && w.shape.rank == 2 && w.shape[1] == x.shape[1] &&
                    k_cache.shape[3] == hd && v_cache.shape == k_cache.shape && w.shape[0] == (nh + 2 * nkv) * hd &&
                    k_cache.type == x.type && v_cache.type == x.type && positions.type == dtype::i32 &&
                    slots.type == dtype::i32 && inv_freq.type == dtype::f32 && inv_freq.numel() >= hd / 2 &&
                    positions.numel() >= 1 && slots.numel() >= 1 && bias_fits;
  if (!fits) return false;
  if (w.shape[0] == 0) return true;
  gemv_fusion fu;
  fu.norm = norm.data;
  fu.eps = eps;
  fu.q = q.data;
  fu.k_cache = k_cache.data;
  fu.v_cache = v_cache.data;
  fu.position = positions.i32();
  fu.slot = slots.i32();
  fu.inv_freq = inv_freq.f32();
  fu.n_heads = static_cast<int>(nh);
  fu.n_kv = static_cast<int>(nkv);
  fu.head_dim = static_cast<int>(hd);
  fu.n_slots = k_cache.shape[0] * k_cache.shape[1];
  const int n = static_cast<int>(w.shape[0]), k = static_cast<int>(x.shape[1]);
  const unsigned grid = static_cast<unsigned>((n / 2 + gemv_warps - 1) / gemv_warps);
  dispatch_float(x.type, "norm_qkv_rope", [&](auto tag) {
    using T = typename decltype(tag)::type;
    if constexpr (!std::is_same_v<T, float>)
      launch_pdl(gemv_kernel<T, T, 1, 2, 8, false, gemv_warps, 0, fuse_norm | fuse_rope>, dim3(grid),
                 dim3(gemv_warps * 32), 0, stream_of(ctx), static_cast<T*>(q.data), static_cast<const T*>(x.data),
                 static_cast<const T*>(w.data), bias.empty() ? nullptr : bias.data, bias.type == dtype::f32, fu, 1, n,
                 k);
  });
  check_launch("norm_qkv_rope", "gemv_kernel (normalizing, RoPE)");
  return true;
}

bool gemv_add(const op_context& ctx, tensor_view acc, tensor_view x, tensor_view w) {
  if (!one_row_fits(acc, x, w) || acc.type != x.type) return false;
  if (w.shape[0] == 0) return true;
  dispatch_float(x.type, "matmul_add", [&](auto tag) {
    using T = typename decltype(tag)::type;
    if constexpr (!std::is_same_v<T, float>) launch_fused<T, T, fuse_add>(ctx, acc, x, w, {}, gemv_fusion{});
  });
  check_launch("matmul_add", "gemv_kernel (adding)");
  return true;
}

}  // namespace troupe::kernels::cuda
