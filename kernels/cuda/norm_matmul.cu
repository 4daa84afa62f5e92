// CUDA norm fusions (kernels/norm_matmul.h): the skinny GEMV (kernels/cuda/gemv.cuh) with the
// rmsnorm prologue or the residual-add epilogue at one row, else the plain ops in turn. The
// fused kernels are bitwise the compositions: the prologue reduces as the vectorized rmsnorm
// kernel does, the GEMV takes matmul's tiling for the same k, the epilogue rounds the product
// before adding it as add_inplace does.
#include <cstdlib>
#include <type_traits>

#include "kernels/add.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/gemv.cuh"
#include "kernels/gate_up_swiglu.h"
#include "kernels/matmul.h"
#include "kernels/norm_matmul.h"
#include "kernels/rmsnorm.h"

namespace troupe::kernels::cuda {
namespace {

/// TROUPE_FUSE_NORM=0 turns the fused kernels off (benchmarks compare the two).
bool fusion_enabled() {
  static const bool on = [] {
    const char* e = std::getenv("TROUPE_FUSE_NORM");
    return !(e && e[0] == '0');
  }();
  return on;
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

/// The fused kernels' own needs beyond norm_fusion_applies: the shapes of one product, every
/// pointer 16-byte aligned, the norm weight f32 or x's type.
bool fused_fits(const op_context& ctx, tensor_view out, tensor_view x, tensor_view norm, tensor_view w) {
  return cuda::norm_fusion_applies(ctx, x.shape.rank == 2 ? x.shape[0] : 0, x.shape.rank == 2 ? x.shape[1] : 0, x.type) &&
         x.where == backend_kind::cuda && w.where == backend_kind::cuda && out.where == backend_kind::cuda &&
         norm.where == backend_kind::cuda && w.type == x.type && out.type == x.type && w.shape.rank == 2 &&
         w.shape[1] == x.shape[1] && norm.shape.rank == 1 && norm.shape[0] == x.shape[1] &&
         (norm.type == dtype::f32 || norm.type == x.type) && aligned16(x.data) && aligned16(w.data) &&
         aligned16(out.data) && w.shape[0] < (int64_t{1} << 31);
}

/// Launches the NORM GEMV (PAIR: the gate/up one) over n output columns.
template <bool PAIR>
void launch_norm_gemv(const op_context& ctx, tensor_view out, tensor_view x, tensor_view norm, float eps,
                      tensor_view w, tensor_view bias, int n) {
  const int k = static_cast<int>(x.shape[1]);
  gemv_extras ex;
  ex.bias = bias.empty() ? nullptr : bias.data;
  ex.bias_f32 = bias.type == dtype::f32;
  ex.norm = norm.data;
  ex.norm_f32 = norm.type == dtype::f32;
  ex.eps = eps;
  const size_t smem = static_cast<size_t>(k / 8) * 16;
  const int rows_per_block = PAIR ? gemv_warps : gemv_warps * gemv_rows;
  const unsigned grid = static_cast<unsigned>((n + rows_per_block - 1) / rows_per_block);
  dispatch_float(x.type, "norm_matmul", [&](auto tag) {
    using T = typename decltype(tag)::type;
    if constexpr (!std::is_same_v<T, float>) {
      constexpr gemv_mode mode = PAIR ? gemv_mode::norm_pair : gemv_mode::norm;
      launch_pdl(gemv_kernel<T, T, 1, gemv_rows, 8, mode>, dim3(grid), dim3(gemv_warps * 32), smem, stream_of(ctx),
                 static_cast<T*>(out.data), static_cast<const T*>(x.data), static_cast<const T*>(w.data), ex, 1, n, k);
    }
  });
  check_launch(PAIR ? "norm_gate_up_swiglu" : "norm_matmul", "gemv_kernel (norm prologue)");
}

}  // namespace

bool norm_fusion_applies(const op_context& ctx, int64_t rows, int64_t k, dtype t) {
  return ctx.backend == backend_kind::cuda && !ctx.batch_invariant && fusion_enabled() && gemv_row_limit() >= 1 &&
         rows == 1 && (t == dtype::bf16 || t == dtype::f16) && k > 0 && k % 8 == 0 && k < gemv_long_k;
}

void norm_matmul(const op_context& ctx, tensor_view out, tensor_view x, tensor_view norm, float eps, tensor_view w,
                 tensor_view bias, tensor_view scratch) {
  const bool bias_ok = bias.empty() || (bias.where == backend_kind::cuda && bias.shape.rank == 1 &&
                                        bias.shape[0] == w.shape[0] && (bias.type == dtype::f32 || bias.type == x.type) &&
                                        reinterpret_cast<uintptr_t>(bias.data) % 4 == 0);
  if (fused_fits(ctx, out, x, norm, w) && bias_ok && out.shape.rank == 2 && out.shape[0] == 1 &&
      out.shape[1] == w.shape[0]) {
    if (w.shape[0] > 0) launch_norm_gemv<false>(ctx, out, x, norm, eps, w, bias, static_cast<int>(w.shape[0]));
    return;
  }
  cuda::rmsnorm(ctx, scratch, x, norm, eps);
  cuda::matmul(ctx, out, scratch, w, bias);
}

void norm_gate_up_swiglu(const op_context& ctx, tensor_view out, tensor_view x, tensor_view norm, float eps,
                         tensor_view w, tensor_view scratch, tensor_view scratch_proj) {
  if (fused_fits(ctx, out, x, norm, w) && w.shape[0] % 2 == 0 && out.shape.rank == 2 && out.shape[0] == 1 &&
      out.shape[1] == w.shape[0] / 2) {
    if (out.shape[1] > 0) launch_norm_gemv<true>(ctx, out, x, norm, eps, w, {}, static_cast<int>(out.shape[1]));
    return;
  }
  cuda::rmsnorm(ctx, scratch, x, norm, eps);
  cuda::gate_up_swiglu(ctx, out, scratch, w, scratch_proj);
}

void matmul_add(const op_context& ctx, tensor_view acc, tensor_view x, tensor_view w, tensor_view scratch) {
  const bool fits = ctx.backend == backend_kind::cuda && !ctx.batch_invariant && fusion_enabled() &&
                    gemv_row_limit() >= 1 && x.shape.rank == 2 && x.shape[0] == 1 && acc.type == x.type &&
                    acc.where == backend_kind::cuda && acc.shape.rank == 2 && acc.shape[0] == 1 && w.shape.rank == 2 &&
                    acc.shape[1] == w.shape[0] && w.shape[1] == x.shape[1] && cuda::gemv_fits(acc, x, w);
  if (!fits) {
    cuda::matmul(ctx, scratch, x, w, {});
    cuda::add_inplace(ctx, acc, scratch);
    return;
  }
  const int k = static_cast<int>(x.shape[1]), n = static_cast<int>(w.shape[0]);
  if (n == 0) return;
  dispatch_float(x.type, "matmul_add", [&](auto tag) {
    using T = typename decltype(tag)::type;
    if constexpr (!std::is_same_v<T, float>) {
      // matmul's tiling for this k (launch_gemv_m): one row a warp from gemv_long_k.
      T* o = static_cast<T*>(acc.data);
      const T* xs = static_cast<const T*>(x.data);
      const T* ws = static_cast<const T*>(w.data);
      if (k >= gemv_long_k)
        launch_pdl(gemv_kernel<T, T, 1, 1, 8, gemv_mode::acc>, dim3((n + gemv_warps - 1) / gemv_warps),
                   dim3(gemv_warps * 32), 0, stream_of(ctx), o, xs, ws, gemv_extras{}, 1, n, k);
      else
        launch_pdl(gemv_kernel<T, T, 1, gemv_rows, 8, gemv_mode::acc>,
                   dim3((n + gemv_warps * gemv_rows - 1) / (gemv_warps * gemv_rows)), dim3(gemv_warps * 32), 0,
                   stream_of(ctx), o, xs, ws, gemv_extras{}, 1, n, k);
    }
  });
  check_launch("matmul_add", "gemv_kernel (residual add)");
}

}  // namespace troupe::kernels::cuda
