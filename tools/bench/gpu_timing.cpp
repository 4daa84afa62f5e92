// GPU timing helpers of troupe_gpu (gpu_timing.h).
#include "tools/bench/gpu_timing.h"

#include <algorithm>
#include <chrono>
#include <iostream>
#include <nlohmann/json.hpp>

#include "kernels/attention.h"
#include "kernels/convert.h"
#include "kernels/matmul.h"
#include "kernels/rmsnorm.h"
#include "kernels/rope.h"
#include "kernels/rope_kv_write.h"
#include "kernels/sample.h"
#include "kernels/swiglu.h"

namespace troupe::bench {
namespace {

using json = nlohmann::json;
using clock_type = std::chrono::steady_clock;

double ms_since(clock_type::time_point t0) {
  return std::chrono::duration<double, std::milli>(clock_type::now() - t0).count();
}

}  // namespace

decode_fixture::decode_fixture(const model_config& c, device_stream& s, int64_t m, int ctx_len)
    : kv_shape{m * max_blocks(ctx_len), block, c.n_kv_heads, c.head_dim} {
  const int mb = max_blocks(ctx_len);
  std::vector<int32_t> p(static_cast<size_t>(m), ctx_len - 1), sl, qs, cl(static_cast<size_t>(m), ctx_len), bt;
  for (int64_t r = 0; r <= m; ++r) qs.push_back(static_cast<int32_t>(r));
  for (int64_t r = 0; r < m; ++r) {
    sl.push_back(static_cast<int32_t>((r * mb) * block + ctx_len - 1));
    for (int b = 0; b < mb; ++b) bt.push_back(static_cast<int32_t>(r * mb + b));
  }
  auto dev_i32 = [&](const std::vector<int32_t>& v, shape_t sh) {
    tensor tt(sh, dtype::i32, backend_kind::cuda);
    copy_bytes(tt.view().data, v.data(), v.size() * 4, backend_kind::cuda, s.get());
    s.synchronize();
    return tt;
  };
  pos = dev_i32(p, {m});
  slots = dev_i32(sl, {m});
  query_start = dev_i32(qs, {m + 1});
  context_len = dev_i32(cl, {m});
  block_tables = dev_i32(bt, {m, mb});
  meta.n_seqs = static_cast<int>(m);
  meta.max_blocks = mb;
  meta.block_size = block;
  meta.query_start = query_start.view();
  meta.context_len = context_len.view();
  meta.block_tables = block_tables.view();
  kernels::op_context ctx{backend_kind::cuda};
  const int64_t ws = kernels::decode_workspace_floats(ctx, static_cast<int>(m), c.n_heads, c.n_kv_heads, c.head_dim,
                                                      mb * block);
  if (ws > 0) workspace = tensor({ws}, dtype::f32, backend_kind::cuda);
  meta.workspace = workspace.view();
  split_counts = dev_i32(std::vector<int32_t>(static_cast<size_t>(m) * c.n_kv_heads, 0), {m * c.n_kv_heads});
  meta.split_counts = split_counts.view();
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double copy_rate(const device_ref& d) {
  use_device(d);
  device_stream s(d);
  const int64_t n = int64_t{1} << 28;  // f32 elements = 1 GiB
  tensor a({n}, dtype::f32, backend_kind::cuda), b({n}, dtype::f32, backend_kind::cuda);
  const size_t bytes = static_cast<size_t>(n) * 4;
  copy_bytes(b.view().data, a.view().data, bytes, backend_kind::cuda, s.get());
  s.synchronize();
  const int reps = 20;
  const auto t0 = clock_type::now();
  for (int i = 0; i < reps; ++i) copy_bytes(b.view().data, a.view().data, bytes, backend_kind::cuda, s.get());
  s.synchronize();
  return 2.0 * static_cast<double>(bytes) * reps / (ms_since(t0) / 1e3);
}

double gemm_rate(const device_ref& d) {
  use_device(d);
  device_stream s(d);
  const int64_t n = 8192;
  tensor x({n, n}, dtype::bf16, backend_kind::cuda), w({n, n}, dtype::bf16, backend_kind::cuda),
      y({n, n}, dtype::bf16, backend_kind::cuda);
  const kernels::op_context ctx{backend_kind::cuda, 1, s.get()};
  kernels::matmul(ctx, y.view(), x.view(), w.view(), {});
  s.synchronize();
  const int reps = 20;
  const auto t0 = clock_type::now();
  for (int i = 0; i < reps; ++i) kernels::matmul(ctx, y.view(), x.view(), w.view(), {});
  s.synchronize();
  return 2.0 * n * n * n * reps / (ms_since(t0) / 1e3);
}


/// A row count's first product against its second, eager and synchronized (us): the first
/// makes the cuBLASLt plan (heuristic query, descriptors) and may load its kernel's module
/// (CUDA's lazy loading): the cost a serving step pays for a row count it has not seen.
/// Row counts no other timing here uses (97, 181, 253), then one more below each of their
/// plan row counts (kernels::matmul_plan_rows: 98, 182, 254 take the algorithms the first
/// three chose): what a serving step pays after the warm-up. One JSON line each.
void print_cold_plans(const kernels::op_context& ctx, device_stream& s, const char* op, tensor_view x, tensor_view out,
                      tensor_view w, dtype t) {
  for (int64_t m : {97, 181, 253, 98, 182, 254}) {
    tensor_view xv = x;
    xv.shape = shape_t{m, w.shape[1]};
    tensor_view ov = out;
    ov.type = op == std::string("lm_head") ? dtype::f32 : t;
    ov.shape = shape_t{m, w.shape[0]};
    double us[2];
    for (double& u : us) {
      const auto t0 = clock_type::now();
      kernels::cuda::matmul_cublas(ctx, ov, xv, w, {});
      s.synchronize();
      u = ms_since(t0) * 1e3;
    }
    std::cout << json{{"kind", "cold_plan"}, {"op", op}, {"m", m}, {"plan_rows_warm", m % 2 == 0},
                      {"first_us", us[0]}, {"second_us", us[1]}}.dump()
              << std::endl;
  }
}

/// Per-op decode timings at the model's shape (tensor 1): every projection through cuBLASLt
/// and through the skinny GEMV at several row counts, and the other ops of a layer. Weights
/// rotate over copies that together exceed the L2 several times. One JSON object per line.
void run_kernel_timings(const model_config& c, const device_ref& d, dtype t) {
  use_device(d);
  device_stream s(d);
  const kernels::op_context ctx{backend_kind::cuda, 1, s.get()};
  const int64_t h = c.hidden, hd = c.head_dim, nh = c.n_heads, nkv = c.n_kv_heads, f = c.ffn;
  std::cout << json{{"kind", "copy"}, {"copy_rate_GBps", copy_rate(d) / 1e9}}.dump() << std::endl;
  struct proj {
    const char* name;
    int64_t n, k;
  };
  const proj projs[] = {{"qkv", (nh + 2 * nkv) * hd, h}, {"o", h, nh * hd}, {"gate_up", 2 * f, h},
                        {"down", h, f}, {"lm_head", c.vocab, h}};
  const int64_t max_m = 256;
  tensor x({max_m, std::max(h, f)}, t, backend_kind::cuda);
  kernels::fill_random(ctx, x.view(), 7, 1.0f, 0, 0);
  tensor out({max_m, c.vocab}, dtype::f32, backend_kind::cuda);
  for (const proj& p : projs) {
    const double bytes = static_cast<double>(p.n * p.k) * 2;
    const int copies = static_cast<int>(std::max<double>(2, std::ceil(400e6 / bytes)));
    std::vector<tensor> ws;
    for (int i = 0; i < copies; ++i) {
      ws.emplace_back(shape_t{p.n, p.k}, t, backend_kind::cuda);
      kernels::fill_random(ctx, ws.back().view(), 100 + static_cast<uint64_t>(i), 0.02f, 0, 0);
    }
    for (int64_t m : {1, 2, 4, 8, 16, 64, 256}) {
      tensor_view xv = x.view();
      xv.shape = shape_t{m, p.k};
      tensor_view ov = out.view();
      ov.type = p.name == std::string("lm_head") ? dtype::f32 : t;
      ov.shape = shape_t{m, p.n};
      int i = 0;
      json row{{"kind", "matmul"}, {"op", p.name}, {"m", m}, {"n", p.n}, {"k", p.k}};
      const double us_blas = graph_us(s, [&] {
        kernels::cuda::matmul_cublas(ctx, ov, xv, ws[static_cast<size_t>(i++ % copies)].view(), {});
      });
      row["cublas_us"] = us_blas;
      row["cublas_GBps"] = bytes / us_blas / 1e3;
      for (int variant = 0; variant < 3 && m <= 8; ++variant) {
        if (variant > 0 && m != 1 && m != 8) break;
        i = 0;
        const double us_gemv = graph_us(s, [&] {
          if (!kernels::cuda::gemv(ctx, ov, xv, ws[static_cast<size_t>(i++ % copies)].view(), {}, variant))
            throw std::runtime_error("gemv declined a model shape");
        });
        const std::string sfx = variant == 0 ? "" : "_v" + std::to_string(variant);
        row["gemv" + sfx + "_us"] = us_gemv;
        row["gemv" + sfx + "_GBps"] = bytes / us_gemv / 1e3;
      }
      std::cout << row.dump() << std::endl;
    }
    print_cold_plans(ctx, s, p.name, x.view(), out.view(), ws.front().view(), t);
  }
  // The other ops of a layer, at decode shapes (context 192, block 16).
  const auto inv = kernels::rope_inv_freq(static_cast<int>(hd), c.rope_theta, c.scaling);
  tensor inv_t({hd / 2}, dtype::f32, backend_kind::cuda);
  copy_bytes(inv_t.view().data, inv.data(), inv.size() * 4, backend_kind::cuda, s.get());
  tensor norm_w({h}, t, backend_kind::cuda);
  kernels::fill_value(ctx, norm_w.view(), 1.0f);
  for (int64_t m : {1, 64, 256}) {
    const int ctx_len = 192;
    decode_fixture fx(c, s, m, ctx_len);
    const kernels::attention_batch& meta = fx.meta;
    tensor resid({m, h}, t, backend_kind::cuda), normed({m, h}, t, backend_kind::cuda), delta({m, h}, t, backend_kind::cuda);
    kernels::fill_random(ctx, resid.view(), 1, 1.0f, 0, 0);
    kernels::fill_random(ctx, delta.view(), 2, 1.0f, 0, 0);
    tensor qkv({m, (nh + 2 * nkv) * hd}, t, backend_kind::cuda), q({m, nh, hd}, t, backend_kind::cuda);
    kernels::fill_random(ctx, qkv.view(), 3, 1.0f, 0, 0);
    tensor kc(fx.kv_shape, t, backend_kind::cuda), vc(fx.kv_shape, t, backend_kind::cuda);
    kernels::fill_random(ctx, kc.view(), 4, 1.0f, 0, 0);
    kernels::fill_random(ctx, vc.view(), 5, 1.0f, 0, 0);
    tensor attn({m, nh, hd}, t, backend_kind::cuda), gu({m, 2 * f}, t, backend_kind::cuda), g({m, f}, t, backend_kind::cuda);
    kernels::fill_random(ctx, gu.view(), 6, 1.0f, 0, 0);
    tensor logits({m, c.vocab}, dtype::f32, backend_kind::cuda), toks({m}, dtype::i32, backend_kind::cuda);
    kernels::fill_random(ctx, logits.view(), 8, 1.0f, 0, 0);
    json row{{"kind", "ops"}, {"m", m}};
    row["add_rmsnorm_us"] = graph_us(s, [&] {
      kernels::add_rmsnorm(ctx, normed.view(), resid.view(), delta.view(), norm_w.view(), c.rms_eps);
    });
    row["rope_kv_write_us"] = graph_us(s, [&] {
      kernels::rope_kv_write(ctx, q.view(), kc.view(), vc.view(), qkv.view(), fx.pos.view(), inv_t.view(), fx.slots.view());
    });
    row["paged_attention_us"] = graph_us(s, [&] {
      kernels::paged_attention(ctx, attn.view(), q.view(), kc.view(), vc.view(), meta, 0.088f);
    });
    row["swiglu_us"] = graph_us(s, [&] { kernels::swiglu(ctx, g.view(), gu.view()); });
    row["argmax_us"] = graph_us(s, [&] { kernels::argmax(ctx, toks.view(), logits.view()); });
    std::cout << row.dump() << std::endl;
  }
}

}  // namespace troupe::bench
