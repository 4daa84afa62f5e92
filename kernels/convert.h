#pragma once
/// Element-type conversion (f32 / f16 / bf16) and the deterministic fills that the
/// `random` load format uses for its weights.
#include <cstdint>

#include "kernels/op_context.h"
#include "kernels/base/rng.h"  // TROUPE_HOST_DEVICE

namespace troupe::kernels {

namespace cpu {
/// CPU implementation of kernels::convert.
void convert(const op_context& ctx, tensor_view out, tensor_view in);
/// CPU implementation of kernels::fill_random.
void fill_random(const op_context& ctx, tensor_view out, uint64_t seed, float stddev, int64_t first,
                 int64_t stride);
/// CPU implementation of kernels::fill_value.
void fill_value(const op_context& ctx, tensor_view out, float value);
}  // namespace cpu

#ifdef TROUPE_HAVE_CUDA_KERNELS
namespace cuda {
/// CUDA implementation of kernels::convert.
void convert(const op_context& ctx, tensor_view out, tensor_view in);
/// CUDA implementation of kernels::fill_random.
void fill_random(const op_context& ctx, tensor_view out, uint64_t seed, float stddev, int64_t first,
                 int64_t stride);
/// CUDA implementation of kernels::fill_value.
void fill_value(const op_context& ctx, tensor_view out, float value);
}  // namespace cuda
#endif

/// The uniform draw in [-1, 1) behind fill_random for element `i` of stream `seed`
/// (splitmix64 of seed and index, top 24 bits): the same on every backend.
TROUPE_HOST_DEVICE inline float random_unit(uint64_t seed, uint64_t i) {
  uint64_t z = seed * 0x9E3779B97F4A7C15ull + i + 0x632BE59BD9B4E019ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return static_cast<float>(z >> 40) * (2.0f / 16777216.0f) - 1.0f;
}

/// out[i] = in[i] converted to out's type (round to nearest even); same element count.
inline void convert(const op_context& ctx, tensor_view out, tensor_view in) {
  switch (ctx.backend) {
    case backend_kind::cpu:
      return cpu::convert(ctx, out, in);
    case backend_kind::cuda:
#ifdef TROUPE_HAVE_CUDA_KERNELS
      return cuda::convert(ctx, out, in);
#else
      throw backend_unavailable("convert: this build has no CUDA kernels");
#endif
  }
  throw backend_unavailable("convert: unknown backend");
}

/// out[r, c] = random_unit(seed, first + r * stride + c) * stddev * sqrt(3), with `out` seen
/// as [rows, last dim] and stride 0 meaning the last dim: uniform with standard deviation
/// `stddev`, a pure function of (seed, index). A tensor-parallel slice of a [R, C] matrix
/// passes its place in the whole one (rows r0..: first = r0 * C; columns c0..: first = c0,
/// stride = C), so every split of a model gets the same weights.
inline void fill_random(const op_context& ctx, tensor_view out, uint64_t seed, float stddev,
                        int64_t first = 0, int64_t stride = 0) {
  switch (ctx.backend) {
    case backend_kind::cpu:
      return cpu::fill_random(ctx, out, seed, stddev, first, stride);
    case backend_kind::cuda:
#ifdef TROUPE_HAVE_CUDA_KERNELS
      return cuda::fill_random(ctx, out, seed, stddev, first, stride);
#else
      throw backend_unavailable("fill_random: this build has no CUDA kernels");
#endif
  }
  throw backend_unavailable("fill_random: unknown backend");
}

/// out[i] = value.
inline void fill_value(const op_context& ctx, tensor_view out, float value) {
  switch (ctx.backend) {
    case backend_kind::cpu:
      return cpu::fill_value(ctx, out, value);
    case backend_kind::cuda:
#ifdef TROUPE_HAVE_CUDA_KERNELS
      return cuda::fill_value(ctx, out, value);
#else
      throw backend_unavailable("fill_value: this build has no CUDA kernels");
#endif
  }
  throw backend_unavailable("fill_value: unknown backend");
}

}  // namespace troupe::kernels
