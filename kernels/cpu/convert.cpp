// CPU conversions between f32, f16 and bf16 (round to nearest even) and the random-weight
// fills; the references for kernels/cuda/convert.cu.
#include "kernels/convert.h"

#include <cmath>
#include <cstring>
#include <string>

#include "kernels/cpu/op_checks.h"
#include "kernels/base/dequant.h"

namespace troupe::kernels::cpu {

namespace {

uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);  // NaN stays NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

uint16_t f32_to_f16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, sizeof x);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t abs = x & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds to inf
  if (abs < 0x38800000u) {  // subnormal or zero in f16
    const float a = std::fabs(f) * 16777216.0f;  // scale by 2^24: f16 subnormal unit = 2^-24
    return static_cast<uint16_t>(sign | static_cast<uint32_t>(std::nearbyint(a)));
  }
  uint32_t m = abs + 0xfffu + ((abs >> 13) & 1u);  // round mantissa to 10 bits, nearest even
  return static_cast<uint16_t>(sign | ((m - 0x38000000u) >> 13));
}

float load(const tensor_view& t, int64_t i) {
  switch (t.type) {
    case dtype::f32: return static_cast<const float*>(t.data)[i];
    case dtype::f16: return f16_to_f32(static_cast<const uint16_t*>(t.data)[i]);
    case dtype::bf16: return bf16_to_f32(static_cast<const uint16_t*>(t.data)[i]);
    case dtype::i32: break;
  }
  return 0.0f;
}

void store(const tensor_view& t, int64_t i, float v) {
  switch (t.type) {
    case dtype::f32: static_cast<float*>(t.data)[i] = v; return;
    case dtype::f16: static_cast<uint16_t*>(t.data)[i] = f32_to_f16(v); return;
    case dtype::bf16: static_cast<uint16_t*>(t.data)[i] = f32_to_bf16(v); return;
    case dtype::i32: return;
  }
}

void require_float(const char* op, const char* name, const tensor_view& t) {
  require(t.where == backend_kind::cpu, op, std::string(name) + " lives on " + backend_name(t.where) + ", not on the cpu");
  require(t.type != dtype::i32, op, std::string(name) + " is i32, expected f32, f16 or bf16");
  require(t.data != nullptr || t.numel() == 0, op, std::string(name) + " has no data");
}

}  // namespace

void convert(const op_context& ctx, tensor_view out, tensor_view in) {
  require_float("convert", "out", out);
  require_float("convert", "in", in);
  require(out.numel() == in.numel(), "convert",
          "out " + out.shape.str() + " and in " + in.shape.str() + " differ in element count");
  const int64_t n = in.numel();
  const int threads = team_size(ctx);
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1 && n > 65536)
  for (int64_t i = 0; i < n; ++i) store(out, i, load(in, i));
}

void fill_random(const op_context& ctx, tensor_view out, uint64_t seed, float stddev, int64_t first,
                 int64_t stride) {
  require_float("fill_random", "out", out);
  const float scale = stddev * std::sqrt(3.0f);
  const int64_t n = out.numel();
  const int64_t cols = out.shape.rank > 0 ? out.shape[out.shape.rank - 1] : 1;
  const int64_t st = stride > 0 ? stride : cols;
  const int threads = team_size(ctx);
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1 && n > 65536)
  for (int64_t i = 0; i < n; ++i) {
    const int64_t r = cols > 0 ? i / cols : 0, c = cols > 0 ? i % cols : 0;
    store(out, i, random_unit(seed, static_cast<uint64_t>(first + r * st + c)) * scale);
  }
}

void fill_value(const op_context& ctx, tensor_view out, float value) {
  require_float("fill_value", "out", out);
  const int64_t n = out.numel();
  for (int64_t i = 0; i < n; ++i) store(out, i, value);
}

}  // namespace troupe::kernels::cpu
