// CPU element-wise accumulate.
#include "kernels/add.h"

#include <cstdint>

#include "kernels/cpu/op_checks.h"

namespace troupe::kernels::cpu {

void add_inplace(const op_context& ctx, tensor_view acc, tensor_view x) {
  require_host("add_inplace", "acc", acc);
  require_host("add_inplace", "x", x);
  require_shape("add_inplace", "x", x, acc.shape);
  const int64_t n = acc.numel();
  float* a = acc.f32();
  const float* b = x.f32();
  const int threads = team_size(ctx);
#pragma omp parallel for simd num_threads(threads) schedule(static) if (threads > 1)
  for (int64_t i = 0; i < n; ++i) a[i] += b[i];
}

}  // namespace troupe::kernels::cpu
