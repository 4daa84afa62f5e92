#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "kernel_test_util.h"
#include "kernels/matmul.h"

using namespace troupe;
using troupe::test::cpu_ctx;
using troupe::test::f32_tensor;
using troupe::test::random_floats;

namespace {

/// Checks out against a double-precision reference. A float dot product of length k
/// accumulated in 8 lanes errs by at most about (k/8 + 3) * 2^-24 * sum|x_i w_i|, so
/// 1e-4 * sum|x_i w_i| is loose enough for k <= 5000 and still catches a wrong term.
void check_against_reference(const std::vector<float>& out, const std::vector<float>& x,
                             const std::vector<float>& w, const std::vector<float>& bias, int64_t m,
                             int64_t k, int64_t n) {
  int64_t bad = 0;
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double ref = bias.empty() ? 0.0 : bias[static_cast<size_t>(j)], mag = std::abs(ref);
      for (int64_t p = 0; p < k; ++p) {
        const double t = static_cast<double>(x[static_cast<size_t>(i * k + p)]) *
                         w[static_cast<size_t>(j * k + p)];
        ref += t;
        mag += std::abs(t);
      }
      if (std::abs(out[static_cast<size_t>(i * n + j)] - ref) > 1e-4 * mag + 1e-30) ++bad;
    }
  CHECK(bad == 0);
}

}  // namespace

TEST_CASE("matmul matches a double-precision reference at awkward sizes", "[kernels]") {
  std::mt19937 rng(7);
  struct dims {
    int64_t m, k, n;
  };
  for (dims d : {dims{1, 769, 5125}, dims{3, 769, 5125}, dims{7, 1, 7}, dims{5, 7, 1},
                 dims{4, 17, 33}, dims{10, 576, 192}}) {
    for (bool with_bias : {false, true}) {
      for (int threads : {1, 2}) {
        INFO("m=" << d.m << " k=" << d.k << " n=" << d.n << " bias=" << with_bias
                  << " threads=" << threads);
        auto x = random_floats(rng, static_cast<size_t>(d.m * d.k));
        auto w = random_floats(rng, static_cast<size_t>(d.n * d.k));
        auto b = with_bias ? random_floats(rng, static_cast<size_t>(d.n)) : std::vector<float>{};
        tensor tx = f32_tensor({d.m, d.k}, x), tw = f32_tensor({d.n, d.k}, w);
        tensor tb = with_bias ? f32_tensor({d.n}, b) : tensor{};
        tensor out({d.m, d.n}, dtype::f32, backend_kind::cpu);
        kernels::matmul(cpu_ctx(threads), out.view(), tx.view(), tw.view(), tb.view());
        check_against_reference(troupe::test::values(out), x, w, b, d.m, d.k, d.n);
      }
    }
  }
}

TEST_CASE("a matmul row is bitwise the same alone or inside any batch, on any thread count",
          "[kernels]") {
  std::mt19937 rng(11);
  const int64_t total = 70;
  struct dims {
    int64_t k, n;
  };
  for (dims d : {dims{576, 576}, dims{576, 192}, dims{1536, 576}, dims{769, 37}}) {
    auto x = random_floats(rng, static_cast<size_t>(total * d.k));
    tensor tx = f32_tensor({total, d.k}, x);
    tensor tw = f32_tensor({d.n, d.k}, random_floats(rng, static_cast<size_t>(d.n * d.k)));
    tensor tb = f32_tensor({d.n}, random_floats(rng, static_cast<size_t>(d.n)));
    tensor alone({total, d.n}, dtype::f32, backend_kind::cpu);
    for (int64_t i = 0; i < total; ++i)
      kernels::matmul(cpu_ctx(1), alone.view().rows(i, 1), tx.view().rows(i, 1), tw.view(),
                      tb.view());
    for (int64_t m : {2, 3, 7, 8, 9, 16, 64}) {
      for (int threads : {1, 2}) {
        INFO("k=" << d.k << " n=" << d.n << " m=" << m << " threads=" << threads);
        const int64_t off = total - m;  // different neighbours than any other m
        tensor out({m, d.n}, dtype::f32, backend_kind::cpu);
        kernels::matmul(cpu_ctx(threads), out.view(), tx.view().rows(off, m), tw.view(), tb.view());
        CHECK(std::memcmp(out.f32(), alone.f32() + off * d.n, static_cast<size_t>(m * d.n) * 4) ==
              0);
      }
    }
  }
}

TEST_CASE("matmul's plan row counts are every count up to 16, then 8 a doubling, each at most 1/8 above m",
          "[kernels]") {
  for (int64_t m = 1; m <= 16; ++m) CHECK(kernels::matmul_plan_rows(m) == m);
  CHECK(kernels::matmul_plan_rows(17) == 18);
  CHECK(kernels::matmul_plan_rows(97) == 104);
  CHECK(kernels::matmul_plan_rows(1025) == 1152);
  CHECK(kernels::matmul_plan_rows(8192) == 8192);
  for (int64_t r : {1, 2, 4, 8, 16, 32, 48, 64, 96, 128, 192, 256, 384, 512})  // the decode graphs' sizes
    CHECK(kernels::matmul_plan_rows(r) == r);
  int64_t distinct = 0, last = 0;
  for (int64_t m = 1; m <= 8192; ++m) {
    const int64_t r = kernels::matmul_plan_rows(m);
    CAPTURE(m, r);
    REQUIRE(r >= m);
    REQUIRE(8 * (r - m) < m);
    REQUIRE(kernels::matmul_plan_rows(r) == r);
    REQUIRE(r >= last);
    distinct += r != last;
    last = r;
  }
  CHECK(distinct == 16 + 8 * 9);  // 1-16, then (16, 8192]: nine doublings
}

TEST_CASE("matmul over an empty k gives the bias", "[kernels]") {
  tensor x({2, 0}, dtype::f32, backend_kind::cpu), w({3, 0}, dtype::f32, backend_kind::cpu);
  tensor b = f32_tensor({3}, {1.0f, -2.0f, 0.5f});
  tensor out = f32_tensor({2, 3}, {9, 9, 9, 9, 9, 9});
  kernels::matmul(cpu_ctx(), out.view(), x.view(), w.view(), b.view());
  CHECK(troupe::test::values(out) == std::vector<float>{1.0f, -2.0f, 0.5f, 1.0f, -2.0f, 0.5f});
}

TEST_CASE("matmul rejects mismatched shapes and types, naming the op and the shapes", "[kernels]") {
  tensor x({2, 4}, dtype::f32, backend_kind::cpu), w({3, 4}, dtype::f32, backend_kind::cpu);
  tensor w_bad({3, 5}, dtype::f32, backend_kind::cpu), out({2, 3}, dtype::f32, backend_kind::cpu);
  tensor out_bad({3, 2}, dtype::f32, backend_kind::cpu),
      bias_bad({4}, dtype::f32, backend_kind::cpu);
  tensor x_i32({2, 4}, dtype::i32, backend_kind::cpu);
  using Catch::Matchers::Contains;
  REQUIRE_THROWS_AS(kernels::matmul(cpu_ctx(), out.view(), x.view(), w_bad.view(), {}),
                    std::invalid_argument);
  REQUIRE_THROWS_WITH(kernels::matmul(cpu_ctx(), out.view(), x.view(), w_bad.view(), {}),
                      Contains("matmul") && Contains("[2, 4]") && Contains("[3, 5]"));
  REQUIRE_THROWS_WITH(kernels::matmul(cpu_ctx(), out_bad.view(), x.view(), w.view(), {}),
                      Contains("matmul") && Contains("[3, 2]") && Contains("[2, 3]"));
  REQUIRE_THROWS_WITH(kernels::matmul(cpu_ctx(), out.view(), x.view(), w.view(), bias_bad.view()),
                      Contains("matmul") && Contains("bias") && Contains("[4]"));
  REQUIRE_THROWS_WITH(kernels::matmul(cpu_ctx(), out.view(), x_i32.view(), w.view(), {}),
                      Contains("matmul") && Contains("i32"));
}

#ifndef TROUPE_HAVE_CUDA_KERNELS
TEST_CASE("an op sent to the cuda backend of a CPU-only build throws backend_unavailable",
          "[kernels]") {
  tensor x({1, 4}, dtype::f32, backend_kind::cpu), w({2, 4}, dtype::f32, backend_kind::cpu);
  tensor out({1, 2}, dtype::f32, backend_kind::cpu);
  kernels::op_context ctx;
  ctx.backend = backend_kind::cuda;
  REQUIRE_THROWS_AS(kernels::matmul(ctx, out.view(), x.view(), w.view(), {}),
                    kernels::backend_unavailable);
  REQUIRE_THROWS_WITH(kernels::matmul(ctx, out.view(), x.view(), w.view(), {}),
                      Catch::Matchers::Contains("matmul") && Catch::Matchers::Contains("no CUDA"));
}
#endif
