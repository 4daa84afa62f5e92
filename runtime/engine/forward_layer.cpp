// shard_context's layer bodies (run_layer, and run_layer_fused for one-row steps) and the
// marks of pipelined steps (forward with a token feed, mark_step, finish_mark). The rest of
// the class is in forward.cpp.
#include <chrono>
#include <cmath>
#include <stdexcept>

#include "kernels/attention.h"
#include "kernels/gate_up_swiglu.h"
#include "kernels/rmsnorm.h"
#include "kernels/rope.h"
#include "kernels/rope_kv_write.h"
#include "kernels/silu_mul.h"
#include "parallel/communicator.h"
#include "runtime/engine/forward.h"

namespace troupe {

namespace k = troupe::kernels;

namespace {

/// The same data seen as a [rows, cols] matrix.
tensor_view as_2d(tensor_view t, int64_t rows, int64_t cols) {
  t.shape = shape_t{rows, cols};
  return t;
}

}  // namespace

tensor_view shard_context::forward(const batch_input& b, const token_feed& feed) {
  if (!on_device_) throw std::logic_error("shard context: a token feed needs a CUDA context");
  for (const auto& r : feed.runs)
    if (r.count < 0 || r.dst < 0 || r.dst + r.count > b.n_tokens() || r.src < 0 || r.src + r.count > feed.source.numel())
      throw std::invalid_argument("forward: a token feed run outside the step's rows or its source");
  feed_ = &feed;
  struct clear {
    const token_feed*& f;
    ~clear() { f = nullptr; }
  } done{feed_};
  return forward(b);
}

int shard_context::mark_step() {
  marks_[mark_].stop(ops_.stream);
  const int m = mark_;
  mark_ ^= 1;
  return m;
}

bool shard_context::mark_done(int mark) const { return marks_[mark & 1].stop_done(); }

void shard_context::finish_mark(int mark, std::chrono::steady_clock::time_point d) {
  auto& m = marks_[mark & 1];
  poll_until([&m] { return m.stop_done(); }, d, "finish", "the step did not finish by its deadline");
  if (params_.time_steps) last_step_device_ms_ = m.elapsed_ms();
}

void shard_context::run_layer(int l, int t, const k::attention_batch& meta, tensor_view positions,
                              tensor_view slots) {
  const auto& c = model_.config();
  const size_t li = static_cast<size_t>(l);
  const auto& lin = linears_[static_cast<size_t>(l - model_.layer_begin())];
  tensor_view q = rows(q_, t), attn = rows(attn_, t);
  tensor_view x = rows(normed_, t);
  if (lin.fused_qkv) {
    // One matmul for q, k and v; RoPE and the KV write in one kernel over its output.
    lin.qkv.forward(ops_, rows(qkv_, t), x);
    k::rope_kv_write(ops_, q, k_cache_[li].view(), v_cache_[li].view(), rows(qkv_, t), positions,
                     model_.rope_inv_freq().view(), slots);
  } else {
    tensor_view kk = rows(k_, t), v = rows(v_, t);
    lin.q.forward(ops_, as_2d(q, t, n_heads_ * c.head_dim), x);
    lin.k.forward(ops_, as_2d(kk, t, n_kv_heads_ * c.head_dim), x);
    lin.v.forward(ops_, as_2d(v, t, n_kv_heads_ * c.head_dim), x);
    k::rope(ops_, q, positions, model_.rope_inv_freq().view());
    k::rope(ops_, kk, positions, model_.rope_inv_freq().view());
    k::kv_write(ops_, k_cache_[li].view(), v_cache_[li].view(), kk, v, slots);
  }
  k::paged_attention(ops_, attn, q, k_cache_[li].view(), v_cache_[li].view(), meta,
                     1.0f / std::sqrt(static_cast<float>(c.head_dim)));
  lin.o.forward(ops_, rows(delta_, t), as_2d(attn, t, n_heads_ * c.head_dim));
  k::add_rmsnorm(ops_, rows(normed_, t), rows(residual_, t), rows(delta_, t),
                 model_.weights().layers[li].ffn_norm.view(), c.rms_eps);

  if (lin.fused_gate_up) {
    lin.gate_up.forward_swiglu(ops_, rows(gate_, t), rows(normed_, t), rows(gate_up_, t));
  } else {
    lin.gate.forward(ops_, rows(gate_, t), rows(normed_, t));
    lin.up.forward(ops_, rows(up_, t), rows(normed_, t));
    k::silu_mul(ops_, rows(gate_, t), rows(gate_, t), rows(up_, t));
  }
  lin.down.forward(ops_, rows(delta_, t), rows(gate_, t));
  if (l + 1 < model_.layer_end())
    k::add_rmsnorm(ops_, rows(normed_, t), rows(residual_, t), rows(delta_, t),
                   model_.weights().layers[li + 1].attn_norm.view(), c.rms_eps);
}

void shard_context::run_layer_fused(int l, int t, const k::attention_batch& meta, tensor_view positions,
                                    tensor_view slots) {
  const auto& c = model_.config();
  const size_t li = static_cast<size_t>(l);
  const auto& lin = linears_[static_cast<size_t>(l - model_.layer_begin())];
  const auto& lw = model_.weights().layers[li];
  tensor_view q = rows(q_, t), attn = rows(attn_, t), residual = rows(residual_, t);
  lin.qkv.forward_qkv_rope(ops_, q, k_cache_[li].view(), v_cache_[li].view(), residual, lw.attn_norm.view(), c.rms_eps,
                           positions, model_.rope_inv_freq().view(), slots, rows(normed_, t), rows(qkv_, t));
  k::paged_attention(ops_, attn, q, k_cache_[li].view(), v_cache_[li].view(), meta,
                     1.0f / std::sqrt(static_cast<float>(c.head_dim)));
  lin.o.forward_add(ops_, residual, as_2d(attn, t, n_heads_ * c.head_dim), rows(delta_, t));
  lin.gate_up.forward_swiglu_normed(ops_, rows(gate_, t), residual, lw.ffn_norm.view(), c.rms_eps, rows(normed_, t),
                                    rows(gate_up_, t));
  lin.down.forward_add(ops_, residual, rows(gate_, t), rows(delta_, t));
}

}  // namespace troupe
