// The CUDA row scatter against the CPU reference (needs a GPU; skipped without one).
#ifdef TROUPE_HAVE_CUDA_KERNELS
#include <catch2/catch.hpp>
#include <random>
#include <vector>

#include "cuda_test_util.h"
#include "kernels/kernel_test_util.h"
#include "kernels/scatter_rows.h"

using namespace troupe;
using namespace troupe::test;

TEST_CASE("CUDA scatter_rows writes the same rows as the CPU at widths 1, 769 and 5125", "[cuda]") {
  if (!cuda_device_or_skip()) return;
  std::mt19937 rng(21);
  const int64_t rows = 300;
  for (dtype t : float_types())
    for (int64_t d : {1, 769, 5125}) {
      CAPTURE(dtype_name(t), d);
      const auto table = round_to(random_floats(rng, rows * d), t);
      const std::vector<int32_t> index{0, 299, 5, 731 % rows, 1};
      const int64_t m = static_cast<int64_t>(index.size());
      const auto src = round_to(random_floats(rng, m * d), t);
      tensor ht = f32_tensor({rows, d}, table), hs = f32_tensor({m, d}, src), hi = i32_tensor({m}, index);
      kernels::scatter_rows(cpu_ctx(), ht.view(), hs.view(), hi.view());
      tensor dt = to_device(table, {rows, d}, t), ds = to_device(src, {m, d}, t), di = to_device_i32(index, {m});
      kernels::scatter_rows(cuda_ctx(), dt.view(), ds.view(), di.view());
      CHECK(max_rel_error(to_host(dt), values(ht)) == 0.0);
    }
}

TEST_CASE("CUDA scatter_rows skips a row whose index is outside the table", "[cuda]") {
  if (!cuda_device_or_skip()) return;
  tensor dt = to_device({1, 2, 3, 4}, {2, 2}, dtype::f32);
  tensor ds = to_device({9, 9, 7, 7}, {2, 2}, dtype::f32);
  tensor di = to_device_i32({5, 1}, {2});
  kernels::scatter_rows(cuda_ctx(), dt.view(), ds.view(), di.view());
  CHECK(to_host(dt) == std::vector<float>{1, 2, 7, 7});
}
#endif
