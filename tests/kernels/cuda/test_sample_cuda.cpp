// The CUDA argmax and sampler against the CPU reference, the host sampler itself (needs a
// GPU; skipped without one). The CPU side of the op is tested here too, without a GPU.
#include <catch2/catch.hpp>
#include <cmath>
#include <random>
#include <vector>

#include "cuda_test_util.h"
#include "kernels/base/device.h"
#include "kernels/kernel_test_util.h"
#include "kernels/sample.h"
#include "runtime/engine/sampler.h"

using namespace troupe;
using namespace troupe::test;

namespace {

/// `m` rows of logits with a few dominant tokens and a few -inf, as a model's look.
std::vector<float> model_like_logits(std::mt19937& rng, int64_t m, int64_t vocab) {
  std::normal_distribution<float> n(0.0f, 2.0f);
  std::uniform_int_distribution<int64_t> pick(0, vocab - 1);
  std::vector<float> x(static_cast<size_t>(m * vocab));
  for (auto& v : x) v = n(rng);
  for (int64_t r = 0; r < m; ++r)
    for (int j = 0; j < 4 && vocab > 8; ++j) {
      x[static_cast<size_t>(r * vocab + pick(rng))] = 9.0f + static_cast<float>(j);
      x[static_cast<size_t>(r * vocab + pick(rng))] = -INFINITY;
    }
  return x;
}

/// A spread of sampling settings: greedy, temperature, top-k, top-p, min-p and mixes.
std::vector<kernels::sample_row> settings(uint64_t seed, uint64_t token_index) {
  std::vector<kernels::sample_row> rows;
  auto add = [&](float t, float top_p, int top_k, float min_p) {
    kernels::sample_row r;
    r.temperature = t;
    r.top_p = top_p;
    r.top_k = top_k;
    r.min_p = min_p;
    r.seed = seed + rows.size();
    r.token_index = token_index;
    rows.push_back(r);
  };
  add(0.0f, 1.0f, 0, 0.0f);
  add(1.0f, 1.0f, 0, 0.0f);
  add(0.7f, 1.0f, 0, 0.0f);
  add(1.3f, 0.9f, 0, 0.0f);
  add(1.0f, 1.0f, 50, 0.0f);
  add(0.8f, 0.95f, 40, 0.0f);
  add(1.0f, 1.0f, 0, 0.05f);
  add(2.5f, 0.5f, 7, 0.01f);
  add(1.0f, 0.2f, -1, 0.0f);
  add(1.0f, 1.0f, 1, 0.0f);
  return rows;
}

}  // namespace

TEST_CASE("CPU sample op draws what the host sampler draws for each row", "[kernels]") {
  std::mt19937 rng(23);
  const int64_t vocab = 769;
  const auto rows = settings(5, 3);
  const int64_t m = static_cast<int64_t>(rows.size());
  const auto x = model_like_logits(rng, m, vocab);
  tensor hx = f32_tensor({m, vocab}, x), ht({m}, dtype::i32, backend_kind::cpu);
  kernels::sample(cpu_ctx(), ht.view(), hx.view(), rows);
  for (int64_t r = 0; r < m; ++r) {
    sampling_params p;
    p.temperature = rows[r].temperature;
    p.top_p = rows[r].top_p;
    p.top_k = rows[r].top_k;
    p.min_p = rows[r].min_p;
    p.seed = rows[r].seed;
    CHECK(ht.view().i32()[r] == troupe::sample(x.data() + r * vocab, static_cast<int>(vocab), p, {}, 0, 3).token);
  }
}

TEST_CASE("CPU sample op names the row whose parameters are out of range", "[kernels]") {
  tensor hx = f32_tensor({2, 3}, {1, 2, 3, 4, 5, 6}), ht({2}, dtype::i32, backend_kind::cpu);
  std::vector<kernels::sample_row> rows(2);
  rows[1].top_p = 0.0f;
  CHECK_THROWS_WITH(kernels::sample(cpu_ctx(), ht.view(), hx.view(), rows),
                    Catch::Contains("sample: row 1: top_p must be in (0, 1]"));
}

#ifdef TROUPE_HAVE_CUDA_KERNELS
TEST_CASE("CUDA argmax picks the CPU's token, lowest id on ties, at vocab 1, 769, 5125 and 49152",
          "[cuda]") {
  if (!cuda_device_or_skip()) return;
  std::mt19937 rng(24);
  for (int64_t vocab : {1, 769, 5125, 49152}) {
    CAPTURE(vocab);
    const int64_t m = 4;
    auto x = model_like_logits(rng, m, vocab);
    if (vocab > 100) x[static_cast<size_t>(vocab + 77)] = x[static_cast<size_t>(vocab + 90)] = 50.0f;
    tensor hx = f32_tensor({m, vocab}, x), ht({m}, dtype::i32, backend_kind::cpu);
    kernels::argmax(cpu_ctx(), ht.view(), hx.view());
    tensor dx = to_device(x, {m, vocab}, dtype::f32), dt({m}, dtype::i32, backend_kind::cuda);
    kernels::argmax(cuda_ctx(), dt.view(), dx.view());
    const auto got = to_host_i32(dt);
    CHECK(got == std::vector<int32_t>(ht.view().i32(), ht.view().i32() + m));
    if (vocab > 100) CHECK(got[1] == 77);
  }
}

TEST_CASE("CUDA sample draws the CPU sampler's token for the same seed and token index, staged or not",
          "[cuda]") {
  if (!cuda_device_or_skip()) return;
  std::mt19937 rng(25);
  int compared = 0;
  for (int64_t vocab : {1, 769, 5125, 49152})
    for (uint64_t token_index : {0u, 1u, 17u, 1000u}) {
      CAPTURE(vocab, token_index);
      const auto rows = settings(42 + token_index, token_index);
      const int64_t m = static_cast<int64_t>(rows.size());
      const auto x = model_like_logits(rng, m, vocab);
      tensor hx = f32_tensor({m, vocab}, x), ht({m}, dtype::i32, backend_kind::cpu);
      kernels::sample(cpu_ctx(), ht.view(), hx.view(), rows);
      tensor dx = to_device(x, {m, vocab}, dtype::f32), dt({m}, dtype::i32, backend_kind::cuda);
      kernels::sample(cuda_ctx(), dt.view(), dx.view(), rows);
      const auto got = to_host_i32(dt);
      // Through page-locked staging (as the pipelined step sampler copies): the same draws.
      pinned_buffer staging(rows.size() * sizeof(kernels::sample_row), backend_kind::cuda);
      tensor ds({m}, dtype::i32, backend_kind::cuda);
      kernels::sample(cuda_ctx(), ds.view(), dx.view(), rows, staging.data());
      CHECK(to_host_i32(ds) == got);
      for (int64_t r = 0; r < m; ++r) {
        CAPTURE(r, rows[r].temperature, rows[r].top_p, rows[r].top_k, rows[r].min_p);
        CHECK(got[static_cast<size_t>(r)] == ht.view().i32()[r]);
        ++compared;
      }
    }
  CHECK(compared == 160);
}
#endif
