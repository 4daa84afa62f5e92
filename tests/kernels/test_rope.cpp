#include <catch2/catch.hpp>
#include <cmath>
#include <random>
#include <vector>

#include "kernel_test_util.h"
#include "kernels/rope.h"

using namespace troupe;
using kernels::rope_scaling;
using troupe::test::cpu_ctx;
using troupe::test::f32_tensor;
using troupe::test::i32_tensor;
using troupe::test::random_floats;
using troupe::test::values;

namespace {

/// HF transformers' default inverse frequencies, in double.
std::vector<double> hf_inv_freq(int head_dim, double theta) {
  std::vector<double> inv;
  for (int i = 0; i < head_dim; i += 2)
    inv.push_back(1.0 / std::pow(theta, static_cast<double>(i) / head_dim));
  return inv;
}

/// HF transformers' _compute_llama3_parameters, in double.
std::vector<double> hf_llama3(std::vector<double> inv, double factor, double low, double high,
                              double orig) {
  const double pi = 3.14159265358979323846;
  const double low_wavelen = orig / low, high_wavelen = orig / high;
  for (double& f : inv) {
    const double wavelen = 2 * pi / f;
    const double scaled = wavelen > low_wavelen ? f / factor : f;
    const double smooth = (orig / wavelen - low) / (high - low);
    const double smoothed = (1 - smooth) * scaled / factor + smooth * scaled;
    const bool medium = !(wavelen < high_wavelen) && !(wavelen > low_wavelen);
    f = medium ? smoothed : scaled;
  }
  return inv;
}

}  // namespace

TEST_CASE("rope_inv_freq without scaling is theta^(-2i/d)", "[kernels]") {
  auto got = kernels::rope_inv_freq(64, 10000.0f, rope_scaling{});
  auto want = hf_inv_freq(64, 10000.0);
  REQUIRE(got.size() == 32);
  CHECK(got[0] == 1.0f);
  for (size_t i = 0; i < got.size(); ++i) CHECK(got[i] == Approx(want[i]).epsilon(2e-6));
}

TEST_CASE("rope_inv_freq with llama3 scaling matches HF for Llama-3.1's parameters", "[kernels]") {
  rope_scaling s;
  s.type = rope_scaling::kind::llama3;
  s.factor = 8.0f;
  s.low_freq_factor = 1.0f;
  s.high_freq_factor = 4.0f;
  s.original_max_position = 8192;
  auto got = kernels::rope_inv_freq(128, 500000.0f, s);
  auto plain = hf_inv_freq(128, 500000.0);
  auto want = hf_llama3(plain, 8.0, 1.0, 4.0, 8192.0);
  REQUIRE(got.size() == 64);
  for (size_t i = 0; i < got.size(); ++i) {
    INFO("i=" << i);
    CHECK(got[i] == Approx(want[i]).epsilon(1e-5));
  }
  CHECK(got[0] == 1.0f);                                    // high frequency: untouched
  CHECK(got[63] == Approx(plain[63] / 8.0).epsilon(1e-5));  // low frequency: divided by factor
  int smoothed = 0;
  for (size_t i = 0; i < got.size(); ++i)
    if (want[i] != plain[i] && std::abs(want[i] - plain[i] / 8.0) > 1e-12 * plain[i]) ++smoothed;
  CHECK(smoothed > 0);  // the band between the two wavelengths is exercised
}

TEST_CASE("rope_inv_freq rejects an odd head_dim", "[kernels]") {
  REQUIRE_THROWS_WITH(kernels::rope_inv_freq(7, 10000.0f, rope_scaling{}),
                      Catch::Matchers::Contains("head_dim 7"));
}

TEST_CASE("rope rotates each pair (i, i + d/2) by pos times its inverse frequency", "[kernels]") {
  std::mt19937 rng(21);
  for (int64_t head_dim : {64, 6}) {
    for (int64_t heads : {9, 3}) {
      INFO("head_dim=" << head_dim << " heads=" << heads);
      const std::vector<int32_t> pos{0, 1, 7, 769, 5125};
      const int64_t m = static_cast<int64_t>(pos.size()), half = head_dim / 2;
      auto inv = kernels::rope_inv_freq(static_cast<int>(head_dim), 10000.0f, rope_scaling{});
      auto x = random_floats(rng, static_cast<size_t>(m * heads * head_dim));
      tensor tx = f32_tensor({m, heads, head_dim}, x), tp = i32_tensor({m}, pos);
      tensor tf = f32_tensor({half}, inv);
      kernels::rope(cpu_ctx(2), tx.view(), tp.view(), tf.view());
      auto got = values(tx);
      int64_t bad = 0;
      for (int64_t r = 0; r < m; ++r)
        for (int64_t h = 0; h < heads; ++h)
          for (int64_t i = 0; i < half; ++i) {
            const size_t a = static_cast<size_t>((r * heads + h) * head_dim + i),
                         b = a + static_cast<size_t>(half);
            const double angle = static_cast<float>(
                static_cast<float>(pos[static_cast<size_t>(r)]) * inv[static_cast<size_t>(i)]);
            const double c = std::cos(angle), s = std::sin(angle);
            if (std::abs(got[a] - (x[a] * c - x[b] * s)) > 2e-6) ++bad;
            if (std::abs(got[b] - (x[a] * s + x[b] * c)) > 2e-6) ++bad;
          }
      CHECK(bad == 0);
    }
  }
}

TEST_CASE("rope at position 0 leaves the vector unchanged", "[kernels]") {
  auto inv = kernels::rope_inv_freq(8, 10000.0f, rope_scaling{});
  std::vector<float> x{1, 2, 3, 4, 5, 6, 7, 8};
  tensor tx = f32_tensor({1, 1, 8}, x), tp = i32_tensor({1}, {0}), tf = f32_tensor({4}, inv);
  kernels::rope(cpu_ctx(), tx.view(), tp.view(), tf.view());
  CHECK(values(tx) == x);
}

TEST_CASE("rope rejects mismatched positions and frequencies, naming the shapes", "[kernels]") {
  tensor x({3, 2, 8}, dtype::f32, backend_kind::cpu);
  tensor pos = i32_tensor({2}, {0, 1}), good_pos = i32_tensor({3}, {0, 1, 2});
  tensor freq({4}, dtype::f32, backend_kind::cpu), bad_freq({8}, dtype::f32, backend_kind::cpu);
  using Catch::Matchers::Contains;
  REQUIRE_THROWS_AS(kernels::rope(cpu_ctx(), x.view(), pos.view(), freq.view()),
                    std::invalid_argument);
  REQUIRE_THROWS_WITH(
      kernels::rope(cpu_ctx(), x.view(), pos.view(), freq.view()),
      Contains("rope") && Contains("positions") && Contains("[2]") && Contains("[3]"));
  REQUIRE_THROWS_WITH(
      kernels::rope(cpu_ctx(), x.view(), good_pos.view(), bad_freq.view()),
      Contains("rope") && Contains("inv_freq") && Contains("[8]") && Contains("[4]"));
}
