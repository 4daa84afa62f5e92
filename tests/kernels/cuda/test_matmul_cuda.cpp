// The CUDA (cuBLASLt) matmul against the CPU reference (needs a GPU; skipped without one).
#ifdef TROUPE_HAVE_CUDA_KERNELS
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <random>
#include <vector>

#include "cuda_test_util.h"
#include "kernels/kernel_test_util.h"
#include "kernels/matmul.h"

using namespace troupe;
using namespace troupe::test;

namespace {

/// One GEMM shape of the test.
struct gemm_shape {
  int64_t m, k, n;
};

/// Runs x[m, k] · w[n, k]ᵀ (+ bias) on both backends; out_type f32 or t. Returns the error.
double gemm_error(std::mt19937& rng, gemm_shape s, dtype t, dtype out_type, bool with_bias) {
  const auto x = round_to(random_floats(rng, s.m * s.k), t);
  const auto w = round_to(random_floats(rng, s.n * s.k), t);
  const auto b = round_to(random_floats(rng, s.n), out_type);
  tensor hx = f32_tensor({s.m, s.k}, x), hw = f32_tensor({s.n, s.k}, w), hb = f32_tensor({s.n}, b);
  tensor ho({s.m, s.n}, dtype::f32, backend_kind::cpu);
  kernels::matmul(cpu_ctx(), ho.view(), hx.view(), hw.view(), with_bias ? hb.view() : tensor_view{});
  tensor dx = to_device(x, {s.m, s.k}, t), dw = to_device(w, {s.n, s.k}, t);
  tensor db = to_device(b, {s.n}, out_type), d_out({s.m, s.n}, out_type, backend_kind::cuda);
  kernels::matmul(cuda_ctx(), d_out.view(), dx.view(), dw.view(), with_bias ? db.view() : tensor_view{});
  return max_rel_error(to_host(d_out), values(ho), std::max(1.0, std::sqrt(double(s.k)) / 3));
}

}  // namespace

TEST_CASE("CUDA matmul matches the CPU at awkward sizes in every float type, with and without bias",
          "[cuda]") {
  if (!cuda_device_or_skip()) return;
  std::mt19937 rng(17);
  for (dtype t : float_types())
    for (gemm_shape s : {gemm_shape{1, 769, 5125}, gemm_shape{769, 5125, 1}, gemm_shape{5, 64, 769},
                         gemm_shape{33, 1, 7}, gemm_shape{128, 576, 1536}})
      for (bool bias : {false, true}) {
        CAPTURE(dtype_name(t), s.m, s.k, s.n, bias);
        CHECK(gemm_error(rng, s, t, t, bias) <= tolerance(t));
      }
}

TEST_CASE("CUDA matmul writes f32 output from bf16 and f16 inputs", "[cuda]") {
  if (!cuda_device_or_skip()) return;
  std::mt19937 rng(18);
  for (dtype t : {dtype::f16, dtype::bf16}) {
    CAPTURE(dtype_name(t));
    CHECK(gemm_error(rng, {7, 769, 49}, t, dtype::f32, true) <= 1e-5);
  }
}

TEST_CASE("CUDA matmul with k = 0 writes the bias alone", "[cuda]") {
  if (!cuda_device_or_skip()) return;
  tensor dx({2, 0}, dtype::f32, backend_kind::cuda), dw({3, 0}, dtype::f32, backend_kind::cuda);
  tensor db = to_device({1, 2, 3}, {3}, dtype::f32), d_out({2, 3}, dtype::f32, backend_kind::cuda);
  kernels::matmul(cuda_ctx(), d_out.view(), dx.view(), dw.view(), db.view());
  CHECK(to_host(d_out) == std::vector<float>{1, 2, 3, 1, 2, 3});
}

TEST_CASE("CUDA matmul rejects x and w of different types naming both", "[cuda]") {
  if (!cuda_device_or_skip()) return;
  tensor dx = to_device({1, 2}, {1, 2}, dtype::bf16), dw = to_device({1, 2}, {1, 2}, dtype::f16);
  tensor d_out({1, 1}, dtype::bf16, backend_kind::cuda);
  CHECK_THROWS_WITH(kernels::matmul(cuda_ctx(), d_out.view(), dx.view(), dw.view(), tensor_view{}),
                    Catch::Contains("matmul: w is f16 but x is bf16"));
}
#endif
