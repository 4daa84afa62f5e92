// The CUDA embedding gather against the CPU reference (needs a GPU; skipped without one).
#ifdef TROUPE_HAVE_CUDA_KERNELS
#include <catch2/catch.hpp>
#include <random>
#include <vector>

#include "cuda_test_util.h"
#include "kernels/kernel_test_util.h"
#include "kernels/embedding.h"

using namespace troupe;
using namespace troupe::test;

TEST_CASE("CUDA embedding gathers the same rows as the CPU at widths 1, 769 and 5125",
          "[cuda]") {
  if (!cuda_device_or_skip()) return;
  std::mt19937 rng(13);
  const int64_t rows = 1000;
  for (dtype t : float_types())
    for (int64_t d : {1, 769, 5125}) {
      CAPTURE(dtype_name(t), d);
      const auto table = round_to(random_floats(rng, rows * d), t);
      const std::vector<int32_t> ids{0, 999, 5, 5, 731, 1, 998};
      const int64_t m = static_cast<int64_t>(ids.size());
      tensor ht = f32_tensor({rows, d}, table), hi = i32_tensor({m}, ids), ho({m, d}, dtype::f32, backend_kind::cpu);
      kernels::embedding(cpu_ctx(), ho.view(), ht.view(), hi.view());
      tensor dt = to_device(table, {rows, d}, t), di = to_device_i32(ids, {m}), d_out({m, d}, t, backend_kind::cuda);
      kernels::embedding(cuda_ctx(), d_out.view(), dt.view(), di.view());
      CHECK(max_rel_error(to_host(d_out), values(ho)) == 0.0);
    }
}

TEST_CASE("CUDA embedding writes zeros for an id outside the table instead of reading past it",
          "[cuda]") {
  if (!cuda_device_or_skip()) return;
  tensor dt = to_device({1, 2, 3, 4}, {2, 2}, dtype::f32);
  tensor di = to_device_i32({1, 7, -1}, {3});
  tensor d_out({3, 2}, dtype::f32, backend_kind::cuda);
  kernels::embedding(cuda_ctx(), d_out.view(), dt.view(), di.view());
  CHECK(to_host(d_out) == std::vector<float>{3, 4, 0, 0, 0, 0});
}
#endif
