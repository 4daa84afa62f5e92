// kernels::convert and the random-weight fills on the CPU (the CUDA versions are checked
// against these in tests/kernels/cuda/test_convert_cuda.cpp).
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/convert.h"
#include "kernels/kernel_test_util.h"
#include "kernels/base/dequant.h"

using namespace troupe;
using namespace troupe::test;

namespace {

std::vector<uint16_t> to_half(const std::vector<float>& v, dtype t) {
  tensor in = f32_tensor({static_cast<int64_t>(v.size())}, v);
  tensor out({static_cast<int64_t>(v.size())}, t, backend_kind::cpu);
  kernels::convert(cpu_ctx(), out.view(), in.view());
  std::vector<uint16_t> bits(v.size());
  std::memcpy(bits.data(), out.view().data, bits.size() * 2);
  return bits;
}

}  // namespace

TEST_CASE("f32 to bf16 rounds to the nearest even value", "[convert]") {
  const float step = std::ldexp(1.0f, -8);
  const auto bits = to_half({1.0f, 1.0f + step, 1.0f + 3 * step, -2.5f, 0.0f}, dtype::bf16);
  REQUIRE(bits.size() == 5);
  CHECK(bf16_to_f32(bits[0]) == 1.0f);
  CHECK(bf16_to_f32(bits[1]) == 1.0f);                               // halfway: down to even
  CHECK(bf16_to_f32(bits[2]) == 1.0f + std::ldexp(1.0f, -6));        // halfway: up to even
  CHECK(bf16_to_f32(bits[3]) == -2.5f);
  CHECK(bits[4] == 0);
}

TEST_CASE("f32 to f16 rounds to nearest even, saturates to infinity and keeps subnormals", "[convert]") {
  const auto bits = to_half({1.0f + std::ldexp(1.0f, -11), 65504.0f, 70000.0f, std::ldexp(1.0f, -24), -0.5f},
                            dtype::f16);
  CHECK(f16_to_f32(bits[0]) == 1.0f);
  CHECK(f16_to_f32(bits[1]) == 65504.0f);
  CHECK(std::isinf(f16_to_f32(bits[2])));
  CHECK(f16_to_f32(bits[3]) == std::ldexp(1.0f, -24));
  CHECK(f16_to_f32(bits[4]) == -0.5f);
}

TEST_CASE("bf16 converted back to f32 is exact", "[convert]") {
  tensor h({3}, dtype::bf16, backend_kind::cpu), back({3}, dtype::f32, backend_kind::cpu);
  kernels::convert(cpu_ctx(), h.view(), f32_tensor({3}, {0.15625f, -3.0f, 1024.0f}).view());
  kernels::convert(cpu_ctx(), back.view(), h.view());
  CHECK(values(back) == std::vector<float>{0.15625f, -3.0f, 1024.0f});
}

TEST_CASE("convert rejects tensors of different sizes and i32 tensors, naming them", "[convert]") {
  tensor a({4}, dtype::f32, backend_kind::cpu), b({5}, dtype::bf16, backend_kind::cpu), i({4}, dtype::i32, backend_kind::cpu);
  CHECK_THROWS_WITH(kernels::convert(cpu_ctx(), b.view(), a.view()), Catch::Contains("element count"));
  CHECK_THROWS_WITH(kernels::convert(cpu_ctx(), i.view(), a.view()), Catch::Contains("out is i32"));
}

TEST_CASE("random weights are a pure function of the seed with the asked standard deviation", "[convert]") {
  const int64_t n = 200000;
  tensor a({n}, dtype::f32, backend_kind::cpu), b({n}, dtype::f32, backend_kind::cpu), c({n}, dtype::f32, backend_kind::cpu);
  kernels::fill_random(cpu_ctx(4), a.view(), 7, 0.02f);
  kernels::fill_random(cpu_ctx(1), b.view(), 7, 0.02f);
  kernels::fill_random(cpu_ctx(1), c.view(), 8, 0.02f);
  CHECK(values(a) == values(b));
  CHECK(values(a) != values(c));
  double sum = 0, sq = 0, lim = 0;
  for (float v : values(a)) {
    sum += v;
    sq += double{v} * v;
    lim = std::max(lim, std::fabs(double{v}));
  }
  CHECK(std::fabs(sum / n) < 5e-4);
  CHECK(std::sqrt(sq / n) == Approx(0.02).epsilon(0.02));
  CHECK(lim <= 0.02 * std::sqrt(3.0) + 1e-6);
}

TEST_CASE("fill_value sets every element", "[convert]") {
  tensor t({769}, dtype::bf16, backend_kind::cpu), back({769}, dtype::f32, backend_kind::cpu);
  kernels::fill_value(cpu_ctx(), t.view(), 1.0f);
  kernels::convert(cpu_ctx(), back.view(), t.view());
  CHECK(values(back) == std::vector<float>(769, 1.0f));
}
