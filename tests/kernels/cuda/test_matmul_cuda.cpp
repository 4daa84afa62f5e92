// The CUDA (cuBLASLt) matmul against the CPU reference (needs a GPU; skipped without one).
#ifdef TROUPE_HAVE_CUDA_KERNELS
#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdlib>
#include <cmath>
#include <random>
#include <vector>

#include "cuda_test_util.h"
#include "kernels/kernel_test_util.h"
#include "kernels/matmul.h"

using namespace troupe;
using namespace troupe::test;

namespace {

/// One GEMM shape of the test.
struct gemm_shape {
  int64_t m, k, n;
};

/// Runs x[m, k] · w[n, k]ᵀ (+ bias) on both backends; out_type f32 or t. Returns the error.
double gemm_error(std::mt19937& rng, gemm_shape s, dtype t, dtype out_type, bool with_bias, bool tune = false) {
  const auto x = round_to(random_floats(rng, s.m * s.k), t);
  const auto w = round_to(random_floats(rng, s.n * s.k), t);
  const auto b = round_to(random_floats(rng, s.n), out_type);
  tensor hx = f32_tensor({s.m, s.k}, x), hw = f32_tensor({s.n, s.k}, w), hb = f32_tensor({s.n}, b);
  tensor ho({s.m, s.n}, dtype::f32, backend_kind::cpu);
  kernels::matmul(cpu_ctx(), ho.view(), hx.view(), hw.view(), with_bias ? hb.view() : tensor_view{});
  tensor dx = to_device(x, {s.m, s.k}, t), dw = to_device(w, {s.n, s.k}, t);
  tensor db = to_device(b, {s.n}, out_type), d_out({s.m, s.n}, out_type, backend_kind::cuda);
  auto ctx = cuda_ctx();
  ctx.tune_gemms = tune;
  kernels::matmul(ctx, d_out.view(), dx.view(), dw.view(), with_bias ? db.view() : tensor_view{});
  return max_rel_error(to_host(d_out), values(ho), std::max(1.0, std::sqrt(double(s.k)) / 3));
}

}  // namespace

TEST_CASE("CUDA matmul matches the CPU at awkward sizes in every float type, with and without bias",
          "[cuda]") {
  if (!cuda_device_or_skip()) return;
  std::mt19937 rng(17);
  for (dtype t : float_types())
    for (gemm_shape s : {gemm_shape{1, 769, 5125}, gemm_shape{769, 5125, 1}, gemm_shape{5, 64, 769},
                         gemm_shape{33, 1, 7}, gemm_shape{128, 576, 1536}})
      for (bool bias : {false, true}) {
        CAPTURE(dtype_name(t), s.m, s.k, s.n, bias);
        CHECK(gemm_error(rng, s, t, t, bias) <= tolerance(t));
      }
}

TEST_CASE("CUDA matmul at decode row counts times cuBLASLt's candidates once when asked (opt-in), only where the "
          "step asks, and still matches the CPU",
          "[cuda]") {
  if (!cuda_device_or_skip()) return;
  setenv("TROUPE_GEMM_TUNE", "1", 1);  // opt-in (gemm_tune.cuh)
  std::mt19937 rng(23);
  for (dtype t : float_types())
    for (gemm_shape s : {gemm_shape{48, 1032, 776}, gemm_shape{64, 512, 5128}, gemm_shape{256, 264, 1032}}) {
      CAPTURE(dtype_name(t), s.m, s.k, s.n);
      const size_t before = kernels::cuda::tuned_plans();
      CHECK(gemm_error(rng, s, t, t, false, true) <= tolerance(t));
      CHECK(kernels::cuda::tuned_plans() == before + 1);  // a new shape: timed once
      CHECK(gemm_error(rng, s, t, t, true, true) <= tolerance(t));
      CHECK(kernels::cuda::tuned_plans() == before + 1);  // the same shape: the plan is kept
    }
  // A prefill or mixed step (tune_gemms unset) at a decode row count takes the heuristic's
  // first; the shape's first decode step (tune_gemms set) times it then, once.
  for (dtype t : float_types()) {
    CAPTURE(dtype_name(t));
    const gemm_shape s{128, 520, 1544};
    const size_t before = kernels::cuda::tuned_plans();
    CHECK(gemm_error(rng, s, t, t, false, false) <= tolerance(t));
    CHECK(kernels::cuda::tuned_plans() == before);
    CHECK(gemm_error(rng, s, t, t, false, true) <= tolerance(t));
    CHECK(kernels::cuda::tuned_plans() == before + 1);
    CHECK(gemm_error(rng, s, t, t, false, true) <= tolerance(t));
    CHECK(kernels::cuda::tuned_plans() == before + 1);
  }
  // Off by default: a new decode shape's first step with the variable unset times nothing.
  unsetenv("TROUPE_GEMM_TUNE");
  const size_t before = kernels::cuda::tuned_plans();
  CHECK(gemm_error(rng, gemm_shape{96, 264, 776}, dtype::bf16, dtype::bf16, false, true) <= tolerance(dtype::bf16));
  CHECK(kernels::cuda::tuned_plans() == before);
}

TEST_CASE("CUDA matmul takes the algorithm of the next plan row count, so a row count met after it costs no "
          "heuristic query, and still matches the CPU",
          "[cuda]") {
  if (!cuda_device_or_skip()) return;
  std::mt19937 rng(29);
  for (dtype t : float_types()) {
    CAPTURE(dtype_name(t));
    const int64_t k = 264, n = 200 + 8 * static_cast<int64_t>(t);  // a shape no other case uses
    const size_t q0 = kernels::cuda::heuristic_queries();
    CHECK(gemm_error(rng, {104, k, n}, t, t, false) <= tolerance(t));
    CHECK(kernels::cuda::heuristic_queries() == q0 + 1);  // 104 is a plan row count: its own query
    for (int64_t m : {97, 101, 103}) {
      CAPTURE(m);
      CHECK(gemm_error(rng, {m, k, n}, t, t, true) <= tolerance(t));
      CHECK(kernels::cuda::heuristic_queries() == q0 + 1);  // 104's algorithm, checked for m
    }
    CHECK(gemm_error(rng, {105, k, n}, t, t, false) <= tolerance(t));
    CHECK(kernels::cuda::heuristic_queries() == q0 + 2);  // 105 takes 112's: a new query
  }
}

TEST_CASE("CUDA skinny GEMV (decode rows) matches the CPU at awkward sizes, both paths compared", "[cuda]") {
  if (!cuda_device_or_skip()) return;
  std::mt19937 rng(23);
  for (dtype t : {dtype::bf16, dtype::f16})
    for (int64_t m : {1, 2, 3, 5, 8})
      for (int64_t n : {1, 769, 5125})
        for (int64_t k : {8, 776, 4104})
          for (dtype ot : {t, dtype::f32})
            for (bool bias : {false, true}) {
              if (bias && ot == dtype::f32 && m == 3) continue;  // keeps the case short
              if (n * k > 4000000 && m != 1 && m != 8) continue;
              CAPTURE(dtype_name(t), dtype_name(ot), m, n, k, bias);
              const auto x = round_to(random_floats(rng, m * k), t);
              const auto w = round_to(random_floats(rng, n * k), t);
              const auto b = round_to(random_floats(rng, n), ot);
              tensor hx = f32_tensor({m, k}, x), hw = f32_tensor({n, k}, w), hb = f32_tensor({n}, b);
              tensor ho({m, n}, dtype::f32, backend_kind::cpu);
              kernels::matmul(cpu_ctx(), ho.view(), hx.view(), hw.view(), bias ? hb.view() : tensor_view{});
              tensor dx = to_device(x, {m, k}, t), dw = to_device(w, {n, k}, t), db = to_device(b, {n}, ot);
              tensor d_gemv({m, n}, ot, backend_kind::cuda);
              // Poisoned output: every element must be written.
              cuda_ok(cudaMemset(d_gemv.view().data, 0xff, d_gemv.bytes()), "poison");
              REQUIRE(kernels::cuda::gemv(cuda_ctx(), d_gemv.view(), dx.view(), dw.view(),
                                          bias ? db.view() : tensor_view{}));
              const double floor = std::max(1.0, std::sqrt(double(k)) / 3);
              const double tol = ot == dtype::f32 ? 1e-5 : tolerance(t);
              CHECK(max_rel_error(to_host(d_gemv), values(ho), floor) <= tol);
              // The dispatching matmul (GEMV or cuBLASLt) agrees too.
              tensor d_out({m, n}, ot, backend_kind::cuda);
              kernels::matmul(cuda_ctx(), d_out.view(), dx.view(), dw.view(), bias ? db.view() : tensor_view{});
              CHECK(max_rel_error(to_host(d_out), values(ho), floor) <= tol);
            }
}

TEST_CASE("CUDA skinny GEMV: a row's result does not depend on the other rows", "[cuda]") {
  if (!cuda_device_or_skip()) return;
  std::mt19937 rng(24);
  const int64_t k = 4096, n = 777;
  const auto x = round_to(random_floats(rng, 8 * k), dtype::bf16);
  const auto w = round_to(random_floats(rng, n * k), dtype::bf16);
  tensor dw = to_device(w, {n, k}, dtype::bf16);
  std::vector<float> first;
  for (int64_t m : {1, 2, 4, 7, 8}) {
    tensor dx = to_device(std::vector<float>(x.begin(), x.begin() + m * k), {m, k}, dtype::bf16);
    tensor d_out({m, n}, dtype::f32, backend_kind::cuda);
    REQUIRE(kernels::cuda::gemv(cuda_ctx(), d_out.view(), dx.view(), dw.view(), tensor_view{}));
    const auto got = to_host(d_out);
    const std::vector<float> row0(got.begin(), got.begin() + n);
    if (first.empty()) first = row0;
    CAPTURE(m);
    CHECK(row0 == first);
  }
}

TEST_CASE("CUDA skinny GEMV: every tiling matches the CPU and pinning one keeps matmul equal to it", "[cuda]") {
  // Variants 3 to 7 exist at one row only (other row counts take the default tiling).
  if (!cuda_device_or_skip()) return;
  std::mt19937 rng(29);
  for (int64_t m : {1, 8})
    for (int64_t n : {1, 769, 5125})
      for (int64_t k : {8, 776, 4104, 8200}) {
        if (m == 8 && (n == 5125 || k == 8200)) continue;  // keeps the case short
        const auto x = round_to(random_floats(rng, m * k), dtype::bf16);
        const auto w = round_to(random_floats(rng, n * k), dtype::bf16);
        tensor hx = f32_tensor({m, k}, x), hw = f32_tensor({n, k}, w), ho({m, n}, dtype::f32, backend_kind::cpu);
        kernels::matmul(cpu_ctx(), ho.view(), hx.view(), hw.view(), {});
        tensor dx = to_device(x, {m, k}, dtype::bf16), dw = to_device(w, {n, k}, dtype::bf16);
        const double floor = std::max(1.0, std::sqrt(double(k)) / 3);
        std::vector<float> first;
        for (int variant = 0; variant < 8; ++variant) {
          CAPTURE(m, n, k, variant);
          tensor d_gemv({m, n}, dtype::f32, backend_kind::cuda);
          cuda_ok(cudaMemset(d_gemv.view().data, 0xff, d_gemv.bytes()), "poison");
          REQUIRE(kernels::cuda::gemv(cuda_ctx(), d_gemv.view(), dx.view(), dw.view(), tensor_view{}, variant));
          const auto got = to_host(d_gemv);
          CHECK(max_rel_error(got, values(ho), floor) <= 1e-5);
          // Pinned for this k, the dispatching matmul runs the same tiling: the same bits.
          kernels::cuda::set_gemv_variants(variant, variant);
          tensor d_out({m, n}, dtype::f32, backend_kind::cuda);
          kernels::matmul(cuda_ctx(), d_out.view(), dx.view(), dw.view(), tensor_view{});
          kernels::cuda::set_gemv_variants(-1, -1);
          if (m == 1) CHECK(to_host(d_out) == got);
          // Tilings with one row a warp and with R rows sum a row in the same lane order.
          if (first.empty()) first = got;
          CHECK(got == first);
        }
      }
}

TEST_CASE("CUDA skinny GEMV declines what it cannot do (f32, 9 rows, k not a multiple of 8)", "[cuda]") {
  if (!cuda_device_or_skip()) return;
  tensor x32({1, 16}, dtype::f32, backend_kind::cuda), w32({4, 16}, dtype::f32, backend_kind::cuda);
  tensor o32({1, 4}, dtype::f32, backend_kind::cuda);
  CHECK_FALSE(kernels::cuda::gemv(cuda_ctx(), o32.view(), x32.view(), w32.view(), tensor_view{}));
  tensor x9({9, 16}, dtype::bf16, backend_kind::cuda), w({4, 16}, dtype::bf16, backend_kind::cuda);
  tensor o9({9, 4}, dtype::bf16, backend_kind::cuda);
  CHECK_FALSE(kernels::cuda::gemv(cuda_ctx(), o9.view(), x9.view(), w.view(), tensor_view{}));
  tensor xk({1, 12}, dtype::bf16, backend_kind::cuda), wk({4, 12}, dtype::bf16, backend_kind::cuda);
  tensor ok({1, 4}, dtype::bf16, backend_kind::cuda);
  CHECK_FALSE(kernels::cuda::gemv(cuda_ctx(), ok.view(), xk.view(), wk.view(), tensor_view{}));
}

TEST_CASE("CUDA matmul writes f32 output from bf16 and f16 inputs", "[cuda]") {
  if (!cuda_device_or_skip()) return;
  std::mt19937 rng(18);
  for (dtype t : {dtype::f16, dtype::bf16}) {
    CAPTURE(dtype_name(t));
    CHECK(gemm_error(rng, {7, 769, 49}, t, dtype::f32, true) <= 1e-5);
  }
}

TEST_CASE("CUDA matmul with k = 0 writes the bias alone", "[cuda]") {
  if (!cuda_device_or_skip()) return;
  tensor dx({2, 0}, dtype::f32, backend_kind::cuda), dw({3, 0}, dtype::f32, backend_kind::cuda);
  tensor db = to_device({1, 2, 3}, {3}, dtype::f32), d_out({2, 3}, dtype::f32, backend_kind::cuda);
  kernels::matmul(cuda_ctx(), d_out.view(), dx.view(), dw.view(), db.view());
  CHECK(to_host(d_out) == std::vector<float>{1, 2, 3, 1, 2, 3});
}

TEST_CASE("CUDA matmul rejects x and w of different types naming both", "[cuda]") {
  if (!cuda_device_or_skip()) return;
  tensor dx = to_device({1, 2}, {1, 2}, dtype::bf16), dw = to_device({1, 2}, {1, 2}, dtype::f16);
  tensor d_out({1, 1}, dtype::bf16, backend_kind::cuda);
  CHECK_THROWS_WITH(kernels::matmul(cuda_ctx(), d_out.view(), dx.view(), dw.view(), tensor_view{}),
                    Catch::Contains("matmul: w is f16 but x is bf16"));
}
#endif
