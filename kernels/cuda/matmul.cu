// CUDA matmul through cuBLASLt: out[m, n] = x[m, k] · w[n, k]ᵀ (+ bias[n]).
//
// Types: x and w are both f32, f16 or bf16; out is x's type or f32; bias is out's type or
// f32. Products accumulate in fp32 (CUBLAS_COMPUTE_32F: no TF32 for f32 inputs). In
// cuBLASLt's column-major terms this is the "TN" GEMM D[n, m] = Aᵀ · B with A = w (k x n,
// ld k) and B = x (k x m, ld k), D = out (n x m, ld n).
//
// Caches (process lifetime, behind one mutex): one cuBLASLt handle per device, one 32 MiB
// workspace per (device, stream) (a workspace must not be shared by concurrent streams),
// and one plan (descriptors and the algorithm) per (device, shape, types, pointer
// alignment): the heuristic's first, or at decode row counts the fastest of its first eight,
// timed once in a decode shape's first step (op_context::tune_gemms; gemm_tune.cuh;
// opt-in: TROUPE_GEMM_TUNE=1). After the first call of a shape no allocation or heuristic query
// happens, so a warmed-up step can be captured in a CUDA graph.
//
// A shape cuBLASLt has no algorithm for falls back to a plain fp32-accumulating kernel.
//
// Batch invariance: cuBLASLt picks its algorithm per shape, so unlike the CPU kernel a row
// computed in a batch of m rows may differ in the last bits from the same row alone. With
// op_context::batch_invariant, matmul takes no GEMV and one cuBLASLt algorithm per (n, k,
// types, alignment), whatever m: the heuristic's first algorithm for pinned_rows rows that
// splits no k (split-K would sum a row in parts whose cut may move with m), checked to
// support each m (else the fallback kernel, invariant too).
#include <cublasLt.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <tuple>
#include <type_traits>
#include <vector>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/gemm_tune.cuh"
#include "kernels/matmul.h"

namespace troupe::kernels::cuda {
namespace {

constexpr size_t workspace_bytes = 32u << 20;
constexpr int64_t pinned_rows = 512;  // the row count a batch-invariant algorithm is chosen for
constexpr int tune_candidates = 8;    // the heuristic's algorithms a tuned shape times
/// Rows up to which matmul takes the GEMV, and the k from which it takes one output row a
/// warp (variant 1): measured against cuBLASLt on one H200 at the Llama-3.1-8B projections
/// (docs/gpu-notes.md): at m = 1 the GEMV won for k = 4096 (qkv 14.9 vs 16.6 us, o 12.0 vs
/// 12.8, gate_up 55.8 vs 56.2, lm_head 237 vs 248); for k = 14336 (down) two rows a warp
/// lost (34.6 us) and one row a warp tied (31.4 vs 31.5, where cuBLASLt also runs a split-K
/// reduce kernel after, 2.9 us under Nsight Compute); at m >= 2 it lost or tied.
constexpr int gemv_default_rows = 1;
constexpr int64_t gemv_long_k = 8192;

/// Throws std::runtime_error naming the op, the step and the cuBLAS status.
void check_blas(cublasStatus_t st, const char* what) {
  if (st != CUBLAS_STATUS_SUCCESS)
    throw std::runtime_error(std::string("matmul: ") + what + ": cuBLAS status " +
                             std::to_string(static_cast<int>(st)) + " (" +
                             cublasLtGetStatusString(st) + ")");
}

cudaDataType_t blas_type(dtype t) {
  switch (t) {
    case dtype::f32: return CUDA_R_32F;
    case dtype::f16: return CUDA_R_16F;
    case dtype::bf16: return CUDA_R_16BF;
    case dtype::i32: break;
  }
  throw std::invalid_argument("matmul: i32 is not a matmul type");
}

/// Largest power of two (at most 256) dividing the address.
uint32_t alignment_of(const void* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  uint32_t al = 256;
  while (al > 1 && a % al != 0) al /= 2;
  return al;
}

/// The descriptors and algorithm of one GEMM shape.
struct plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool fallback = false;  ///< no cuBLASLt algorithm: fallback_gemm_kernel computes it
  bool tuned = false;     ///< the algorithm is the fastest of several, timed
  bool tune_tried = false;  ///< timing was wanted when the plan was made (tuned or not)
};

using plan_key = std::tuple<int, int64_t, int64_t, int64_t, int, int, uint32_t, uint32_t, uint32_t, bool>;
/// (device, n, k, in type, out type, alignments): a batch-invariant shape family.
using pinned_key = std::tuple<int, int64_t, int64_t, int, int, uint32_t, uint32_t, uint32_t>;

/// The process-wide cuBLASLt state (never destroyed: it may outlive the CUDA context).
struct blas_cache {
  std::mutex mu;
  std::map<int, cublasLtHandle_t> handles;                  // device -> handle
  std::map<std::pair<int, cudaStream_t>, void*> workspaces;  // (device, stream) -> 32 MiB
  std::map<plan_key, std::unique_ptr<plan>> plans;
  std::map<pinned_key, std::optional<cublasLtMatmulAlgo_t>> pinned;  // none: the fallback kernel
  size_t tuned = 0;  // plans whose algorithm was chosen by timing
};

blas_cache& cache() {
  static blas_cache* c = new blas_cache();
  return *c;
}

cublasLtHandle_t handle_for(blas_cache& c, int device) {
  auto it = c.handles.find(device);
  if (it != c.handles.end()) return it->second;
  cublasLtHandle_t h = nullptr;
  check_blas(cublasLtCreate(&h), "cublasLtCreate");
  c.handles.emplace(device, h);
  return h;
}

void* workspace_for(blas_cache& c, int device, cudaStream_t stream) {
  auto key = std::make_pair(device, stream);
  auto it = c.workspaces.find(key);
  if (it != c.workspaces.end()) return it->second;
  void* ws = nullptr;
  check_cuda(cudaMalloc(&ws, workspace_bytes), "matmul", "allocating the cuBLASLt workspace");
  c.workspaces.emplace(key, ws);
  return ws;
}

/// The descriptors of a shape (m rows of x and out).
std::unique_ptr<plan> make_descriptors(int64_t m, int64_t n, int64_t k, dtype in, dtype out) {
  auto p = std::make_unique<plan>();
  check_blas(cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), "descriptor");
  const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  check_blas(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta),
             "transa");
  check_blas(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb),
             "transb");
  check_blas(cublasLtMatrixLayoutCreate(&p->a, blas_type(in), k, n, k), "layout of w");
  check_blas(cublasLtMatrixLayoutCreate(&p->b, blas_type(in), k, m, k), "layout of x");
  check_blas(cublasLtMatrixLayoutCreate(&p->d, blas_type(out), n, m, n), "layout of out");
  return p;
}

/// Up to `want` of the heuristic's algorithms for plan `p`, best first.
std::vector<cublasLtMatmulHeuristicResult_t> heuristic(cublasLtHandle_t h, const plan& p,
                                                       const uint32_t align[3], int want) {
  cublasLtMatmulPreference_t pref = nullptr;
  check_blas(cublasLtMatmulPreferenceCreate(&pref), "preference");
  const size_t ws = workspace_bytes;
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align[0],
                                       sizeof align[0]);
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align[1],
                                       sizeof align[1]);
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align[2],
                                       sizeof align[2]);
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align[2],
                                       sizeof align[2]);
  std::vector<cublasLtMatmulHeuristicResult_t> results(static_cast<size_t>(want));
  int found = 0;
  const cublasStatus_t st =
      cublasLtMatmulAlgoGetHeuristic(h, p.desc, p.a, p.b, p.d, p.d, pref, want, results.data(), &found);
  cublasLtMatmulPreferenceDestroy(pref);
  results.resize(st == CUBLAS_STATUS_SUCCESS ? static_cast<size_t>(found) : 0);
  return results;
}

/// The batch-invariant algorithm of a shape family: the heuristic's first for pinned_rows
/// rows whose split-K count is 1; none when it has none.
std::optional<cublasLtMatmulAlgo_t> pick_pinned(cublasLtHandle_t h, int64_t n, int64_t k, dtype in, dtype out,
                                                const uint32_t align[3]) {
  const auto ref = make_descriptors(pinned_rows, n, k, in, out);
  for (const auto& r : heuristic(h, *ref, align, 16)) {
    int32_t split = 1;
    size_t written = 0;
    if (cublasLtMatmulAlgoConfigGetAttribute(&r.algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &split, sizeof split,
                                             &written) != CUBLAS_STATUS_SUCCESS)
      continue;
    if (split <= 1) return r.algo;
  }
  return std::nullopt;
}

/// Builds the descriptors of a shape and chooses its algorithm: (batch-invariant) the
/// family's pinned one when it supports this m; for a decode row count (gemm_tune.cuh) the
/// fastest of the heuristic's first tune_candidates, timed on `call`'s operands; else the
/// heuristic's first.
std::unique_ptr<plan> make_plan(cublasLtHandle_t h, int64_t m, int64_t n, int64_t k, dtype in,
                                dtype out, const uint32_t align[3],
                                const std::optional<cublasLtMatmulAlgo_t>* pinned, const gemm_call* call) {
  auto p = make_descriptors(m, n, k, in, out);
  if (pinned) {
    cublasLtMatmulHeuristicResult_t check{};
    p->fallback = !pinned->has_value() ||
                  cublasLtMatmulAlgoCheck(h, p->desc, p->a, p->b, p->d, p->d, &**pinned, &check) !=
                      CUBLAS_STATUS_SUCCESS ||
                  check.workspaceSize > workspace_bytes;
    if (!p->fallback) p->algo = **pinned;
    return p;
  }
  const bool tune = call && gemm_tuning_wanted(m, call->stream);
  const auto best = heuristic(h, *p, align, tune ? tune_candidates : 1);
  p->fallback = best.empty();
  if (p->fallback) return p;
  size_t pick = 0;
  p->tune_tried = tune;
  if (tune) {
    gemm_call c = *call;
    c.desc = p->desc;
    c.a = p->a;
    c.b = p->b;
    c.d = p->d;
    pick = fastest_algo(c, best);
    p->tuned = best.size() > 1;
  }
  p->algo = best[pick].algo;
  return p;
}

/// The GEMM for shapes cuBLASLt has no algorithm for (such as odd leading dimensions):
/// one thread per output element, k in order, fp32 accumulation.
template <class T, class TO>
__global__ void fallback_gemm_kernel(TO* out, const T* x, const T* w, int64_t m, int64_t n,
                                     int64_t k) {
  for (int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; e < m * n;
       e += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = e / n, c = e % n;
    const T* xr = x + r * k;
    const T* wr = w + c * k;
    float acc = 0.0f;
    for (int64_t i = 0; i < k; ++i) acc = fmaf(to_f32(xr[i]), to_f32(wr[i]), acc);
    out[e] = from_f32<TO>(acc);
  }
}

void fallback_gemm(const op_context& ctx, tensor_view out, tensor_view x, tensor_view w, int64_t m,
                   int64_t n, int64_t k) {
  dispatch_float(x.type, "matmul", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* xs = static_cast<const T*>(x.data);
    const T* ws = static_cast<const T*>(w.data);
    const unsigned grid = grid_for(m * n, 256);
    if (out.type == dtype::f32)
      fallback_gemm_kernel<T, float><<<grid, 256, 0, stream_of(ctx)>>>(out.f32(), xs, ws, m, n, k);
    else
      fallback_gemm_kernel<T, T><<<grid, 256, 0, stream_of(ctx)>>>(static_cast<T*>(out.data), xs, ws,
                                                                   m, n, k);
  });
  check_launch("matmul", "fallback_gemm_kernel");
}


// ---- skinny GEMV (decode: m <= 8 rows) -----------------------------------------------------
//
// out[m, n] = x[m, k] · w[n, k]ᵀ (+ bias) for f16/bf16 with m <= gemv_max_rows. Memory-bound:
// every weight byte is read once, in 16-byte loads that stream past L1 (ld.global.cs), with
// U chunks of R rows in flight per lane before the first use. A warp owns R consecutive output
// rows and walks k in 16-byte chunks (lane, lane + 32, ...); x (a few KB, L1/L2 resident) is
// read with ordinary cached loads and reused across the R rows. Accumulation in fp32, one
// fixed order per row (lane partial sums in k order, then a butterfly over the 32 lanes), so a
// row's result does not depend on m or on the other rows. M is m rounded up to 1, 2, 4 or 8:
// the extra x rows are clamped to row m - 1 and never stored.

constexpr int gemv_warps = 8;  // warps per block
constexpr int gemv_rows = 2;   // output rows per warp (R)

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

/// PAIR (the fused gate/up projection and SwiGLU): w is [2n, k], gate rows then up rows; a
/// warp computes gate row j and up row n + j (R = 2) and stores out[i, j] = silu(g) * u
/// with g and u first rounded to T, exactly what the GEMV and cuda::swiglu give apart.
template <class T, class TO, int M, int R, int U, bool PAIR = false>
__global__ void __launch_bounds__(gemv_warps * 32) gemv_kernel(TO* __restrict__ out, const T* __restrict__ x,
                                                               const T* __restrict__ w, const void* bias,
                                                               bool bias_f32, int m, int n, int k) {
  static_assert(!PAIR || R == 2, "a paired GEMV computes one gate and one up row a warp");
  const int lane = threadIdx.x & 31;
  const int warp_id = blockIdx.x * gemv_warps + (threadIdx.x >> 5);
  const int row0 = PAIR ? warp_id : warp_id * R;
  if (row0 >= n) {
    pdl_wait();  // a finished grid implies the one before finished (see pdl_wait)
    return;
  }
  const int k8 = k / 8;
  const uint4* wr[R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int64_t row = PAIR ? row0 + static_cast<int64_t>(r) * n : min(row0 + r, n - 1);
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
  for (; c + 32 * (U - 1) < k8;) {
#pragma unroll
    for (int u = 0; u < U; ++u)
#pragma unroll
      for (int i = 0; i < M; ++i) {
        const uint4 xv = __ldg(xr[i] + c + 32 * u);
#pragma unroll
        for (int r = 0; r < R; ++r) acc[i][r] = dot8<T>(wv[u][r], xv, acc[i][r]);
      }
    c += 32 * U;
    if (c + 32 * (U - 1) < k8) load_pass(c);
  }
  for (; c < k8; c += 32) {
    uint4 wv[R];
#pragma unroll
    for (int r = 0; r < R; ++r) wv[r] = load_stream(wr[r] + c);
#pragma unroll
    for (int i = 0; i < M; ++i) {
      const uint4 xv = __ldg(xr[i] + c);
#pragma unroll
      for (int r = 0; r < R; ++r) acc[i][r] = dot8<T>(wv[r], xv, acc[i][r]);
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
        if (bias)
          v += bias_f32 ? static_cast<const float*>(bias)[row0 + r] : to_f32(static_cast<const TO*>(bias)[row0 + r]);
        out[static_cast<int64_t>(i) * n + row0 + r] = from_f32<TO>(v);
      }
}

template <class T, class TO, int M, int R, int U>
void launch_gemv_ru(const op_context& ctx, tensor_view out, tensor_view x, tensor_view w, tensor_view bias, int m,
                    int n, int k) {
  const int rows_per_block = gemv_warps * R;
  const unsigned grid = static_cast<unsigned>((n + rows_per_block - 1) / rows_per_block);
  launch_pdl(gemv_kernel<T, TO, M, R, U>, dim3(grid), dim3(gemv_warps * 32), 0, stream_of(ctx),
             static_cast<TO*>(out.data), static_cast<const T*>(x.data), static_cast<const T*>(w.data),
             bias.empty() ? nullptr : bias.data, bias.type == dtype::f32, m, n, k);
}

template <class T, int M>
void launch_gemv_pair(const op_context& ctx, tensor_view out, tensor_view x, tensor_view w, int m, int f, int k) {
  const unsigned grid = static_cast<unsigned>((f + gemv_warps - 1) / gemv_warps);
  launch_pdl(gemv_kernel<T, T, M, 2, (M <= 2 ? 8 : 4), true>, dim3(grid), dim3(gemv_warps * 32), 0, stream_of(ctx),
             static_cast<T*>(out.data), static_cast<const T*>(x.data), static_cast<const T*>(w.data), nullptr, false,
             m, f, k);
}

/// Variant 0: the default (R = 2 rows a warp, U = 8 chunks in flight for M <= 2, else 4);
/// 1: R = 1, U = 8; 2: R = 4, U = 4 for M <= 2, else U = 2 (benchmarks compare them).
template <class T, class TO, int M>
void launch_gemv_m(const op_context& ctx, tensor_view out, tensor_view x, tensor_view w, tensor_view bias, int m,
                   int n, int k, int variant) {
  if (variant == 1) return launch_gemv_ru<T, TO, M, 1, 8>(ctx, out, x, w, bias, m, n, k);
  if (variant == 2) return launch_gemv_ru<T, TO, M, 4, (M <= 2 ? 4 : 2)>(ctx, out, x, w, bias, m, n, k);
  launch_gemv_ru<T, TO, M, gemv_rows, (M <= 2 ? 8 : 4)>(ctx, out, x, w, bias, m, n, k);
}

template <class T, class TO>
void launch_gemv(const op_context& ctx, tensor_view out, tensor_view x, tensor_view w, tensor_view bias, int m,
                 int n, int k, int variant) {
  if (m <= 1) return launch_gemv_m<T, TO, 1>(ctx, out, x, w, bias, m, n, k, variant);
  if (m <= 2) return launch_gemv_m<T, TO, 2>(ctx, out, x, w, bias, m, n, k, variant);
  if (m <= 4) return launch_gemv_m<T, TO, 4>(ctx, out, x, w, bias, m, n, k, variant);
  return launch_gemv_m<T, TO, 8>(ctx, out, x, w, bias, m, n, k, variant);
}

/// The GEMV's reach: TROUPE_GEMV_MAX_ROWS (0 turns it off), default gemv_default_rows.
int gemv_row_limit() {
  static const int limit = [] {
    const char* e = std::getenv("TROUPE_GEMV_MAX_ROWS");
    if (!e || !*e) return gemv_default_rows;
    return std::max(0, std::min(8, std::atoi(e)));
  }();
  return limit;
}

bool gemv_fits(tensor_view out, tensor_view x, tensor_view w) {
  const int64_t m = x.shape[0], k = x.shape[1], n = w.shape[0];
  return (x.type == dtype::bf16 || x.type == dtype::f16) && m >= 1 && m <= 8 && k % 8 == 0 && k > 0 &&
         n < (int64_t{1} << 31) && k < (int64_t{1} << 31) && alignment_of(x.data) >= 16 &&
         alignment_of(w.data) >= 16 && (out.type == x.type || out.type == dtype::f32);
}

/// out[r, c] += bias[c] (in float, stored in out's type).
template <class TO, class TB>
__global__ void bias_kernel(TO* out, const TB* bias, int64_t m, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < m * n;
       i += int64_t{gridDim.x} * blockDim.x)
    out[i] = from_f32<TO>(to_f32(out[i]) + to_f32(bias[i % n]));
}

void add_bias(const op_context& ctx, tensor_view out, tensor_view bias, int64_t m, int64_t n) {
  dispatch_float(out.type, "matmul", [&](auto tag) {
    using TO = typename decltype(tag)::type;
    TO* o = static_cast<TO*>(out.data);
    if (bias.type == dtype::f32)
      bias_kernel<TO, float><<<grid_for(m * n, 256), 256, 0, stream_of(ctx)>>>(o, bias.f32(), m, n);
    else
      bias_kernel<TO, TO><<<grid_for(m * n, 256), 256, 0, stream_of(ctx)>>>(
          o, static_cast<const TO*>(bias.data), m, n);
  });
  check_launch("matmul", "bias_kernel");
}

/// The checks every product x[m, k] · w[n, k]ᵀ on the device shares (`op` names it).
void check_operands(const char* op, const op_context& ctx, tensor_view out, tensor_view x, tensor_view w) {
  require_cuda_ctx(op, ctx);
  require_device_float(op, "x", x);
  require_device(op, "w", w);
  require_device(op, "out", out);
  require_same_type(op, "w", w, "x", x);
  require_rank(op, "x", x, 2);
  require_rank(op, "w", w, 2);
  require(x.shape[1] == w.shape[1], op, "x " + x.shape.str() + " and w " + w.shape.str() + " disagree on k");
}

void check(const op_context& ctx, tensor_view out, tensor_view x, tensor_view w, tensor_view bias) {
  const char* op = "matmul";
  check_operands(op, ctx, out, x, w);
  require(out.type == x.type || out.type == dtype::f32, op,
          std::string("out is ") + dtype_name(out.type) + ", expected f32 or " + dtype_name(x.type));
  require_shape(op, "out", out, shape_t{x.shape[0], w.shape[0]});
  if (!bias.empty()) {
    require_device(op, "bias", bias);
    require(bias.type == out.type || bias.type == dtype::f32, op,
            std::string("bias is ") + dtype_name(bias.type) + ", expected f32 or " +
                dtype_name(out.type));
    require_shape(op, "bias", bias, shape_t{w.shape[0]});
  }
}

}  // namespace

void matmul_cublas(const op_context& ctx, tensor_view out, tensor_view x, tensor_view w, tensor_view bias) {
  check(ctx, out, x, w, bias);
  const int64_t m = x.shape[0], k = x.shape[1], n = w.shape[0];
  if (m == 0 || n == 0) return;
  cudaStream_t stream = stream_of(ctx);
  if (k == 0) {
    check_cuda(cudaMemsetAsync(out.data, 0, static_cast<size_t>(m * n) * dtype_size(out.type), stream),
               "matmul", "zeroing out for k = 0");
  } else {
    int device = 0;
    check_cuda(cudaGetDevice(&device), "matmul", "cudaGetDevice");
    const uint32_t align[3] = {alignment_of(w.data), alignment_of(x.data), alignment_of(out.data)};
    blas_cache& c = cache();
    cublasLtHandle_t h;
    void* ws;
    const plan* p;
    {
      std::lock_guard<std::mutex> lock(c.mu);
      h = handle_for(c, device);
      ws = workspace_for(c, device, stream);
      const bool inv = ctx.batch_invariant;
      const plan_key key{device, m, n, k, static_cast<int>(x.type), static_cast<int>(out.type),
                         align[0], align[1], align[2], inv};
      auto it = c.plans.find(key);
      if (it == c.plans.end()) {
        const std::optional<cublasLtMatmulAlgo_t>* pinned = nullptr;
        if (inv) {
          const pinned_key family{device, n, k, static_cast<int>(x.type), static_cast<int>(out.type),
                                  align[0], align[1], align[2]};
          auto f = c.pinned.find(family);
          if (f == c.pinned.end()) f = c.pinned.emplace(family, pick_pinned(h, n, k, x.type, out.type, align)).first;
          pinned = &f->second;
        }
        gemm_call call;
        call.handle = h;
        call.w = w.data;
        call.x = x.data;
        call.out = out.data;
        call.workspace = ws;
        call.workspace_bytes = workspace_bytes;
        call.stream = stream;
        it = c.plans.emplace(key, make_plan(h, m, n, k, x.type, out.type, align, pinned,
                                            ctx.tune_gemms ? &call : nullptr)).first;
        c.tuned += it->second->tuned ? 1 : 0;
      } else if (ctx.tune_gemms && !inv && !it->second->tuned && !it->second->tune_tried &&
                 gemm_tuning_wanted(m, stream)) {
        // A decode shape first met in a prefill or mixed step (not tuned there): tune it now.
        gemm_call call{h, nullptr, nullptr, nullptr, nullptr, w.data, x.data, out.data, ws, workspace_bytes, stream};
        it->second = make_plan(h, m, n, k, x.type, out.type, align, nullptr, &call);
        c.tuned += it->second->tuned ? 1 : 0;
      }
      p = it->second.get();
    }
    const float alpha = 1.0f, beta = 0.0f;
    if (p->fallback)
      fallback_gemm(ctx, out, x, w, m, n, k);
    else
        check_blas(cublasLtMatmul(h, p->desc, &alpha, w.data, p->a, x.data, p->b, &beta, out.data,
                                p->d, out.data, p->d, &p->algo, ws, workspace_bytes, stream),
                 "cublasLtMatmul");
  }
  if (!bias.empty()) add_bias(ctx, out, bias, m, n);
}

size_t tuned_plans() {
  blas_cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  return c.tuned;
}

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
    if constexpr (!std::is_same_v<T, float>) {
      if (m <= 1) launch_gemv_pair<T, 1>(ctx, out, x, w, m, f, k);
      else if (m <= 2) launch_gemv_pair<T, 2>(ctx, out, x, w, m, f, k);
      else if (m <= 4) launch_gemv_pair<T, 4>(ctx, out, x, w, m, f, k);
      else launch_gemv_pair<T, 8>(ctx, out, x, w, m, f, k);
    }
  });
  check_launch(op, "gemv_kernel (paired)");
  return true;
}

void matmul(const op_context& ctx, tensor_view out, tensor_view x, tensor_view w, tensor_view bias) {
  if (!ctx.batch_invariant && x.shape.rank == 2 && x.shape[0] <= gemv_row_limit() && x.where == backend_kind::cuda &&
      gemv(ctx, out, x, w, bias, x.shape[1] >= gemv_long_k ? 1 : 0))
    return;
  matmul_cublas(ctx, out, x, w, bias);
}

}  // namespace troupe::kernels::cuda
