#include <catch2/catch.hpp>
#include <cmath>
#include <random>
#include <vector>

#include "kernel_test_util.h"
#include "kernels/rmsnorm.h"

using namespace troupe;
using troupe::test::cpu_ctx;
using troupe::test::f32_tensor;
using troupe::test::random_floats;
using troupe::test::values;

namespace {

/// Counts elements of out that differ from x / sqrt(mean(x²) + eps) * w (in double) by
/// more than 1e-5 relative to the row's scale (a handful of float roundings).
int64_t reference_mismatches(const std::vector<float>& out, const std::vector<float>& x,
                             const std::vector<float>& w, int64_t m, int64_t d, float eps) {
  int64_t bad = 0;
  for (int64_t r = 0; r < m; ++r) {
    double ss = 0.0;
    for (int64_t i = 0; i < d; ++i)
      ss += static_cast<double>(x[static_cast<size_t>(r * d + i)]) *
            x[static_cast<size_t>(r * d + i)];
    const double scale = 1.0 / std::sqrt(ss / static_cast<double>(d) + eps);
    for (int64_t i = 0; i < d; ++i) {
      const double want = x[static_cast<size_t>(r * d + i)] * scale * w[static_cast<size_t>(i)];
      if (std::abs(out[static_cast<size_t>(r * d + i)] - want) >
          1e-5 * (std::abs(want) + scale * 1e-3))
        ++bad;
    }
  }
  return bad;
}

}  // namespace

TEST_CASE("rmsnorm matches a double-precision reference for rows of 1, 769 and 5125", "[kernels]") {
  std::mt19937 rng(3);
  for (int64_t d : {1, 769, 5125}) {
    for (int threads : {1, 2}) {
      INFO("d=" << d << " threads=" << threads);
      const int64_t m = 3;
      auto x = random_floats(rng, static_cast<size_t>(m * d), -3.0f, 3.0f);
      auto w = random_floats(rng, static_cast<size_t>(d), 0.5f, 1.5f);
      tensor tx = f32_tensor({m, d}, x), tw = f32_tensor({d}, w);
      tensor out({m, d}, dtype::f32, backend_kind::cpu);
      kernels::rmsnorm(cpu_ctx(threads), out.view(), tx.view(), tw.view(), 1e-5f);
      CHECK(reference_mismatches(values(out), x, w, m, d, 1e-5f) == 0);
    }
  }
}

TEST_CASE("rmsnorm of a zero row is zero, kept finite by eps", "[kernels]") {
  tensor x = f32_tensor({1, 4}, {0, 0, 0, 0}), w = f32_tensor({4}, {1, 2, 3, 4});
  tensor out({1, 4}, dtype::f32, backend_kind::cpu);
  kernels::rmsnorm(cpu_ctx(), out.view(), x.view(), w.view(), 1e-6f);
  CHECK(values(out) == std::vector<float>{0, 0, 0, 0});
}

TEST_CASE("add_rmsnorm adds into the residual and normalizes the sum", "[kernels]") {
  std::mt19937 rng(5);
  const int64_t m = 4, d = 769;
  auto res = random_floats(rng, static_cast<size_t>(m * d)),
       x = random_floats(rng, static_cast<size_t>(m * d));
  auto w = random_floats(rng, static_cast<size_t>(d));
  tensor tres = f32_tensor({m, d}, res), tx = f32_tensor({m, d}, x), tw = f32_tensor({d}, w);
  tensor out({m, d}, dtype::f32, backend_kind::cpu);
  kernels::add_rmsnorm(cpu_ctx(2), out.view(), tres.view(), tx.view(), tw.view(), 1e-5f);
  std::vector<float> sum(res.size());
  for (size_t i = 0; i < sum.size(); ++i) sum[i] = res[i] + x[i];
  CHECK(values(tres) == sum);
  CHECK(reference_mismatches(values(out), sum, w, m, d, 1e-5f) == 0);
}

TEST_CASE("rmsnorm and add_rmsnorm reject mismatched shapes, naming the op and the shapes",
          "[kernels]") {
  tensor x({2, 8}, dtype::f32, backend_kind::cpu), out({2, 8}, dtype::f32, backend_kind::cpu);
  tensor w_bad({7}, dtype::f32, backend_kind::cpu), w({8}, dtype::f32, backend_kind::cpu);
  tensor out_bad({2, 9}, dtype::f32, backend_kind::cpu),
      x_bad({3, 8}, dtype::f32, backend_kind::cpu);
  using Catch::Matchers::Contains;
  REQUIRE_THROWS_AS(kernels::rmsnorm(cpu_ctx(), out.view(), x.view(), w_bad.view(), 1e-5f),
                    std::invalid_argument);
  REQUIRE_THROWS_WITH(kernels::rmsnorm(cpu_ctx(), out.view(), x.view(), w_bad.view(), 1e-5f),
                      Contains("rmsnorm") && Contains("[7]") && Contains("[8]"));
  REQUIRE_THROWS_WITH(kernels::rmsnorm(cpu_ctx(), out_bad.view(), x.view(), w.view(), 1e-5f),
                      Contains("rmsnorm") && Contains("[2, 9]"));
  REQUIRE_THROWS_WITH(
      kernels::add_rmsnorm(cpu_ctx(), out.view(), x.view(), x_bad.view(), w.view(), 1e-5f),
      Contains("add_rmsnorm") && Contains("[3, 8]") && Contains("[2, 8]"));
}
