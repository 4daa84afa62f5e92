#include <catch2/catch.hpp>
#include <random>
#include <stdexcept>
#include <vector>

#include "kernel_test_util.h"
#include "kernels/embedding.h"
#include "kernels/scatter_rows.h"

using namespace troupe;
using troupe::test::cpu_ctx;
using troupe::test::f32_tensor;
using troupe::test::i32_tensor;
using troupe::test::random_floats;
using troupe::test::values;

TEST_CASE("scatter_rows writes each source row into its table row and leaves the others", "[kernels]") {
  std::mt19937 rng(5);
  const int64_t rows = 769, d = 5;
  auto table = random_floats(rng, static_cast<size_t>(rows * d));
  auto src = random_floats(rng, static_cast<size_t>(3 * d));
  tensor tt = f32_tensor({rows, d}, table), ts = f32_tensor({3, d}, src);
  const std::vector<int32_t> index{768, 0, 42};
  tensor ti = i32_tensor({3}, index);
  kernels::scatter_rows(cpu_ctx(2), tt.view(), ts.view(), ti.view());
  auto want = table;
  for (size_t r = 0; r < index.size(); ++r)
    std::copy_n(src.begin() + static_cast<ptrdiff_t>(r * d), d, want.begin() + index[r] * d);
  CHECK(values(tt) == want);
}

TEST_CASE("scatter_rows then the embedding gather at the same indices gives the source back", "[kernels]") {
  std::mt19937 rng(9);
  const int64_t rows = 64, d = 1;
  tensor table({rows, d}, dtype::f32, backend_kind::cpu);
  auto src = random_floats(rng, 4);
  tensor ts = f32_tensor({4, d}, src), ti = i32_tensor({4}, {7, 1, 63, 20}), back({4, d}, dtype::f32, backend_kind::cpu);
  kernels::scatter_rows(cpu_ctx(), table.view(), ts.view(), ti.view());
  kernels::embedding(cpu_ctx(), back.view(), table.view(), ti.view());
  CHECK(values(back) == src);
}

TEST_CASE("scatter_rows rejects an index outside the table and a source of the wrong width", "[kernels]") {
  tensor table({10, 4}, dtype::f32, backend_kind::cpu), src({2, 4}, dtype::f32, backend_kind::cpu),
      wide({2, 5}, dtype::f32, backend_kind::cpu);
  tensor too_big = i32_tensor({2}, {3, 10}), ok = i32_tensor({2}, {3, 4});
  REQUIRE_THROWS_AS(kernels::scatter_rows(cpu_ctx(), table.view(), src.view(), too_big.view()), std::out_of_range);
  REQUIRE_THROWS_WITH(kernels::scatter_rows(cpu_ctx(), table.view(), src.view(), too_big.view()),
                      Catch::Matchers::Contains("index 10"));
  REQUIRE_THROWS_WITH(kernels::scatter_rows(cpu_ctx(), table.view(), wide.view(), ok.view()),
                      Catch::Matchers::Contains("scatter_rows") && Catch::Matchers::Contains("[2, 4]"));
}
