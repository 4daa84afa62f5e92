#pragma once
/// Helpers shared by the CPU kernel tests: host tensors from vectors, random fills.
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/op_context.h"
#include "kernels/base/tensor.h"

namespace troupe::test {

/// A CPU op context with `threads` workers.
inline kernels::op_context cpu_ctx(int threads = 1) {
  kernels::op_context c;
  c.backend = backend_kind::cpu;
  c.n_threads = threads;
  return c;
}

/// A host f32 tensor holding `values` (numel must match).
inline tensor f32_tensor(shape_t s, const std::vector<float>& values) {
  tensor t(s, dtype::f32, backend_kind::cpu);
  if (!values.empty()) std::memcpy(t.f32(), values.data(), values.size() * sizeof(float));
  return t;
}

/// A host i32 tensor holding `values`.
inline tensor i32_tensor(shape_t s, const std::vector<int32_t>& values) {
  tensor t(s, dtype::i32, backend_kind::cpu);
  if (!values.empty()) std::memcpy(t.view().i32(), values.data(), values.size() * sizeof(int32_t));
  return t;
}

/// `n` floats uniform in [lo, hi).
inline std::vector<float> random_floats(std::mt19937& rng, size_t n, float lo = -1.0f,
                                        float hi = 1.0f) {
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = u(rng);
  return v;
}

/// The data of a host f32 tensor as a vector.
inline std::vector<float> values(const tensor& t) {
  return std::vector<float>(t.f32(), t.f32() + t.numel());
}

}  // namespace troupe::test
