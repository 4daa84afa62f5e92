// The CUDA norm fusions (kernels/norm_matmul.h) against the CPU reference and against the
// plain CUDA ops they replace: bitwise where they do not fuse and for the residual add, within
// the normalized rows' rounding where the norm fuses (needs a GPU; skipped without one).
#ifdef TROUPE_HAVE_CUDA_KERNELS
#include <catch2/catch.hpp>
#include <cmath>
#include <random>
#include <vector>

#include "cuda_test_util.h"
#include "kernels/add.h"
#include "kernels/gate_up_swiglu.h"
#include "kernels/kernel_test_util.h"
#include "kernels/matmul.h"
#include "kernels/norm_matmul.h"
#include "kernels/rmsnorm.h"
#include "kernels/rope_kv_write.h"

using namespace troupe;
using namespace troupe::test;

namespace {

/// Fills a device tensor with 0xff bytes (NaN in every float type): a value the op forgot
/// to write shows.
void poison(tensor& t) { cuda_ok(cudaMemset(t.view().data, 0xff, t.bytes()), "poison"); }

/// The fusions on (off by default until measured) for one test case, then as they were.
struct fusion_on {
  const bool was = kernels::cuda::norm_fusion_enabled();
  fusion_on() { kernels::cuda::set_norm_fusion(true); }
  ~fusion_on() { kernels::cuda::set_norm_fusion(was); }
};

}  // namespace

TEST_CASE("CUDA fuses the norm into one-row bf16 and f16 projections only, outside the batch-invariant mode, when on",
          "[cuda]") {
  if (!cuda_device_or_skip()) return;
  const fusion_on fused;
  CHECK(kernels::norm_fusion_applies(cuda_ctx(), 1, 4096, dtype::bf16));
  CHECK(kernels::norm_fusion_applies(cuda_ctx(), 1, 8, dtype::f16));
  CHECK_FALSE(kernels::norm_fusion_applies(cuda_ctx(), 2, 4096, dtype::bf16));
  CHECK_FALSE(kernels::norm_fusion_applies(cuda_ctx(), 1, 4096, dtype::f32));
  CHECK_FALSE(kernels::norm_fusion_applies(cuda_ctx(), 1, 4100, dtype::bf16));
  CHECK(kernels::norm_fusion_applies(cuda_ctx(), 1, 8192, dtype::bf16));
  auto invariant = cuda_ctx();
  invariant.batch_invariant = true;
  CHECK_FALSE(kernels::norm_fusion_applies(invariant, 1, 4096, dtype::bf16));
  CHECK_FALSE(kernels::norm_fusion_applies(cpu_ctx(), 1, 4096, dtype::f32));
  kernels::cuda::set_norm_fusion(false);  // the default until measured on a GPU
  CHECK_FALSE(kernels::norm_fusion_applies(cuda_ctx(), 1, 4096, dtype::bf16));
}

TEST_CASE("CUDA norm_matmul matches the CPU, and rmsnorm then matmul (bitwise where it does not fuse)", "[cuda]") {
  if (!cuda_device_or_skip()) return;
  const fusion_on fused;
  std::mt19937 rng(71);
  for (dtype t : float_types())
    for (int64_t n : {1, 769, 5125})
      for (int64_t m : {1, 3})
        for (int64_t k : {8, 776, 4096})
          for (dtype nt : {dtype::f32, t}) {
            CAPTURE(dtype_name(t), n, m, k, dtype_name(nt));
            const auto x = round_to(random_floats(rng, m * k, -3, 3), t);
            const auto g = round_to(random_floats(rng, k, 0.5f, 1.5f), nt);
            const auto w = round_to(random_floats(rng, n * k, -0.5f, 0.5f), t);
            const auto b = random_floats(rng, n);
            tensor hx = f32_tensor({m, k}, x), hg = f32_tensor({k}, g), hw = f32_tensor({n, k}, w);
            tensor hb = f32_tensor({n}, b), hs({m, k}, dtype::f32, backend_kind::cpu);
            tensor ho({m, n}, dtype::f32, backend_kind::cpu);
            kernels::norm_matmul(cpu_ctx(), ho.view(), hx.view(), hg.view(), 1e-5f, hw.view(), hb.view(), hs.view());
            tensor dx = to_device(x, {m, k}, t), dg = to_device(g, {k}, nt), dw = to_device(w, {n, k}, t);
            tensor db = to_device(b, {n}, dtype::f32), ds({m, k}, t, backend_kind::cuda);
            tensor dout({m, n}, t, backend_kind::cuda);
            poison(dout);
            kernels::norm_matmul(cuda_ctx(), dout.view(), dx.view(), dg.view(), 1e-5f, dw.view(), db.view(), ds.view());
            // The normalized x is rounded to t before the k-long dot (sqrt(k) / 3 per partial sum).
            CHECK(max_rel_error(to_host(dout), values(ho), std::max(1.0, std::sqrt(double(k)))) <= 2 * tolerance(t));
            tensor dn({m, k}, t, backend_kind::cuda), dsep({m, n}, t, backend_kind::cuda);
            kernels::rmsnorm(cuda_ctx(), dn.view(), dx.view(), dg.view(), 1e-5f);
            kernels::matmul(cuda_ctx(), dsep.view(), dn.view(), dw.view(), db.view());
            if (m == 1 && nt == t)  // fused: x · g scaled after the dot, not rounded before it
              CHECK(max_rel_error(to_host(dout), to_host(dsep), std::max(1.0, std::sqrt(double(k)))) <= 2 * tolerance(t));
            else
              CHECK(to_host(dout) == to_host(dsep));
          }
}

TEST_CASE("CUDA norm_matmul at one row matches the CPU at a long k and into f32 logits, as the output projection runs",
          "[cuda]") {
  if (!cuda_device_or_skip()) return;
  const fusion_on fused;
  std::mt19937 rng(75);
  for (dtype t : float_types())
    for (int64_t n : {1, 769, 5125})
      for (int64_t k : {776, 8192})  // 8192: the one-row-a-warp tiling of long rows
        for (dtype ot : {dtype::f32, t}) {
          CAPTURE(dtype_name(t), n, k, dtype_name(ot));
          const auto x = round_to(random_floats(rng, k, -3, 3), t);
          const auto g = round_to(random_floats(rng, k, 0.5f, 1.5f), t);
          const auto w = round_to(random_floats(rng, n * k, -0.5f, 0.5f), t);
          tensor hx = f32_tensor({1, k}, x), hg = f32_tensor({k}, g), hw = f32_tensor({n, k}, w);
          tensor hs({1, k}, dtype::f32, backend_kind::cpu), ho({1, n}, dtype::f32, backend_kind::cpu);
          kernels::norm_matmul(cpu_ctx(), ho.view(), hx.view(), hg.view(), 1e-5f, hw.view(), {}, hs.view());
          tensor dx = to_device(x, {1, k}, t), dg = to_device(g, {k}, t), dw = to_device(w, {n, k}, t);
          tensor ds({1, k}, t, backend_kind::cuda), dout({1, n}, ot, backend_kind::cuda);
          poison(dout);
          kernels::norm_matmul(cuda_ctx(), dout.view(), dx.view(), dg.view(), 1e-5f, dw.view(), {}, ds.view());
          CHECK(max_rel_error(to_host(dout), values(ho), std::max(1.0, std::sqrt(double(k)))) <= 2 * tolerance(t));
        }
}

TEST_CASE("CUDA norm_gate_up_swiglu matches the CPU, and rmsnorm then gate_up_swiglu (bitwise unfused)", "[cuda]") {
  if (!cuda_device_or_skip()) return;
  const fusion_on fused;
  std::mt19937 rng(72);
  for (dtype t : float_types())
    for (int64_t f : {1, 769, 5125})
      for (int64_t m : {1, 2})
        for (int64_t k : {8, 1032}) {
          CAPTURE(dtype_name(t), f, m, k);
          const auto x = round_to(random_floats(rng, m * k, -3, 3), t);
          const auto g = round_to(random_floats(rng, k, 0.5f, 1.5f), t);
          const auto w = round_to(random_floats(rng, 2 * f * k, -0.5f, 0.5f), t);
          tensor hx = f32_tensor({m, k}, x), hg = f32_tensor({k}, g), hw = f32_tensor({2 * f, k}, w);
          tensor hs({m, k}, dtype::f32, backend_kind::cpu), hp({m, 2 * f}, dtype::f32, backend_kind::cpu);
          tensor ho({m, f}, dtype::f32, backend_kind::cpu);
          kernels::norm_gate_up_swiglu(cpu_ctx(), ho.view(), hx.view(), hg.view(), 1e-5f, hw.view(), hs.view(),
                                       hp.view());
          tensor dx = to_device(x, {m, k}, t), dg = to_device(g, {k}, t), dw = to_device(w, {2 * f, k}, t);
          tensor ds({m, k}, t, backend_kind::cuda), dp({m, 2 * f}, t, backend_kind::cuda);
          tensor dout({m, f}, t, backend_kind::cuda);
          poison(dout);
          kernels::norm_gate_up_swiglu(cuda_ctx(), dout.view(), dx.view(), dg.view(), 1e-5f, dw.view(), ds.view(),
                                       dp.view());
          // A product of two k-long dots of normalized rows (as the gate_up_swiglu test).
          CHECK(max_rel_error(to_host(dout), values(ho), std::max(1.0, double(k) / 3)) <= 2 * tolerance(t));
          tensor dn({m, k}, t, backend_kind::cuda), dsep({m, f}, t, backend_kind::cuda);
          kernels::rmsnorm(cuda_ctx(), dn.view(), dx.view(), dg.view(), 1e-5f);
          kernels::gate_up_swiglu(cuda_ctx(), dsep.view(), dn.view(), dw.view(), dp.view());
          if (m == 1)
            CHECK(max_rel_error(to_host(dout), to_host(dsep), std::max(1.0, double(k) / 3)) <= 2 * tolerance(t));
          else
            CHECK(to_host(dout) == to_host(dsep));
        }
}

TEST_CASE("CUDA matmul_add adds the rounded product to the residual as matmul then add_inplace do, bitwise",
          "[cuda]") {
  if (!cuda_device_or_skip()) return;
  const fusion_on fused;
  std::mt19937 rng(73);
  for (dtype t : float_types())
    for (int64_t n : {1, 769, 5125})
      for (int64_t m : {1, 3})
        for (int64_t k : {8, 776, 14336}) {
          CAPTURE(dtype_name(t), n, m, k);
          const auto r = round_to(random_floats(rng, m * n, -3, 3), t);
          const auto x = round_to(random_floats(rng, m * k), t);
          const auto w = round_to(random_floats(rng, n * k, -0.5f, 0.5f), t);
          tensor hr = f32_tensor({m, n}, r), hx = f32_tensor({m, k}, x), hw = f32_tensor({n, k}, w);
          tensor hs({m, n}, dtype::f32, backend_kind::cpu);
          kernels::matmul_add(cpu_ctx(), hr.view(), hx.view(), hw.view(), hs.view());
          tensor dr = to_device(r, {m, n}, t), dx = to_device(x, {m, k}, t), dw = to_device(w, {n, k}, t);
          tensor ds({m, n}, t, backend_kind::cuda);
          kernels::matmul_add(cuda_ctx(), dr.view(), dx.view(), dw.view(), ds.view());
          CHECK(max_rel_error(to_host(dr), values(hr), std::max(1.0, std::sqrt(double(k)) / 3)) <= 2 * tolerance(t));
          tensor dsep = to_device(r, {m, n}, t), dp({m, n}, t, backend_kind::cuda);
          kernels::matmul(cuda_ctx(), dp.view(), dx.view(), dw.view(), {});
          kernels::add_inplace(cuda_ctx(), dsep.view(), dp.view());
          CHECK(to_host(dr) == to_host(dsep));
        }
}

TEST_CASE("CUDA norm_matmul names a norm weight of the wrong width instead of fusing it", "[cuda]") {
  if (!cuda_device_or_skip()) return;
  const fusion_on fused;
  tensor x = to_device(std::vector<float>(64, 1.0f), {1, 64}, dtype::bf16);
  tensor g = to_device(std::vector<float>(32, 1.0f), {32}, dtype::bf16);
  tensor w = to_device(std::vector<float>(8 * 64, 0.5f), {8, 64}, dtype::bf16);
  tensor out({1, 8}, dtype::bf16, backend_kind::cuda), s({1, 64}, dtype::bf16, backend_kind::cuda);
  CHECK_THROWS_WITH(kernels::norm_matmul(cuda_ctx(), out.view(), x.view(), g.view(), 1e-5f, w.view(), {}, s.view()),
                    Catch::Contains("rmsnorm") && Catch::Contains("weight"));
}
TEST_CASE("CUDA norm_qkv_rope writes q and the caches bitwise as norm_matmul then rope_kv_write, near the CPU",
          "[cuda]") {
  if (!cuda_device_or_skip()) return;
  const fusion_on fused;
  std::mt19937 rng(74);
  struct heads { int64_t nh, nkv, hd; };
  for (dtype t : {dtype::bf16, dtype::f16})
    for (heads h : {heads{4, 2, 128}, heads{3, 1, 64}, heads{2, 2, 8}})
      for (int32_t slot : {45, -1, 64})  // a slot in the cache, none, one past its end: no KV write
        for (int bias_kind : {0, 1, 2}) {  // no bias (Llama), an f32 one, one of the weights' type (Qwen2)
          CAPTURE(dtype_name(t), h.nh, h.nkv, h.hd, slot, bias_kind);
          const int64_t k = 776, n = (h.nh + 2 * h.nkv) * h.hd;
          const shape_t cache{4, 16, h.nkv, h.hd};
          const auto x = round_to(random_floats(rng, k, -3, 3), t);
          const auto g = round_to(random_floats(rng, k, 0.5f, 1.5f), t);
          const auto w = round_to(random_floats(rng, n * k, -0.5f, 0.5f), t);
          const auto kv0 = round_to(random_floats(rng, cache.numel()), t);
          const auto bias = round_to(random_floats(rng, n, -1, 1), bias_kind == 2 ? t : dtype::f32);
          tensor db = bias_kind == 0 ? tensor{} : to_device(bias, {n}, bias_kind == 2 ? t : dtype::f32);
          tensor hb = bias_kind == 0 ? tensor{} : f32_tensor({n}, bias);
          std::vector<float> inv(static_cast<size_t>(h.hd / 2));
          for (size_t i = 0; i < inv.size(); ++i) inv[i] = std::pow(10000.0f, -2.0f * float(i) / float(h.hd));
          tensor dx = to_device(x, {1, k}, t), dg = to_device(g, {k}, t), dw = to_device(w, {n, k}, t);
          tensor dpos = to_device_i32({37}, {1}), dslot = to_device_i32({slot}, {1}), dinv = to_device(inv, {h.hd / 2}, dtype::f32);
          tensor ds({1, k}, t, backend_kind::cuda), dqkv({1, n}, t, backend_kind::cuda);
          // Fused, then the two ops, each into its own q and caches.
          tensor fq({1, h.nh, h.hd}, t, backend_kind::cuda), fk = to_device(kv0, cache, t), fv = to_device(kv0, cache, t);
          tensor sq({1, h.nh, h.hd}, t, backend_kind::cuda), sk = to_device(kv0, cache, t), sv = to_device(kv0, cache, t);
          poison(fq);
          kernels::norm_qkv_rope(cuda_ctx(), fq.view(), fk.view(), fv.view(), dx.view(), dg.view(), 1e-5f, dw.view(),
                                 db.view(), dpos.view(), dinv.view(), dslot.view(), ds.view(), dqkv.view());
          kernels::norm_matmul(cuda_ctx(), dqkv.view(), dx.view(), dg.view(), 1e-5f, dw.view(), db.view(), ds.view());
          kernels::rope_kv_write(cuda_ctx(), sq.view(), sk.view(), sv.view(), dqkv.view(), dpos.view(), dinv.view(),
                                 dslot.view());
          CHECK(to_host(fq) == to_host(sq));
          CHECK(to_host(fk) == to_host(sk));
          CHECK(to_host(fv) == to_host(sv));
          if (slot < 0 || slot >= 64) {  // untouched; the CPU reference rejects such a slot
            CHECK(to_host(fk) == round_to(kv0, t));
            continue;
          }
          // The CPU: rmsnorm, matmul and rope_kv_write in f32.
          tensor hx = f32_tensor({1, k}, x), hg = f32_tensor({k}, g), hw = f32_tensor({n, k}, w);
          tensor hq({1, h.nh, h.hd}, dtype::f32, backend_kind::cpu), hk = f32_tensor(cache, kv0), hv = f32_tensor(cache, kv0);
          tensor hs({1, k}, dtype::f32, backend_kind::cpu), hqkv({1, n}, dtype::f32, backend_kind::cpu);
          tensor hpos = i32_tensor({1}, {37}), hslot = i32_tensor({1}, {slot}), hinv = f32_tensor({h.hd / 2}, inv);
          kernels::norm_qkv_rope(cpu_ctx(), hq.view(), hk.view(), hv.view(), hx.view(), hg.view(), 1e-5f, hw.view(),
                                 hb.view(), hpos.view(), hinv.view(), hslot.view(), hs.view(), hqkv.view());
          CHECK(max_rel_error(to_host(fq), values(hq), std::sqrt(double(k))) <= 2 * tolerance(t));
          CHECK(max_rel_error(to_host(fk), values(hk), std::sqrt(double(k))) <= 2 * tolerance(t));
          CHECK(max_rel_error(to_host(fv), values(hv), std::sqrt(double(k))) <= 2 * tolerance(t));
        }
}
#endif
