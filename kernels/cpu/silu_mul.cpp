// CPU gated-MLP activation: out = silu(gate) * up, element-wise in float.
#include "kernels/silu_mul.h"

#include <cmath>
#include <cstdint>

#include "kernels/cpu/op_checks.h"

namespace troupe::kernels::cpu {

void silu_mul(const op_context& ctx, tensor_view out, tensor_view gate, tensor_view up) {
  require_host("silu_mul", "out", out);
  require_host("silu_mul", "gate", gate);
  require_host("silu_mul", "up", up);
  require_shape("silu_mul", "up", up, gate.shape);
  require_shape("silu_mul", "out", out, gate.shape);
  const int64_t n = gate.numel();
  const float* g = gate.f32();
  const float* u = up.f32();
  float* o = out.f32();  // may alias gate or up: each element is read before it is written
  const int threads = team_size(ctx);
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
  for (int64_t i = 0; i < n; ++i) {
    const float v = g[i];
    o[i] = v / (1.0f + std::exp(-v)) * u[i];
  }
}

}  // namespace troupe::kernels::cpu
