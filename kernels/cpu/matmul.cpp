// CPU matmul: out[m, n] = x[m, k] · w[n, k]ᵀ + bias, batch-invariant bitwise.
//
// Why not OpenBLAS. Measured on the dev VM (Xeon @ 2.5 GHz with AVX-512, 2 cores shared
// with other builds, load 3-8, so timings are noisy; OpenBLAS 0.3.21 Debian pthread, which
// picks its AVX-512 SkylakeX kernels):
// - cblas_sgemm(RowMajor, NoTrans, Trans) is NOT batch-invariant: a row computed alone
//   differs bitwise from the same row inside a batch for m >= 3 at k=576,n=576, for m >= 7
//   at k=576,n=192 and for m >= 2 at k=1536,n=576 (1 and 2 threads alike; k=576 with
//   n=1536 and n=49152 happened to match). This kernel matched for every m and shape.
// - decode m=1, k=576, n=49152 (113 MB of weights, memory-bound), median of 15, 1 thread,
//   two runs: sgemm 59.8 / 56.3 ms, sgemv 22.9 / 23.3 ms, this kernel 28.0 / 25.3 ms
//   (1.1-1.2x sgemv; sgemm is 2.4x slower than sgemv at m=1). 2 threads gained nothing
//   (the second core was busy).
// - prefill GFLOP/s, 1 thread, two runs, sgemm vs this kernel: m=64 k=576 n=1536 69/64
//   vs 18/17; m=64 n=49152 24/32 vs 19/22; m=256 n=1536 36/53 vs 22/27; m=256 n=49152
//   62/49 vs 26/25. Best of 7 at a quieter moment (k=576, n=6144, m=128): 87 vs 45-52.
// Decision: one hand-written kernel for every m, since the batch-invariance contract rules
// out both sgemm (not invariant) and sgemv-for-m=1 (a different reduction order than any
// m>1 path). Every output element is reduced the same way whatever tile computes it:
// 8-lane FMA accumulators over k in steps of 8 (the tail through a zero-filled masked
// load), then one fixed horizontal sum, then + bias. OpenMP splits n into blocks.
#include "kernels/matmul.h"

#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "kernels/cpu/op_checks.h"

namespace troupe::kernels::cpu {
namespace {

/// What one tile needs to know about the reduction dimension.
struct k_plan {
  int k = 0;       ///< reduction length
  int k8 = 0;      ///< k rounded down to a multiple of 8
  __m256i tail{};  ///< lane mask of the k - k8 trailing elements
};

k_plan make_plan(int k) {
  k_plan p;
  p.k = k;
  p.k8 = k & ~7;
  alignas(32) int32_t mask[8];
  for (int i = 0; i < 8; ++i) mask[i] = i < k - p.k8 ? -1 : 0;
  p.tail = _mm256_load_si256(reinterpret_cast<const __m256i*>(mask));
  return p;
}

/// The one horizontal reduction every output element goes through.
inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

/// out[r, c] = dot(x row r, w row c) for an R x C tile; rows of x and w have stride k,
/// rows of out stride ldo. Each element has its own accumulator and sees the same
/// sequence of operations whatever R and C are.
template <int R, int C>
__attribute__((always_inline)) inline void tile(const float* x, const float* w, float* out,
                                                int64_t ldo, const k_plan& p) {
  const int64_t k = p.k;
  __m256 acc[R][C];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) acc[r][c] = _mm256_setzero_ps();
  for (int kk = 0; kk < p.k8; kk += 8) {
    __m256 xv[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) xv[r] = _mm256_loadu_ps(x + r * k + kk);
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) {
      const __m256 wv = _mm256_loadu_ps(w + c * k + kk);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) acc[r][c] = _mm256_fmadd_ps(xv[r], wv, acc[r][c]);
    }
  }
  if (p.k8 < p.k) {
    __m256 xv[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) xv[r] = _mm256_maskload_ps(x + r * k + p.k8, p.tail);
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) {
      const __m256 wv = _mm256_maskload_ps(w + c * k + p.k8, p.tail);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) acc[r][c] = _mm256_fmadd_ps(xv[r], wv, acc[r][c]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) out[r * ldo + c] = hsum(acc[r][c]);
}

/// R rows of x against w rows [n0, n1): C at a time, then one at a time.
template <int R, int C>
void row_block(const float* x, const float* w, float* out, int64_t ldo, int64_t n0, int64_t n1,
               const k_plan& p) {
  int64_t j = n0;
  for (; j + C <= n1; j += C) tile<R, C>(x, w + j * p.k, out + j, ldo, p);
  for (; j < n1; ++j) tile<R, 1>(x, w + j * p.k, out + j, ldo, p);
}

/// All m rows of x against w rows [n0, n1): 3-row tiles, then the 1 or 2 rows left.
/// A single row (decode) uses 8 w rows per tile: it is bound by memory, not registers.
void column_block(const float* x, const float* w, float* out, int64_t m, int64_t n, int64_t n0,
                  int64_t n1, const k_plan& p) {
  const int64_t k = p.k;
  if (m == 1) return row_block<1, 8>(x, w, out, n, n0, n1, p);
  int64_t i = 0;
  for (; i + 3 <= m; i += 3) row_block<3, 4>(x + i * k, w, out + i * n, n, n0, n1, p);
  if (m - i == 2) row_block<2, 4>(x + i * k, w, out + i * n, n, n0, n1, p);
  if (m - i == 1) row_block<1, 4>(x + i * k, w, out + i * n, n, n0, n1, p);
}

void check(tensor_view out, tensor_view x, tensor_view w, tensor_view bias) {
  const char* op = "matmul";
  require_host(op, "out", out);
  require_host(op, "x", x);
  require_host(op, "w", w);
  require_rank(op, "x", x, 2);
  require_rank(op, "w", w, 2);
  require(x.shape[1] == w.shape[1], op,
          "x " + x.shape.str() + " and w " + w.shape.str() + " disagree on k");
  require_shape(op, "out", out, shape_t{x.shape[0], w.shape[0]});
  if (!bias.empty()) {
    require_host(op, "bias", bias);
    require_shape(op, "bias", bias, shape_t{w.shape[0]});
  }
  require(x.shape[1] <= INT32_MAX, op, "k " + std::to_string(x.shape[1]) + " is too large");
}

}  // namespace

void matmul(const op_context& ctx, tensor_view out, tensor_view x, tensor_view w,
            tensor_view bias) {
  check(out, x, w, bias);
  const int64_t m = x.shape[0], k = x.shape[1], n = w.shape[0];
  if (m == 0 || n == 0) return;
  const float* xs = x.f32();
  const float* ws = w.f32();
  float* os = out.f32();
  if (k == 0) std::fill(os, os + m * n, 0.0f);
  const k_plan plan = make_plan(static_cast<int>(k));
  // Any split of n gives the same bits; decode wants big blocks, prefill L1-sized ones.
  const int64_t block = m == 1 ? 64 : 16;
  const int64_t n_blocks = (n + block - 1) / block;
  const int threads = team_size(ctx);
  if (k > 0) {
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
    for (int64_t b = 0; b < n_blocks; ++b)
      column_block(xs, ws, os, m, n, b * block, std::min(n, (b + 1) * block), plan);
  }
  if (bias.empty()) return;
  const float* bs = bias.f32();
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) os[i * n + j] += bs[j];
}

}  // namespace troupe::kernels::cpu
