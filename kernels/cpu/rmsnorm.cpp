// CPU RMSNorm, computed as llama.cpp's ggml_compute_forward_rms_norm_f32 does: the sum of
// squares in double over the row in index order, the mean back in float, then
// out = (x * (1 / sqrt(mean + eps))) * weight. Each row is independent (batch-invariant).
#include "kernels/rmsnorm.h"

#include <cmath>
#include <cstdint>

#include "kernels/cpu/op_checks.h"

namespace troupe::kernels::cpu {
namespace {

/// Normalizes one row of length d.
void norm_row(float* out, const float* x, const float* weight, int64_t d, float eps) {
  double sum = 0.0;
  for (int64_t i = 0; i < d; ++i) sum += static_cast<double>(x[i] * x[i]);
  const float mean = static_cast<float>(sum / static_cast<double>(d));
  const float scale = 1.0f / std::sqrt(mean + eps);
  for (int64_t i = 0; i < d; ++i) {
    const float y = x[i] * scale;
    out[i] = y * weight[i];
  }
}

/// Checks out, x and weight of an [m, d] norm; `x_name` names the normalized input.
void check(const char* op, tensor_view out, tensor_view x, const char* x_name, tensor_view weight) {
  require_host(op, "out", out);
  require_host(op, x_name, x);
  require_host(op, "weight", weight);
  require_rank(op, x_name, x, 2);
  require(x.shape[1] > 0, op, std::string(x_name) + " " + x.shape.str() + " has empty rows");
  require_shape(op, "out", out, x.shape);
  require_shape(op, "weight", weight, shape_t{x.shape[1]});
}

}  // namespace

void rmsnorm(const op_context& ctx, tensor_view out, tensor_view x, tensor_view weight, float eps) {
  check("rmsnorm", out, x, "x", weight);
  const int64_t m = x.shape[0], d = x.shape[1];
  const float* xs = x.f32();
  const float* ws = weight.f32();
  float* os = out.f32();
  const int threads = team_size(ctx);
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
  for (int64_t r = 0; r < m; ++r) norm_row(os + r * d, xs + r * d, ws, d, eps);
}

void add_rmsnorm(const op_context& ctx, tensor_view out, tensor_view residual, tensor_view x,
                 tensor_view weight, float eps) {
  check("add_rmsnorm", out, residual, "residual", weight);
  require_host("add_rmsnorm", "x", x);
  require_shape("add_rmsnorm", "x", x, residual.shape);
  const int64_t m = x.shape[0], d = x.shape[1];
  const float* xs = x.f32();
  const float* ws = weight.f32();
  float* rs = residual.f32();
  float* os = out.f32();
  const int threads = team_size(ctx);
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
  for (int64_t r = 0; r < m; ++r) {
    float* row = rs + r * d;
    for (int64_t i = 0; i < d; ++i) row[i] += xs[r * d + i];
    norm_row(os + r * d, row, ws, d, eps);
  }
}

}  // namespace troupe::kernels::cpu
