// The CUDA fused gate/up projection and SwiGLU (the paired GEMV at one row, matmul and
// swiglu above it) against the CPU reference and, bitwise, against the two CUDA ops apart
// (needs a GPU; skipped without one).
#ifdef TROUPE_HAVE_CUDA_KERNELS
#include <catch2/catch.hpp>
#include <cmath>
#include <random>
#include <vector>

#include "cuda_test_util.h"
#include "kernels/gate_up_swiglu.h"
#include "kernels/kernel_test_util.h"
#include "kernels/matmul.h"
#include "kernels/swiglu.h"

using namespace troupe;
using namespace troupe::test;

TEST_CASE("CUDA gate_up_swiglu matches the CPU at awkward sizes and equals matmul then swiglu bitwise", "[cuda]") {
  // The CPU op itself is checked against this same composition in tests/kernels.
  if (!cuda_device_or_skip()) return;
  std::mt19937 rng(61);
  for (dtype t : {dtype::bf16, dtype::f16, dtype::f32})
    for (int64_t f : {1, 769, 5125})
      for (int64_t m : {1, 3})
        for (int64_t k : {8, 1032}) {
          CAPTURE(dtype_name(t), f, m, k);
          const auto x = round_to(random_floats(rng, m * k), t);
          const auto w = round_to(random_floats(rng, 2 * f * k, -0.5f, 0.5f), t);
          // The reference rounds the projection to t before SwiGLU, as the device does (a
          // bf16 gate near SwiGLU's steep part would otherwise differ by more than its ulp).
          tensor hx = f32_tensor({m, k}, x), hw = f32_tensor({2 * f, k}, w);
          tensor hs({m, 2 * f}, dtype::f32, backend_kind::cpu), ho({m, f}, dtype::f32, backend_kind::cpu);
          kernels::matmul(cpu_ctx(), hs.view(), hx.view(), hw.view(), {});
          tensor hr = f32_tensor({m, 2 * f}, round_to(values(hs), t));
          kernels::swiglu(cpu_ctx(), ho.view(), hr.view());
          tensor dx = to_device(x, {m, k}, t), dw = to_device(w, {2 * f, k}, t);
          tensor ds({m, 2 * f}, t, backend_kind::cuda), dout({m, f}, t, backend_kind::cuda);
          cuda_ok(cudaMemset(dout.view().data, 0xff, dout.bytes()), "poison");
          kernels::gate_up_swiglu(cuda_ctx(), dout.view(), dx.view(), dw.view(), ds.view());
          // A product of two k-long dots: its rounding scales with (sqrt(k) / 3)^2, and a
          // projection rounded to t one ulp apart moves silu(g) * u by about |u| ulp(g).
          CHECK(max_rel_error(to_host(dout), values(ho), std::max(1.0, double(k) / 9)) <= tolerance(t));
          // The same two steps apart on the device: equal to the last bit.
          tensor dsep({m, f}, t, backend_kind::cuda);
          kernels::matmul(cuda_ctx(), ds.view(), dx.view(), dw.view(), {});
          kernels::swiglu(cuda_ctx(), dsep.view(), ds.view());
          CHECK(to_host(dout) == to_host(dsep));
          // The paired GEMV's other tilings at one row (pinned as the benchmark does): the same bits.
          for (int variant : {3, 5}) {
            if (m != 1) break;
            CAPTURE(variant);
            tensor dv({m, f}, t, backend_kind::cuda);
            kernels::cuda::set_gemv_variants(variant, -1);
            kernels::gate_up_swiglu(cuda_ctx(), dv.view(), dx.view(), dw.view(), ds.view());
            kernels::cuda::set_gemv_variants(-1, -1);
            CHECK(to_host(dv) == to_host(dout));
          }
        }
}
#endif
