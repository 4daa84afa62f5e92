// The CUDA conversions and random-weight fills against the CPU reference, bit for bit
// (needs a GPU; skipped without one).
#ifdef TROUPE_HAVE_CUDA_KERNELS
#include <catch2/catch.hpp>
#include <random>
#include <vector>

#include "cuda_test_util.h"
#include "kernels/convert.h"
#include "kernels/kernel_test_util.h"

using namespace troupe;
using namespace troupe::test;

namespace {

/// The raw bits of a host tensor.
std::vector<uint8_t> bytes_of(const tensor& t) {
  const auto* p = static_cast<const uint8_t*>(t.view().data);
  return std::vector<uint8_t>(p, p + t.bytes());
}

/// The raw bits of a device tensor.
std::vector<uint8_t> device_bytes(const tensor& t) {
  cuda_sync();
  std::vector<uint8_t> out(t.bytes());
  if (!out.empty()) cuda_ok(cudaMemcpy(out.data(), t.view().data, out.size(), cudaMemcpyDeviceToHost), "download");
  return out;
}

}  // namespace

TEST_CASE("CUDA convert gives the CPU's bits at 1, 769 and 5125 elements for every type pair", "[cuda]") {
  if (!cuda_device_or_skip()) return;
  std::mt19937 rng(5);
  for (int64_t n : {1, 769, 5125})
    for (dtype from : float_types())
      for (dtype to : float_types()) {
        CAPTURE(n, dtype_name(from), dtype_name(to));
        const auto v = round_to(random_floats(rng, static_cast<size_t>(n), -70000, 70000), from);
        tensor h_in(shape_t{n}, from, backend_kind::cpu), h_out(shape_t{n}, to, backend_kind::cpu);
        kernels::convert(cpu_ctx(), h_in.view(), f32_tensor({n}, v).view());
        kernels::convert(cpu_ctx(), h_out.view(), h_in.view());
        tensor d_in = to_device(v, {n}, from), d_out(shape_t{n}, to, backend_kind::cuda);
        kernels::convert(cuda_ctx(), d_out.view(), d_in.view());
        CHECK(device_bytes(d_out) == bytes_of(h_out));
      }
}

TEST_CASE("CUDA random weights are the CPU's, bit for bit, in every float type", "[cuda]") {
  if (!cuda_device_or_skip()) return;
  for (int64_t n : {1, 769, 5125})
    for (dtype t : float_types()) {
      CAPTURE(n, dtype_name(t));
      tensor h(shape_t{n}, t, backend_kind::cpu), d(shape_t{n}, t, backend_kind::cuda);
      kernels::fill_random(cpu_ctx(), h.view(), 42, 0.02f);
      kernels::fill_random(cuda_ctx(), d.view(), 42, 0.02f);
      CHECK(device_bytes(d) == bytes_of(h));
      kernels::fill_value(cpu_ctx(), h.view(), 1.0f);
      kernels::fill_value(cuda_ctx(), d.view(), 1.0f);
      CHECK(device_bytes(d) == bytes_of(h));
    }
}
#endif
