// CUDA norm fusions (kernels/norm_matmul.h): the one-row GEMV normalizing x as it streams it
// or adding its product to the residual as it stores (kernels/cuda/gemv.cu), else the plain
// ops in turn.
#include <atomic>

#include "kernels/add.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/matmul_common.cuh"
#include "kernels/gate_up_swiglu.h"
#include "kernels/matmul.h"
#include "kernels/norm_matmul.h"
#include "kernels/rmsnorm.h"
#include "kernels/rope_kv_write.h"

namespace troupe::kernels::cuda {
namespace {

env_switch norm_fusion_switch{"TROUPE_FUSE_NORM"};
std::atomic<uint64_t> fused_launches{0};  ///< norm_fusion_launches

/// Counts a fused launch; returns `launched` (the fused GEMV's answer).
bool counted(bool launched) {
  if (launched) fused_launches.fetch_add(1, std::memory_order_relaxed);
  return launched;
}

}  // namespace

bool norm_fusion_enabled() { return norm_fusion_switch.enabled(); }

void set_norm_fusion(bool on) { norm_fusion_switch.set(on); }

uint64_t norm_fusion_launches() { return fused_launches.load(std::memory_order_relaxed); }

namespace {

bool on_device(std::initializer_list<tensor_view> ts) {
  for (const auto& t : ts)
    if (t.where != backend_kind::cuda) return false;
  return true;
}

}  // namespace

bool norm_fusion_applies(const op_context& ctx, int64_t rows, int64_t k, dtype t) {
  return ctx.backend == backend_kind::cuda && !ctx.batch_invariant && norm_fusion_enabled() &&
         matmul_detail::gemv_row_limit() >= 1 && rows == 1 && (t == dtype::bf16 || t == dtype::f16) && k > 0 &&
         k % 8 == 0;
}

void norm_matmul(const op_context& ctx, tensor_view out, tensor_view x, tensor_view norm, float eps, tensor_view w,
                 tensor_view bias, tensor_view scratch) {
  if (x.shape.rank == 2 && cuda::norm_fusion_applies(ctx, x.shape[0], x.shape[1], x.type) && on_device({out, x, norm, w})) {
    matmul_detail::check(ctx, out, x, w, bias);
    if (counted(gemv_norm(ctx, out, x, norm, eps, w, bias))) return;
  }
  cuda::rmsnorm(ctx, scratch, x, norm, eps);
  cuda::matmul(ctx, out, scratch, w, bias);
}

void norm_gate_up_swiglu(const op_context& ctx, tensor_view out, tensor_view x, tensor_view norm, float eps,
                         tensor_view w, tensor_view scratch, tensor_view scratch_proj) {
  if (x.shape.rank == 2 && cuda::norm_fusion_applies(ctx, x.shape[0], x.shape[1], x.type) && on_device({out, x, norm, w})) {
    const char* op = "norm_gate_up_swiglu";
    matmul_detail::check_operands(op, ctx, out, x, w);
    require(w.shape[0] % 2 == 0, op, "w " + w.shape.str() + " needs an even row count (gate rows, then up rows)");
    require_shape(op, "out", out, shape_t{x.shape[0], w.shape[0] / 2});
    if (counted(gemv_norm_swiglu(ctx, out, x, norm, eps, w))) return;
  }
  cuda::rmsnorm(ctx, scratch, x, norm, eps);
  cuda::gate_up_swiglu(ctx, out, scratch, w, scratch_proj);
}

void matmul_add(const op_context& ctx, tensor_view acc, tensor_view x, tensor_view w, tensor_view scratch) {
  if (x.shape.rank == 2 && cuda::norm_fusion_applies(ctx, x.shape[0], x.shape[1], x.type) && on_device({acc, x, w})) {
    matmul_detail::check(ctx, acc, x, w, {});
    if (counted(gemv_add(ctx, acc, x, w))) return;
  }
  cuda::matmul(ctx, scratch, x, w, {});
  cuda::add_inplace(ctx, acc, scratch);
}

void norm_qkv_rope(const op_context& ctx, tensor_view q, tensor_view k_cache, tensor_view v_cache, tensor_view x,
                   tensor_view norm, float eps, tensor_view w, tensor_view bias, tensor_view positions,
                   tensor_view inv_freq, tensor_view slots, tensor_view scratch, tensor_view scratch_qkv) {
  if (x.shape.rank == 2 && cuda::norm_fusion_applies(ctx, x.shape[0], x.shape[1], x.type) &&
      on_device({q, k_cache, v_cache, x, norm, w, positions, inv_freq, slots}) &&
      counted(gemv_norm_qkv_rope(ctx, q, k_cache, v_cache, x, norm, eps, w, bias, positions, inv_freq, slots)))
    return;
  cuda::norm_matmul(ctx, scratch_qkv, x, norm, eps, w, bias, scratch);
  cuda::rope_kv_write(ctx, q, k_cache, v_cache, scratch_qkv, positions, inv_freq, slots);
}

}  // namespace troupe::kernels::cuda
