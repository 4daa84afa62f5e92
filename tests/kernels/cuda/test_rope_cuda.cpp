// The CUDA rope against the CPU reference (needs a GPU; skipped without one).
#ifdef TROUPE_HAVE_CUDA_KERNELS
#include <catch2/catch.hpp>
#include <random>
#include <vector>

#include "cuda_test_util.h"
#include "kernels/kernel_test_util.h"
#include "kernels/rope.h"

using namespace troupe;
using kernels::rope_scaling;
using namespace troupe::test;

TEST_CASE("CUDA rope matches the CPU with and without llama3 scaling at far positions",
          "[cuda]") {
  if (!cuda_device_or_skip()) return;
  std::mt19937 rng(16);
  rope_scaling llama3;
  llama3.type = rope_scaling::kind::llama3;
  llama3.factor = 8.0f;
  llama3.low_freq_factor = 1.0f;
  llama3.high_freq_factor = 4.0f;
  llama3.original_max_position = 8192;
  for (dtype t : float_types())
    for (int64_t hd : {2, 64, 130})
      for (const rope_scaling& sc : {rope_scaling{}, llama3}) {
        CAPTURE(dtype_name(t), hd, sc.type == rope_scaling::kind::llama3);
        const int64_t m = 5, heads = 3;
        const std::vector<int32_t> pos{0, 1, 769, 5125, 131071};
        const auto inv = kernels::rope_inv_freq(static_cast<int>(hd), 500000.0f, sc);
        const auto x = round_to(random_floats(rng, m * heads * hd), t);
        tensor hx = f32_tensor({m, heads, hd}, x), hp = i32_tensor({m}, pos), hf = f32_tensor({hd / 2}, inv);
        kernels::rope(cpu_ctx(), hx.view(), hp.view(), hf.view());
        tensor dx = to_device(x, {m, heads, hd}, t), dp = to_device_i32(pos, {m});
        tensor df = to_device(inv, {hd / 2}, dtype::f32);
        kernels::rope(cuda_ctx(), dx.view(), dp.view(), df.view());
        CHECK(max_rel_error(to_host(dx), values(hx)) <= tolerance(t));
      }
}
#endif
