#include <catch2/catch.hpp>
#include <random>
#include <stdexcept>
#include <vector>

#include "kernel_test_util.h"
#include "kernels/embedding.h"

using namespace troupe;
using troupe::test::cpu_ctx;
using troupe::test::f32_tensor;
using troupe::test::i32_tensor;
using troupe::test::random_floats;
using troupe::test::values;

TEST_CASE("embedding copies the table row of each id, repeats included", "[kernels]") {
  std::mt19937 rng(17);
  const int64_t vocab = 769, d = 7;
  auto table = random_floats(rng, static_cast<size_t>(vocab * d));
  tensor tt = f32_tensor({vocab, d}, table);
  std::vector<int32_t> ids{768, 0, 5, 5, 300};
  tensor tid = i32_tensor({5}, ids);
  tensor out({5, d}, dtype::f32, backend_kind::cpu);
  kernels::embedding(cpu_ctx(2), out.view(), tt.view(), tid.view());
  std::vector<float> want;
  for (int32_t id : ids)
    want.insert(want.end(), table.begin() + id * d, table.begin() + (id + 1) * d);
  CHECK(values(out) == want);
}

TEST_CASE("embedding rejects an id outside the table, naming the id", "[kernels]") {
  tensor table({10, 4}, dtype::f32, backend_kind::cpu), out({2, 4}, dtype::f32, backend_kind::cpu);
  tensor too_big = i32_tensor({2}, {3, 10}), negative = i32_tensor({2}, {-1, 0});
  REQUIRE_THROWS_AS(kernels::embedding(cpu_ctx(), out.view(), table.view(), too_big.view()),
                    std::out_of_range);
  REQUIRE_THROWS_WITH(kernels::embedding(cpu_ctx(), out.view(), table.view(), too_big.view()),
                      Catch::Matchers::Contains("id 10"));
  REQUIRE_THROWS_WITH(kernels::embedding(cpu_ctx(), out.view(), table.view(), negative.view()),
                      Catch::Matchers::Contains("id -1"));
}

TEST_CASE("embedding rejects mismatched shapes and non-i32 ids", "[kernels]") {
  tensor table({10, 4}, dtype::f32, backend_kind::cpu), out({2, 5}, dtype::f32, backend_kind::cpu);
  tensor ids = i32_tensor({2}, {1, 2});
  tensor f32_ids({2}, dtype::f32, backend_kind::cpu),
      good_out({2, 4}, dtype::f32, backend_kind::cpu);
  REQUIRE_THROWS_WITH(kernels::embedding(cpu_ctx(), out.view(), table.view(), ids.view()),
                      Catch::Matchers::Contains("embedding") &&
                          Catch::Matchers::Contains("[2, 5]") &&
                          Catch::Matchers::Contains("[2, 4]"));
  REQUIRE_THROWS_WITH(kernels::embedding(cpu_ctx(), good_out.view(), table.view(), f32_ids.view()),
                      Catch::Matchers::Contains("ids is f32"));
}
