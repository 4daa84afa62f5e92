#pragma once
// What matmul.cu (cuBLASLt) and gemv.cu (the skinny GEMV) share: operand checks, the bias
// epilogue, pointer alignment and the GEMV's reach. Private to kernels/cuda.
#include <cstdint>
#include <utility>

#include "kernels/cuda/common.cuh"
#include "kernels/op_context.h"

namespace troupe::kernels::cuda::matmul_detail {

/// Rows up to which matmul takes the GEMV, and the k from which it takes one output row a
/// warp (variant 1): measured against cuBLASLt on one H200 at the Llama-3.1-8B projections
/// (docs/gpu-notes.md): at m = 1 the GEMV won for k = 4096 (qkv 14.9 vs 16.6 us, o 12.0 vs
/// 12.8, gate_up 55.8 vs 56.2, lm_head 237 vs 248); for k = 14336 (down) two rows a warp
/// lost (34.6 us) and one row a warp tied (31.4 vs 31.5, where cuBLASLt also runs a split-K
/// reduce kernel after, 2.9 us under Nsight Compute); at m >= 2 it lost or tied.
inline constexpr int gemv_default_rows = 1;
inline constexpr int64_t gemv_long_k = 8192;

/// Largest power of two (at most 256) dividing the address.
uint32_t alignment_of(const void* p);
/// The checks every product x[m, k] · w[n, k]ᵀ on the device shares (`op` names it).
void check_operands(const char* op, const op_context& ctx, tensor_view out, tensor_view x, tensor_view w);
/// check_operands for matmul, plus out's type and shape and bias's.
void check(const op_context& ctx, tensor_view out, tensor_view x, tensor_view w, tensor_view bias);
/// out[r, c] += bias[c] (in float, stored in out's type).
void add_bias(const op_context& ctx, tensor_view out, tensor_view bias, int64_t m, int64_t n);
/// The GEMV's reach: TROUPE_GEMV_MAX_ROWS (0 turns it off), default gemv_default_rows.
int gemv_row_limit();
/// The GEMV tilings pinned for k below gemv_long_k and from it (-1: the default choice):
/// TROUPE_GEMV_VARIANT="a" or "a,b", or cuda::set_gemv_variants.
std::pair<int, int> gemv_variants();

}  // namespace troupe::kernels::cuda::matmul_detail
