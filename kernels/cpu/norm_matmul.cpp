// CPU norm fusions: the references of kernels/norm_matmul.h, by definition the compositions.
#include "kernels/norm_matmul.h"

#include "kernels/add.h"
#include "kernels/gate_up_swiglu.h"
#include "kernels/matmul.h"
#include "kernels/rmsnorm.h"
#include "kernels/rope_kv_write.h"

namespace troupe::kernels::cpu {

void norm_matmul(const op_context& ctx, tensor_view out, tensor_view x, tensor_view norm, float eps, tensor_view w,
                 tensor_view bias, tensor_view scratch) {
  cpu::rmsnorm(ctx, scratch, x, norm, eps);
  cpu::matmul(ctx, out, scratch, w, bias);
}

void norm_gate_up_swiglu(const op_context& ctx, tensor_view out, tensor_view x, tensor_view norm, float eps,
                         tensor_view w, tensor_view scratch, tensor_view scratch_proj) {
  cpu::rmsnorm(ctx, scratch, x, norm, eps);
  cpu::gate_up_swiglu(ctx, out, scratch, w, scratch_proj);
}

void matmul_add(const op_context& ctx, tensor_view acc, tensor_view x, tensor_view w, tensor_view scratch) {
  cpu::matmul(ctx, scratch, x, w, {});
  cpu::add_inplace(ctx, acc, scratch);
}

void norm_qkv_rope(const op_context& ctx, tensor_view q, tensor_view k_cache, tensor_view v_cache, tensor_view x,
                   tensor_view norm, float eps, tensor_view w, tensor_view bias, tensor_view positions,
                   tensor_view inv_freq, tensor_view slots, tensor_view scratch, tensor_view scratch_qkv) {
  cpu::norm_matmul(ctx, scratch_qkv, x, norm, eps, w, bias, scratch);
  cpu::rope_kv_write(ctx, q, k_cache, v_cache, scratch_qkv, positions, inv_freq, slots);
}

}  // namespace troupe::kernels::cpu
