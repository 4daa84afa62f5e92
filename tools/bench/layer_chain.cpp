// troupe_gpu chain (gpu_timing.h, run_layer_chain): one row's decode layers as a chain of
// kernels in a CUDA graph, with op groups left out and under each GEMV tiling.
#include <cmath>
#include <cstdlib>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "kernels/attention.h"
#include "kernels/convert.h"
#include "kernels/gate_up_swiglu.h"
#include "kernels/matmul.h"
#include "kernels/norm_matmul.h"
#include "kernels/rmsnorm.h"
#include "kernels/rope.h"
#include "kernels/rope_kv_write.h"
#include "tools/bench/gpu_timing.h"

namespace troupe::bench {
namespace {

using json = nlohmann::json;

/// Op groups of a layer, as bits of a chain's mask.
enum op_bit : unsigned {
  op_qkv = 1,
  op_rope = 2,
  op_attention = 4,
  op_o = 8,
  op_norms = 16,
  op_gate_up = 32,
  op_down = 64,
  op_all = 127,
  op_fused = 128  ///< the norms and residual adds inside the projections (run_layer_fused)
};

struct layer {
  tensor qkv, o, gate_up, down;  // [n, k] weights: [(h + 2 kv) d, h], [h, h d], [2f, h], [h, f]
  tensor k_cache, v_cache;       // decode_fixture::kv_shape
};

struct chain {
  const model_config& c;
  const kernels::op_context& ctx;
  decode_fixture& fx;
  std::vector<layer> layers;
  tensor norm_w;                            // [h]
  tensor inv_freq;                          // [head_dim / 2] f32
  tensor residual, normed, delta;           // [1, h]
  tensor qkv_out;                           // [1, (heads + 2 kv) d]
  tensor q, attn;                           // [1, heads, d]
  tensor gate_up_out, gate;                 // [1, 2f], [1, f]

  /// One layer's ops of `mask`, in the forward's order (runtime/engine/forward.cpp).
  void run_layer(const layer& w, unsigned mask) {
    if (mask & op_fused) return run_fused(w, mask);
    if (mask & op_qkv) kernels::matmul(ctx, qkv_out.view(), normed.view(), w.qkv.view(), {});
    if (mask & op_rope)
      kernels::rope_kv_write(ctx, q.view(), w.k_cache.view(), w.v_cache.view(), qkv_out.view(), fx.pos.view(),
                             inv_freq.view(), fx.slots.view());
    if (mask & op_attention)
      kernels::paged_attention(ctx, attn.view(), q.view(), w.k_cache.view(), w.v_cache.view(), fx.meta,
                               1.0f / std::sqrt(static_cast<float>(c.head_dim)));
    tensor_view a2 = attn.view();
    a2.shape = shape_t{1, c.n_heads * c.head_dim};
    if (mask & op_o) kernels::matmul(ctx, delta.view(), a2, w.o.view(), {});
    if (mask & op_norms)
      kernels::add_rmsnorm(ctx, normed.view(), residual.view(), delta.view(), norm_w.view(), c.rms_eps);
    if (mask & op_gate_up) kernels::gate_up_swiglu(ctx, gate.view(), normed.view(), w.gate_up.view(), gate_up_out.view());
    if (mask & op_down) kernels::matmul(ctx, delta.view(), gate.view(), w.down.view(), {});
    if (mask & op_norms)
      kernels::add_rmsnorm(ctx, normed.view(), residual.view(), delta.view(), norm_w.view(), c.rms_eps);
  }

  /// The same with the norms inside the projections after them, RoPE and the KV write in the
  /// q/k/v projection's store and the residual adds in the stores of the projections before
  /// them (shard_context::run_layer_fused); op_norms has no kernel of its own.
  void run_fused(const layer& w, unsigned mask) {
    tensor_view a2 = attn.view();
    a2.shape = shape_t{1, c.n_heads * c.head_dim};
    if ((mask & op_qkv) && (mask & op_rope))
      kernels::norm_qkv_rope(ctx, q.view(), w.k_cache.view(), w.v_cache.view(), residual.view(), norm_w.view(),
                             c.rms_eps, w.qkv.view(), {}, fx.pos.view(), inv_freq.view(), fx.slots.view(),
                             normed.view(), qkv_out.view());
    else if (mask & op_qkv)
      kernels::norm_matmul(ctx, qkv_out.view(), residual.view(), norm_w.view(), c.rms_eps, w.qkv.view(), {},
                           normed.view());
    else if (mask & op_rope)
      kernels::rope_kv_write(ctx, q.view(), w.k_cache.view(), w.v_cache.view(), qkv_out.view(), fx.pos.view(),
                             inv_freq.view(), fx.slots.view());
    if (mask & op_attention)
      kernels::paged_attention(ctx, attn.view(), q.view(), w.k_cache.view(), w.v_cache.view(), fx.meta,
                               1.0f / std::sqrt(static_cast<float>(c.head_dim)));
    if (mask & op_o) kernels::matmul_add(ctx, residual.view(), a2, w.o.view(), delta.view());
    if (mask & op_gate_up)
      kernels::norm_gate_up_swiglu(ctx, gate.view(), residual.view(), norm_w.view(), c.rms_eps, w.gate_up.view(),
                                   normed.view(), gate_up_out.view());
    if (mask & op_down) kernels::matmul_add(ctx, residual.view(), gate.view(), w.down.view(), delta.view());
  }

  double weight_bytes(unsigned mask) const {
    const layer& w = layers.front();
    double b = 0;
    for (auto [bit, t] : {std::pair{op_qkv, &w.qkv}, {op_o, &w.o}, {op_gate_up, &w.gate_up}, {op_down, &w.down}})
      if (mask & bit) b += static_cast<double>(t->bytes());
    return b * static_cast<double>(layers.size());
  }

  /// Microseconds of the whole chain (every layer once) replayed from one graph.
  double time(device_stream& s, unsigned mask) {
    return graph_us(s, [&] {
      for (const layer& w : layers) run_layer(w, mask);
    }, 1, 9);
  }
};

tensor random_tensor(const kernels::op_context& ctx, shape_t sh, dtype t, uint64_t seed, float sd) {
  tensor x(sh, t, backend_kind::cuda);
  kernels::fill_random(ctx, x.view(), seed, sd, 0, 0);
  return x;
}

}  // namespace

void run_layer_chain(const model_config& c, const device_ref& d, dtype t) {
  use_device(d);
  device_stream s(d);
  const kernels::op_context ctx{backend_kind::cuda, 1, s.get()};
  const int64_t h = c.hidden, hd = c.head_dim, nh = c.n_heads, nkv = c.n_kv_heads, f = c.ffn;
  const double copy = copy_rate(d);
  std::cout << json{{"kind", "copy"}, {"copy_rate_GBps", copy / 1e9}}.dump() << std::endl;
  decode_fixture fx(c, s, 1, 192);
  chain ch{c, ctx, fx, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}};
  uint64_t seed = 1000;
  for (int l = 0; l < c.n_layers; ++l) {
    ch.layers.push_back(layer{random_tensor(ctx, {(nh + 2 * nkv) * hd, h}, t, ++seed, 0.02f),
                              random_tensor(ctx, {h, nh * hd}, t, ++seed, 0.02f),
                              random_tensor(ctx, {2 * f, h}, t, ++seed, 0.02f),
                              random_tensor(ctx, {h, f}, t, ++seed, 0.02f),
                              random_tensor(ctx, fx.kv_shape, t, ++seed, 1.0f),
                              random_tensor(ctx, fx.kv_shape, t, ++seed, 1.0f)});
  }
  ch.norm_w = tensor({h}, t, backend_kind::cuda);
  kernels::fill_value(ctx, ch.norm_w.view(), 1.0f);
  const auto inv = kernels::rope_inv_freq(static_cast<int>(hd), c.rope_theta, c.scaling);
  ch.inv_freq = tensor({hd / 2}, dtype::f32, backend_kind::cuda);
  copy_bytes(ch.inv_freq.view().data, inv.data(), inv.size() * 4, backend_kind::cuda, s.get());
  ch.residual = random_tensor(ctx, {1, h}, t, 1, 1.0f);
  ch.normed = random_tensor(ctx, {1, h}, t, 2, 1.0f);
  ch.delta = random_tensor(ctx, {1, h}, t, 3, 1.0f);
  ch.qkv_out = random_tensor(ctx, {1, (nh + 2 * nkv) * hd}, t, 4, 1.0f);
  ch.q = tensor({1, nh, hd}, t, backend_kind::cuda);
  ch.attn = tensor({1, nh, hd}, t, backend_kind::cuda);
  ch.gate_up_out = tensor({1, 2 * f}, t, backend_kind::cuda);
  ch.gate = tensor({1, f}, t, backend_kind::cuda);
  s.synchronize();

  const std::pair<const char*, unsigned> chains[] = {
      {"full", op_all},
      {"no_attention", op_all & ~op_attention},
      {"no_rope", op_all & ~op_rope},
      {"no_norms", op_all & ~op_norms},
      {"projections", op_qkv | op_o | op_gate_up | op_down},
      {"qkv_o", op_qkv | op_o},
      {"gate_up_down", op_gate_up | op_down},
      {"small_ops", op_rope | op_attention | op_norms},
      {"fused", op_all | op_fused},
      {"fused_no_attention", (op_all & ~op_attention) | op_fused},
      {"fused_no_rope", (op_all & ~op_rope) | op_fused}};
  auto report = [&](const char* name, unsigned mask, int short_v, int long_v) {
    kernels::cuda::set_gemv_variants(short_v, long_v);
    const double us = ch.time(s, mask);
    const double bytes = ch.weight_bytes(mask);
    json row{{"kind", "chain"}, {"chain", name}, {"short_variant", short_v}, {"long_variant", long_v},
             {"layers", c.n_layers}, {"us", us}, {"us_per_layer", us / c.n_layers}};
    if (bytes > 0) {
      row["weight_GB"] = bytes / 1e9;
      row["GBps"] = bytes / us / 1e3;
      row["pct_copy"] = 100.0 * bytes / (us * 1e-6) / copy;
    }
    std::cout << row.dump() << std::endl;
  };
  kernels::cuda::set_norm_fusion(true);  // the fused chains (off by default until measured)
  for (const auto& [name, mask] : chains) report(name, mask, -1, -1);
  kernels::cuda::set_fused_merge(true);  // attention's splits merged in their last split (off by default)
  report("full_merged_in_split", op_all, -1, -1);
  report("fused_merged_in_split", op_all | op_fused, -1, -1);
  kernels::cuda::set_fused_merge(false);
  // CHAIN_TILINGS=1: each GEMV tiling pinned (docs/gpu-notes.md, measured 2026-12-05).
  const char* tilings = std::getenv("CHAIN_TILINGS");
  if (tilings && tilings[0] == '1') {
    for (int v : {0, 3, 4, 5, 6, 7, 1, 2}) {
      report("full", op_all, v, -1);
      report("projections", op_qkv | op_o | op_gate_up | op_down, v, -1);
    }
    for (int v : {0, 3, 5, 6, 2}) {
      report("full", op_all, -1, v);
      report("gate_up_down", op_gate_up | op_down, -1, v);
    }
  }
  kernels::cuda::set_gemv_variants(-1, -1);
}

}  // namespace troupe::bench
