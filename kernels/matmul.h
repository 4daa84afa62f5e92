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
/// How many cuBLASLt plans so far chose their algorithm by timing the heuristic's candidates
/// (decode row counts; TROUPE_GEMM_TUNE=0 turns it off): tests and benchmarks read it.
size_t tuned_plans();
}  // namespace cuda
#endif

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
