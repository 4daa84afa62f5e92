#pragma once
/// y = x · wᵀ (+ bias): the linear layer.
#include "kernels/op_context.h"

namespace troupe::kernels {

namespace cpu {
/// CPU implementation of kernels::matmul.
void matmul(const op_context& ctx, tensor_view out, tensor_view x, tensor_view w, tensor_view bias);
}  // namespace cpu

#ifdef TROUPE_HAVE_CUDA_KERNELS
namespace cuda {
/// CUDA implementation of kernels::matmul: the skinny GEMV for f16/bf16 inputs of one row
/// (one output row a warp from k = 8192, two below; TROUPE_GEMV_MAX_ROWS raises the row
/// limit up to 8, 0 = never) outside the batch-invariant mode, else cuBLASLt.
void matmul(const op_context& ctx, tensor_view out, tensor_view x, tensor_view w, tensor_view bias);
/// matmul through cuBLASLt alone (benchmarks and tests compare the two).
void matmul_cublas(const op_context& ctx, tensor_view out, tensor_view x, tensor_view w, tensor_view bias);
/// matmul through the skinny GEMV alone; false (nothing enqueued) where it does not apply:
/// not f16/bf16, more than 8 rows, k not a multiple of 8, x or w not 16-byte aligned.
/// `variant` picks a tiling (0 = the default; 1 to 7: alternatives the benchmark times, 3 to 7
/// at one row only).
bool gemv(const op_context& ctx, tensor_view out, tensor_view x, tensor_view w, tensor_view bias, int variant = 0);
/// out[m, f] = silu(x · w[:f]ᵀ) * (x · w[f:]ᵀ) in one skinny GEMV (w [2f, k]: gate rows then
/// up rows), each product rounded to x's type first: bitwise what matmul's GEMV and swiglu
/// give apart. False (nothing enqueued) where the GEMV does not apply, also in the
/// batch-invariant mode and above the GEMV's row limit.
bool gemv_swiglu(const op_context& ctx, tensor_view out, tensor_view x, tensor_view w);
/// Pins the GEMV tiling matmul takes for k below 8192 and from it (-1: the default choice;
/// TROUPE_GEMV_VARIANT="a,b" sets the same at start): benchmarks compare them.
void set_gemv_variants(int short_k, int long_k);
/// How many cuBLASLt heuristic queries the process made so far (each costs ~0.2 ms, and
/// the first use of the kernel it picks may load a module, ~2 ms): tests read it.
size_t heuristic_queries();
/// How many cuBLASLt plans so far chose their algorithm by timing the heuristic's candidates
/// (decode row counts; opt-in: TROUPE_GEMM_TUNE=1, or 2 for the candidates that do not
/// split k): tests and benchmarks read it.
size_t tuned_plans();
}  // namespace cuda
#endif

/// The row count whose algorithm a CUDA matmul of m rows takes: m itself up to 16, then the
/// next of 8 counts a doubling (17-18 -> 18, 97-104 -> 104, 1025-1152 -> 1152). Every power of
/// two and every decode-graph size is its own. One product at each of these counts (the
/// shard context's warm-up) leaves no heuristic query and no kernel loading to a later step.
inline int64_t matmul_plan_rows(int64_t m) {
  if (m <= 16) return m;
  int64_t octave = 16;  // m in (octave, 2 octave]
  while (2 * octave < m) octave *= 2;
  const int64_t step = octave / 8;
  return (m + step - 1) / step * step;
}

/// out[m, n] = x[m, k] · w[n, k]ᵀ + bias[n] (bias may be empty).
/// Batch-invariant: row i of `out` depends only on row i of `x`, bitwise.
inline void matmul(const op_context& ctx, tensor_view out, tensor_view x, tensor_view w,
    tensor_view bias) {
  switch (ctx.backend) {
    case backend_kind::cpu:
      return cpu::matmul(ctx, out, x, w, bias);
    case backend_kind::cuda:
#ifdef TROUPE_HAVE_CUDA_KERNELS
      return cuda::matmul(ctx, out, x, w, bias);
#else
      throw backend_unavailable("matmul: this build has no CUDA kernels");
#endif
  }
  throw backend_unavailable("matmul: unknown backend");
}

}  // namespace troupe::kernels
