#pragma once
/// Rotary position embedding, NeoX "rotate_half" layout (dimension i pairs with i + head_dim/2).
#include <vector>

#include "kernels/op_context.h"

namespace troupe::kernels {

/// RoPE frequency scaling (plain parameters; a model's config carries one).
struct rope_scaling {
  enum class kind : uint8_t { none, llama3 } type = kind::none;  ///< which scaling
  float factor = 1.0f;                 ///< llama3: overall factor
  float low_freq_factor = 1.0f;        ///< llama3: low-frequency bound
  float high_freq_factor = 4.0f;       ///< llama3: high-frequency bound
  int original_max_position = 8192;    ///< llama3: trained context before scaling
};

/// Per-pair inverse frequencies [head_dim/2], with `llama3` scaling applied when configured.
std::vector<float> rope_inv_freq(int head_dim, float theta, const rope_scaling& scaling);

namespace cpu {
/// CPU implementation of kernels::rope.
void rope(const op_context& ctx, tensor_view x, tensor_view positions, tensor_view inv_freq);
}  // namespace cpu

#ifdef TROUPE_HAVE_CUDA_KERNELS
namespace cuda {
/// CUDA implementation of kernels::rope.
void rope(const op_context& ctx, tensor_view x, tensor_view positions, tensor_view inv_freq);
}  // namespace cuda
#endif

/// Rotates x[m, n_heads, head_dim] in place; token row r is at position positions[r] (i32 [m]).
/// inv_freq: f32 [head_dim/2] on the context's device.
inline void rope(const op_context& ctx, tensor_view x, tensor_view positions,
    tensor_view inv_freq) {
  switch (ctx.backend) {
    case backend_kind::cpu:
      return cpu::rope(ctx, x, positions, inv_freq);
    case backend_kind::cuda:
#ifdef TROUPE_HAVE_CUDA_KERNELS
      return cuda::rope(ctx, x, positions, inv_freq);
#else
      throw backend_unavailable("rope: this build has no CUDA kernels");
#endif
  }
  throw backend_unavailable("rope: unknown backend");
}

}  // namespace troupe::kernels
