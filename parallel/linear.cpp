#include "parallel/linear.h"

#include "kernels/gate_up_swiglu.h"
#include "kernels/matmul.h"
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

row_parallel_linear::row_parallel_linear(const tensor& weight, communicator* group,
                                         std::chrono::milliseconds timeout)
    : weight_(weight), group_(group), timeout_(timeout) {}

void row_parallel_linear::forward(const kernels::op_context& ctx, tensor_view out,
                                  tensor_view x) const {
  kernels::matmul(ctx, out, x, weight_.view(), {});
  if (group_ && group_->size() > 1) group_->all_reduce(out, std::chrono::steady_clock::now() + timeout_);
}

}  // namespace troupe::parallel
