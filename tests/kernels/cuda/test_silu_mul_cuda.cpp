// The CUDA silu_mul against the CPU reference (needs a GPU; skipped without one).
#ifdef TROUPE_HAVE_CUDA_KERNELS
#include <catch2/catch.hpp>
#include <random>
#include <vector>

#include "cuda_test_util.h"
#include "kernels/kernel_test_util.h"
#include "kernels/silu_mul.h"

using namespace troupe;
using namespace troupe::test;

TEST_CASE("CUDA silu_mul matches the CPU at 1, 769 and 5125 features in every float type",
          "[cuda]") {
  if (!cuda_device_or_skip()) return;
  std::mt19937 rng(12);
  for (dtype t : float_types())
    for (int64_t f : {1, 769, 5125}) {
      CAPTURE(dtype_name(t), f);
      const int64_t m = 3;
      const auto g = round_to(random_floats(rng, m * f, -8, 8), t);
      const auto u = round_to(random_floats(rng, m * f, -2, 2), t);
      tensor hg = f32_tensor({m, f}, g), hu = f32_tensor({m, f}, u), ho({m, f}, dtype::f32, backend_kind::cpu);
      kernels::silu_mul(cpu_ctx(), ho.view(), hg.view(), hu.view());
      tensor dg = to_device(g, {m, f}, t), du = to_device(u, {m, f}, t), d_out({m, f}, t, backend_kind::cuda);
      kernels::silu_mul(cuda_ctx(), d_out.view(), dg.view(), du.view());
      CHECK(max_rel_error(to_host(d_out), values(ho)) <= tolerance(t));
      // in place over gate, as the model forward calls it
      kernels::silu_mul(cuda_ctx(), dg.view(), dg.view(), du.view());
      CHECK(max_rel_error(to_host(dg), values(ho)) <= tolerance(t));
    }
}
#endif
