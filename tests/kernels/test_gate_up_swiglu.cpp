#include <catch2/catch.hpp>
#include <cmath>
#include <random>
#include <vector>

#include "kernel_test_util.h"
#include "kernels/gate_up_swiglu.h"

using namespace troupe;
using troupe::test::cpu_ctx;
using troupe::test::f32_tensor;
using troupe::test::random_floats;
using troupe::test::values;

TEST_CASE("gate_up_swiglu gives silu of the gate row's product times the up row's product", "[kernels]") {
  // x = [1, 2]; gate rows (1, 0) and (0, 1); up rows (1, 1) and (2, 0).
  tensor x = f32_tensor({1, 2}, {1.0f, 2.0f});
  tensor w = f32_tensor({4, 2}, {1.0f, 0.0f, 0.0f, 1.0f, 1.0f, 1.0f, 2.0f, 0.0f});
  tensor scratch({1, 4}, dtype::f32, backend_kind::cpu), out({1, 2}, dtype::f32, backend_kind::cpu);
  kernels::gate_up_swiglu(cpu_ctx(), out.view(), x.view(), w.view(), scratch.view());
  auto silu = [](float g) { return g / (1.0f + std::exp(-g)); };
  const auto got = values(out);
  CHECK(got[0] == Approx(silu(1.0f) * 3.0f).epsilon(1e-6));
  CHECK(got[1] == Approx(silu(2.0f) * 2.0f).epsilon(1e-6));
}

TEST_CASE("gate_up_swiglu rejects a mismatched output", "[kernels]") {
  std::mt19937 rng(5);
  tensor x = f32_tensor({2, 8}, random_floats(rng, 16)), w = f32_tensor({6, 8}, random_floats(rng, 48));
  tensor scratch({2, 6}, dtype::f32, backend_kind::cpu), out({2, 4}, dtype::f32, backend_kind::cpu);
  CHECK_THROWS_WITH(kernels::gate_up_swiglu(cpu_ctx(), out.view(), x.view(), w.view(), scratch.view()),
                    Catch::Contains("out"));
}
