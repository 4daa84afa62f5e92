#include <catch2/catch.hpp>
#include <random>
#include <vector>

#include "kernel_test_util.h"
#include "kernels/silu_mul.h"
#include "kernels/swiglu.h"

using namespace troupe;
using troupe::test::cpu_ctx;
using troupe::test::f32_tensor;
using troupe::test::random_floats;
using troupe::test::values;

TEST_CASE("swiglu over the fused gate/up rows equals silu_mul over the separate halves", "[kernels]") {
  std::mt19937 rng(31);
  for (int64_t f : {1, 769, 5125})
    for (int64_t m : {1, 3}) {
      CAPTURE(f, m);
      const auto g = random_floats(rng, static_cast<size_t>(m * f), -8.0f, 8.0f);
      const auto u = random_floats(rng, static_cast<size_t>(m * f), -2.0f, 2.0f);
      std::vector<float> gu;
      for (int64_t r = 0; r < m; ++r) {
        gu.insert(gu.end(), g.begin() + r * f, g.begin() + (r + 1) * f);
        gu.insert(gu.end(), u.begin() + r * f, u.begin() + (r + 1) * f);
      }
      tensor tg = f32_tensor({m, f}, g), tu = f32_tensor({m, f}, u), tgu = f32_tensor({m, 2 * f}, gu);
      tensor want({m, f}, dtype::f32, backend_kind::cpu), got({m, f}, dtype::f32, backend_kind::cpu);
      kernels::silu_mul(cpu_ctx(), want.view(), tg.view(), tu.view());
      kernels::swiglu(cpu_ctx(2), got.view(), tgu.view());
      CHECK(values(got) == values(want));
    }
}

TEST_CASE("swiglu rejects an odd row length and a mismatched output", "[kernels]") {
  tensor gu({2, 5}, dtype::f32, backend_kind::cpu), out({2, 2}, dtype::f32, backend_kind::cpu);
  CHECK_THROWS_WITH(kernels::swiglu(cpu_ctx(), out.view(), gu.view()), Catch::Contains("swiglu"));
  tensor gu6({2, 6}, dtype::f32, backend_kind::cpu);
  CHECK_THROWS_WITH(kernels::swiglu(cpu_ctx(), out.view(), gu6.view()), Catch::Contains("out"));
}
