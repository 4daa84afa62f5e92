#pragma once
/// Tensor-parallel linear layers (Megatron/vLLM style). They own their collectives:
/// the model forward calls forward() and never talks to a communicator itself.
#include <chrono>

#include "kernels/op_context.h"
#include "kernels/base/tensor.h"

namespace troupe::parallel {

class communicator;

/// y = x·Wᵀ (+ b) where this rank holds a slice of W's output rows: it computes its own
/// output columns; no communication (q/k/v, gate and up projections).
class column_parallel_linear {
 public:
  /// `weight` [n_local, k] and `bias` [n_local] (may be empty) must outlive the layer.
  column_parallel_linear(const tensor& weight, const tensor& bias);
  /// out[m, n_local] = x[m, k] · weightᵀ + bias.
  void forward(const kernels::op_context& ctx, tensor_view out, tensor_view x) const;
  /// out[m, n_local / 2] = swiglu(x · weightᵀ) for a fused gate/up weight (this rank's gate
  /// rows, then its up rows; no bias); `scratch` [m, n_local] may receive the projection
  /// (kernels::gate_up_swiglu).
  void forward_swiglu(const kernels::op_context& ctx, tensor_view out, tensor_view x, tensor_view scratch) const;
  /// For a fused q/k/v weight: q and the KV caches at `slots` get rope_kv_write of
  /// rmsnorm(x, norm, eps) · weightᵀ + bias, in the projection's kernel where
  /// kernels::norm_fusion_applies (kernels::norm_qkv_rope); `normed` [m, k] and `qkv`
  /// [m, n_local] may receive the intermediates.
  void forward_qkv_rope(const kernels::op_context& ctx, tensor_view q, tensor_view k_cache, tensor_view v_cache,
                        tensor_view x, tensor_view norm, float eps, tensor_view positions, tensor_view inv_freq,
                        tensor_view slots, tensor_view normed, tensor_view qkv) const;
  /// forward_swiglu of rmsnorm(x, norm, eps) (kernels::norm_gate_up_swiglu); `normed` [m, k]
  /// and `scratch` [m, n_local] may receive the intermediates.
  void forward_swiglu_normed(const kernels::op_context& ctx, tensor_view out, tensor_view x, tensor_view norm,
                             float eps, tensor_view normed, tensor_view scratch) const;

 private:
  const tensor& weight_;  // [n_local, k]
  const tensor& bias_;    // [n_local] or empty
};

/// y = x·Wᵀ where this rank holds a slice of W's input columns and of x's features: each
/// rank multiplies its slice, then the group all-reduces the partial sums (the attention
/// output and MLP down projections). With no group (tensor 1) it is a plain matmul.
class row_parallel_linear {
 public:
  /// `weight` [n, k_local]; `group` may be null; every all-reduce gets `timeout`.
  row_parallel_linear(const tensor& weight, communicator* group, std::chrono::milliseconds timeout);
  /// out[m, n] = Σ_ranks x_rank[m, k_local] · weight_rankᵀ.
  void forward(const kernels::op_context& ctx, tensor_view out, tensor_view x) const;
  /// residual[m, n] += forward(x), the product rounded to residual's type first: in the
  /// projection's store where there is no all-reduce (kernels::matmul_add), else through
  /// `scratch` [m, n] and add_inplace.
  void forward_add(const kernels::op_context& ctx, tensor_view residual, tensor_view x, tensor_view scratch) const;
  /// Whether forward_add runs as one kernel: no all-reduce between the product and the add.
  bool adds_in_store() const;

 private:
  const tensor& weight_;  // [n, k_local]
  communicator* group_;
  std::chrono::milliseconds timeout_;
};

}  // namespace troupe::parallel
