// CPU rotary position embedding, NeoX layout, and the inverse-frequency table.
// Angles follow llama.cpp: theta = pos * inv_freq[i] in float, then cosf / sinf.
#include "kernels/rope.h"

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/cpu/op_checks.h"

namespace troupe::kernels {

std::vector<float> rope_inv_freq(int head_dim, float theta, const rope_scaling& scaling) {
  const char* op = "rope_inv_freq";
  cpu::require(head_dim > 0 && head_dim % 2 == 0, op,
               "head_dim " + std::to_string(head_dim) + " must be positive and even");
  cpu::require(theta > 0.0f, op, "rope theta " + std::to_string(theta) + " must be positive");
  const int half = head_dim / 2;
  std::vector<float> inv(static_cast<size_t>(half));
  for (int i = 0; i < half; ++i)
    inv[static_cast<size_t>(i)] =
        std::pow(theta, -2.0f * static_cast<float>(i) / static_cast<float>(head_dim));
  if (scaling.type == rope_scaling::kind::none) return inv;

  // llama3 (HF transformers' _compute_llama3_parameters).
  const float factor = scaling.factor, low = scaling.low_freq_factor,
              high = scaling.high_freq_factor;
  const float orig = static_cast<float>(scaling.original_max_position);
  cpu::require(factor > 0.0f && low > 0.0f && high > low && orig > 0.0f, op,
               "llama3 scaling needs factor > 0, 0 < low_freq_factor < high_freq_factor and "
               "original_max_position > 0");
  const float low_freq_wavelen = orig / low;
  const float high_freq_wavelen = orig / high;
  const float two_pi = 6.283185307179586f;
  for (float& f : inv) {
    const float wavelen = two_pi / f;
    if (wavelen < high_freq_wavelen) continue;
    if (wavelen > low_freq_wavelen) {
      f = f / factor;
    } else {
      const float smooth = (orig / wavelen - low) / (high - low);
      f = (1.0f - smooth) * f / factor + smooth * f;
    }
  }
  return inv;
}

namespace cpu {

void rope(const op_context& ctx, tensor_view x, tensor_view positions, tensor_view inv_freq) {
  const char* op = "rope";
  require_host(op, "x", x);
  require_host(op, "positions", positions, dtype::i32);
  require_host(op, "inv_freq", inv_freq);
  require_rank(op, "x", x, 3);
  require(x.shape[2] > 0 && x.shape[2] % 2 == 0, op,
          "x " + x.shape.str() + " needs an even, positive head_dim");
  require_shape(op, "positions", positions, shape_t{x.shape[0]});
  require_shape(op, "inv_freq", inv_freq, shape_t{x.shape[2] / 2});
  const int64_t m = x.shape[0], n_heads = x.shape[1], head_dim = x.shape[2];
  const int64_t half = head_dim / 2;
  const int32_t* pos = positions.i32();
  const float* freq = inv_freq.f32();
  float* xs = x.f32();
  const int threads = team_size(ctx);
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    std::vector<float> cos_t(static_cast<size_t>(half)), sin_t(static_cast<size_t>(half));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < m; ++r) {
      const float p = static_cast<float>(pos[r]);
      for (int64_t i = 0; i < half; ++i) {
        const float angle = p * freq[i];
        cos_t[static_cast<size_t>(i)] = std::cos(angle);
        sin_t[static_cast<size_t>(i)] = std::sin(angle);
      }
      for (int64_t h = 0; h < n_heads; ++h) {
        float* v = xs + (r * n_heads + h) * head_dim;
        for (int64_t i = 0; i < half; ++i) {
          const float c = cos_t[static_cast<size_t>(i)], s = sin_t[static_cast<size_t>(i)];
          const float x0 = v[i], x1 = v[i + half];
          v[i] = x0 * c - x1 * s;
          v[i + half] = x0 * s + x1 * c;
        }
      }
    }
  }
}

}  // namespace cpu
}  // namespace troupe::kernels
