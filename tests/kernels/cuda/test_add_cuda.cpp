// The CUDA add_inplace against the CPU reference (needs a GPU; skipped without one).
#ifdef TROUPE_HAVE_CUDA_KERNELS
#include <catch2/catch.hpp>
#include <random>
#include <vector>

#include "cuda_test_util.h"
#include "kernels/kernel_test_util.h"
#include "kernels/add.h"

using namespace troupe;
using namespace troupe::test;

TEST_CASE("CUDA add_inplace matches the CPU at 1, 769 and 5125 elements in every float type",
          "[cuda]") {
  if (!cuda_device_or_skip()) return;
  std::mt19937 rng(11);
  for (dtype t : float_types())
    for (int64_t n : {1, 769, 5125}) {
      CAPTURE(dtype_name(t), n);
      const auto a = round_to(random_floats(rng, n), t), b = round_to(random_floats(rng, n), t);
      tensor ha = f32_tensor({n}, a), hb = f32_tensor({n}, b);
      kernels::add_inplace(cpu_ctx(), ha.view(), hb.view());
      tensor da = to_device(a, {n}, t), db = to_device(b, {n}, t);
      kernels::add_inplace(cuda_ctx(), da.view(), db.view());
      CHECK(max_rel_error(to_host(da), values(ha)) <= tolerance(t));
    }
}

TEST_CASE("CUDA add_inplace rejects mixed types and host tensors naming the tensor", "[cuda]") {
  if (!cuda_device_or_skip()) return;
  tensor a = to_device({1, 2}, {2}, dtype::f32), b = to_device({1, 2}, {2}, dtype::bf16);
  CHECK_THROWS_WITH(kernels::add_inplace(cuda_ctx(), a.view(), b.view()),
                    Catch::Contains("x is bf16 but acc is f32"));
  tensor h = f32_tensor({2}, {1, 2});
  CHECK_THROWS_WITH(kernels::add_inplace(cuda_ctx(), a.view(), h.view()),
                    Catch::Contains("x lives on cpu, not on cuda"));
}
#endif
