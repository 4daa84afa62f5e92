// CPU gated-MLP activation over the fused gate/up output: the reference of kernels::swiglu
// (the same float arithmetic as cpu::silu_mul).
#include "kernels/swiglu.h"

#include <cmath>
#include <cstdint>

#include "kernels/cpu/op_checks.h"

namespace troupe::kernels::cpu {

void swiglu(const op_context& ctx, tensor_view out, tensor_view gate_up) {
  const char* op = "swiglu";
  require_host(op, "out", out);
  require_host(op, "gate_up", gate_up);
  require_rank(op, "gate_up", gate_up, 2);
  require(gate_up.shape[1] % 2 == 0, op, "gate_up " + gate_up.shape.str() + " needs an even row length");
  const int64_t m = gate_up.shape[0], f = gate_up.shape[1] / 2;
  require_shape(op, "out", out, shape_t{m, f});
  const float* gu = gate_up.f32();
  float* o = out.f32();
  const int threads = team_size(ctx);
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
  for (int64_t r = 0; r < m; ++r)
    for (int64_t j = 0; j < f; ++j) {
      const float g = gu[r * 2 * f + j];
      o[r * f + j] = g / (1.0f + std::exp(-g)) * gu[r * 2 * f + f + j];
    }
}

}  // namespace troupe::kernels::cpu
