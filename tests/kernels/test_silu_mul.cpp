#include <catch2/catch.hpp>
#include <cmath>
#include <random>
#include <vector>

#include "kernel_test_util.h"
#include "kernels/add.h"
#include "kernels/silu_mul.h"

using namespace troupe;
using troupe::test::cpu_ctx;
using troupe::test::f32_tensor;
using troupe::test::random_floats;
using troupe::test::values;

TEST_CASE("silu_mul matches silu(gate) * up computed in double", "[kernels]") {
  std::mt19937 rng(9);
  for (int64_t f : {1, 7, 769, 5125}) {
    INFO("f=" << f);
    const int64_t m = 3;
    auto g = random_floats(rng, static_cast<size_t>(m * f), -8.0f, 8.0f);
    auto u = random_floats(rng, static_cast<size_t>(m * f), -2.0f, 2.0f);
    tensor tg = f32_tensor({m, f}, g), tu = f32_tensor({m, f}, u);
    tensor out({m, f}, dtype::f32, backend_kind::cpu);
    kernels::silu_mul(cpu_ctx(2), out.view(), tg.view(), tu.view());
    auto got = values(out);
    int64_t bad = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      const double want = g[i] / (1.0 + std::exp(-static_cast<double>(g[i]))) * u[i];
      if (std::abs(got[i] - want) > 1e-6 * (std::abs(want) + 1e-3)) ++bad;
    }
    CHECK(bad == 0);
  }
}

TEST_CASE("silu_mul may write its result over the gate", "[kernels]") {
  tensor g = f32_tensor({1, 3}, {0.0f, 1.0f, -1.0f}), u = f32_tensor({1, 3}, {5.0f, 2.0f, 2.0f});
  tensor expect({1, 3}, dtype::f32, backend_kind::cpu);
  kernels::silu_mul(cpu_ctx(), expect.view(), g.view(), u.view());
  kernels::silu_mul(cpu_ctx(), g.view(), g.view(), u.view());
  CHECK(values(g) == values(expect));
  CHECK(values(g)[0] == 0.0f);
  CHECK(values(g)[1] == Approx(2.0 / (1.0 + std::exp(-1.0))).epsilon(1e-6));
}

TEST_CASE("silu_mul rejects mismatched shapes, naming the op and the shapes", "[kernels]") {
  tensor g({2, 5}, dtype::f32, backend_kind::cpu), u({2, 6}, dtype::f32, backend_kind::cpu);
  REQUIRE_THROWS_AS(kernels::silu_mul(cpu_ctx(), g.view(), g.view(), u.view()),
                    std::invalid_argument);
  REQUIRE_THROWS_WITH(kernels::silu_mul(cpu_ctx(), g.view(), g.view(), u.view()),
                      Catch::Matchers::Contains("silu_mul") &&
                          Catch::Matchers::Contains("[2, 6]") &&
                          Catch::Matchers::Contains("[2, 5]"));
}

TEST_CASE("add_inplace adds element-wise exactly and rejects a shape mismatch", "[kernels]") {
  std::mt19937 rng(13);
  auto a = random_floats(rng, 5125), b = random_floats(rng, 5125);
  tensor ta = f32_tensor({5, 1025}, a), tb = f32_tensor({5, 1025}, b);
  kernels::add_inplace(cpu_ctx(2), ta.view(), tb.view());
  std::vector<float> want(a.size());
  for (size_t i = 0; i < a.size(); ++i) want[i] = a[i] + b[i];
  CHECK(values(ta) == want);
  tensor bad({1025, 5}, dtype::f32, backend_kind::cpu);
  REQUIRE_THROWS_WITH(
      kernels::add_inplace(cpu_ctx(), ta.view(), bad.view()),
      Catch::Matchers::Contains("add_inplace") && Catch::Matchers::Contains("[1025, 5]"));
}
