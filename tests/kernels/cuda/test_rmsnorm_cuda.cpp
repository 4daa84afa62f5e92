// The CUDA rmsnorm and add_rmsnorm against the CPU reference (needs a GPU; skipped without one).
#ifdef TROUPE_HAVE_CUDA_KERNELS
#include <catch2/catch.hpp>
#include <random>
#include <vector>

#include "cuda_test_util.h"
#include "kernels/kernel_test_util.h"
#include "kernels/rmsnorm.h"

using namespace troupe;
using namespace troupe::test;

TEST_CASE("CUDA rmsnorm matches the CPU at widths 1, 769 and 5125 with f32 and same-type weights",
          "[cuda]") {
  if (!cuda_device_or_skip()) return;
  std::mt19937 rng(14);
  for (dtype t : float_types())
    for (int64_t d : {1, 769, 5125})
      for (dtype wt : {dtype::f32, t}) {
        CAPTURE(dtype_name(t), d, dtype_name(wt));
        const int64_t m = 3;
        const auto x = round_to(random_floats(rng, m * d, -3, 3), t);
        const auto w = round_to(random_floats(rng, d, 0.5f, 1.5f), wt);
        tensor hx = f32_tensor({m, d}, x), hw = f32_tensor({d}, w), ho({m, d}, dtype::f32, backend_kind::cpu);
        kernels::rmsnorm(cpu_ctx(), ho.view(), hx.view(), hw.view(), 1e-5f);
        tensor dx = to_device(x, {m, d}, t), dw = to_device(w, {d}, wt), d_out({m, d}, t, backend_kind::cuda);
        kernels::rmsnorm(cuda_ctx(), d_out.view(), dx.view(), dw.view(), 1e-5f);
        CHECK(max_rel_error(to_host(d_out), values(ho)) <= tolerance(t));
      }
}

TEST_CASE("CUDA add_rmsnorm updates the residual and normalizes it as the CPU does", "[cuda]") {
  if (!cuda_device_or_skip()) return;
  std::mt19937 rng(15);
  for (dtype t : float_types())
    for (int64_t d : {1, 769, 5125}) {
      CAPTURE(dtype_name(t), d);
      const int64_t m = 2;
      const auto res = round_to(random_floats(rng, m * d, -3, 3), t);
      const auto x = round_to(random_floats(rng, m * d, -3, 3), t);
      const auto w = random_floats(rng, d, 0.5f, 1.5f);
      tensor hr = f32_tensor({m, d}, res), hx = f32_tensor({m, d}, x), hw = f32_tensor({d}, w);
      tensor ho({m, d}, dtype::f32, backend_kind::cpu);
      kernels::add_rmsnorm(cpu_ctx(), ho.view(), hr.view(), hx.view(), hw.view(), 1e-6f);
      tensor dr = to_device(res, {m, d}, t), dx = to_device(x, {m, d}, t), dw = to_device(w, {d}, dtype::f32);
      tensor d_out({m, d}, t, backend_kind::cuda);
      kernels::add_rmsnorm(cuda_ctx(), d_out.view(), dr.view(), dx.view(), dw.view(), 1e-6f);
      CHECK(max_rel_error(to_host(dr), values(hr)) <= tolerance(t));
      CHECK(max_rel_error(to_host(d_out), values(ho)) <= tolerance(t));
    }
}

TEST_CASE("CUDA rmsnorm rejects a weight of a third type naming it", "[cuda]") {
  if (!cuda_device_or_skip()) return;
  tensor dx = to_device({1, 2}, {1, 2}, dtype::bf16), dw = to_device({1, 1}, {2}, dtype::f16);
  tensor d_out({1, 2}, dtype::bf16, backend_kind::cuda);
  CHECK_THROWS_WITH(kernels::rmsnorm(cuda_ctx(), d_out.view(), dx.view(), dw.view(), 1e-5f),
                    Catch::Contains("rmsnorm: weight is f16, expected f32 or bf16"));
}
#endif
