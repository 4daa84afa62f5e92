#include "parallel/linear.h"

#include "kernels/add.h"
#include "kernels/gate_up_swiglu.h"
#include "kernels/matmul.h"
#include "kernels/norm_matmul.h"
#include "parallel/communicator.h"

namespace troupe::parallel {

column_parallel_linear::column_parallel_linear(const tensor& weight, const tensor& bias)
    : weight_(weight), bias_(bias) {}

void column_parallel_linear::forward(const kernels::op_context& ctx, tensor_view out,
                                     tensor_view x) const {
  kernels::matmul(ctx, out, x, weight_.view(), bias_.view());
}

void column_parallel_linear::forward_swiglu(const kernels::op_context& ctx, tensor_view out, tensor_view x,
                                            tensor_view scratch) const {
  kernels::gate_up_swiglu(ctx, out, x, weight_.view(), scratch);
}

void column_parallel_linear::forward_qkv_rope(const kernels::op_context& ctx, tensor_view q, tensor_view k_cache,
                                              tensor_view v_cache, tensor_view x, tensor_view norm, float eps,
                                              tensor_view positions, tensor_view inv_freq, tensor_view slots,
                                              tensor_view normed, tensor_view qkv) const {
  kernels::norm_qkv_rope(ctx, q, k_cache, v_cache, x, norm, eps, weight_.view(), bias_.view(), positions, inv_freq,
                         slots, normed, qkv);
}

void column_parallel_linear::forward_swiglu_normed(const kernels::op_context& ctx, tensor_view out, tensor_view x,
                                                   tensor_view norm, float eps, tensor_view normed,
                                                   tensor_view scratch) const {
  kernels::norm_gate_up_swiglu(ctx, out, x, norm, eps, weight_.view(), normed, scratch);
}

row_parallel_linear::row_parallel_linear(const tensor& weight, communicator* group,
                                         std::chrono::milliseconds timeout)
    : weight_(weight), group_(group), timeout_(timeout) {}

void row_parallel_linear::forward(const kernels::op_context& ctx, tensor_view out,
                                  tensor_view x) const {
  kernels::matmul(ctx, out, x, weight_.view(), {});
  if (group_ && group_->size() > 1) group_->all_reduce(out, std::chrono::steady_clock::now() + timeout_);
}

bool row_parallel_linear::adds_in_store() const { return !group_ || group_->size() <= 1; }

void row_parallel_linear::forward_add(const kernels::op_context& ctx, tensor_view residual, tensor_view x,
                                      tensor_view scratch) const {
  if (adds_in_store()) return kernels::matmul_add(ctx, residual, x, weight_.view(), scratch);
  forward(ctx, scratch, x);
  kernels::add_inplace(ctx, residual, scratch);
}

}  // namespace troupe::parallel
