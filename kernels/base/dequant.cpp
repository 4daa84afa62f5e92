#include "kernels/base/dequant.h"

#include <array>
#include <cstring>
#include <stdexcept>

namespace troupe {
namespace {

struct type_entry {
  uint32_t id;
  ggml_type_traits traits;
};

// Block sizes and bytes as in ggml (and the gguf Python package's GGML_QUANT_SIZES).
constexpr type_entry k_types[] = {
    {0, {"F32", 1, 4}},          {1, {"F16", 1, 2}},          {2, {"Q4_0", 32, 18}},
    {3, {"Q4_1", 32, 20}},       {6, {"Q5_0", 32, 22}},       {7, {"Q5_1", 32, 24}},
    {8, {"Q8_0", 32, 34}},       {9, {"Q8_1", 32, 40}},       {10, {"Q2_K", 256, 84}},
    {11, {"Q3_K", 256, 110}},    {12, {"Q4_K", 256, 144}},    {13, {"Q5_K", 256, 176}},
    {14, {"Q6_K", 256, 210}},    {15, {"Q8_K", 256, 292}},    {16, {"IQ2_XXS", 256, 66}},
    {17, {"IQ2_XS", 256, 74}},   {18, {"IQ3_XXS", 256, 98}},  {19, {"IQ1_S", 256, 50}},
    {20, {"IQ4_NL", 32, 18}},    {21, {"IQ3_S", 256, 110}},   {22, {"IQ2_S", 256, 82}},
    {23, {"IQ4_XS", 256, 136}},  {24, {"I8", 1, 1}},          {25, {"I16", 1, 2}},
    {26, {"I32", 1, 4}},         {27, {"I64", 1, 8}},         {28, {"F64", 1, 8}},
    {29, {"IQ1_M", 256, 56}},    {30, {"BF16", 1, 2}},        {34, {"TQ1_0", 256, 54}},
    {35, {"TQ2_0", 256, 66}},    {39, {"MXFP4", 32, 17}},     {40, {"NVFP4", 64, 36}},
    {41, {"Q1_0", 128, 18}},
};

std::array<float, 65536> make_f16_table() {
  std::array<float, 65536> t{};
  for (uint32_t h = 0; h < 65536; ++h) {
    uint32_t sign = (h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0x1f) {
      bits = sign | 0x7f800000u | (mant << 13);
    } else if (exp != 0) {
      bits = sign | ((exp + 112) << 23) | (mant << 13);
    } else if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalize
      int e = -1;
      do {
        ++e;
        mant <<= 1;
      } while ((mant & 0x400u) == 0);
      bits = sign | (static_cast<uint32_t>(112 - e) << 23) | ((mant & 0x3ffu) << 13);
    }
    std::memcpy(&t[h], &bits, 4);
  }
  return t;
}

const std::array<float, 65536>& f16_table() {
  static const std::array<float, 65536> t = make_f16_table();
  return t;
}

inline uint16_t rd16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}
inline float rdh(const uint8_t* p) { return f16_table()[rd16(p)]; }

void deq_q4_0(const uint8_t* b, float* y) {
  const float d = rdh(b);
  const uint8_t* qs = b + 2;
  for (int j = 0; j < 16; ++j) {
    y[j] = static_cast<float>((qs[j] & 0x0f) - 8) * d;
    y[j + 16] = static_cast<float>((qs[j] >> 4) - 8) * d;
  }
}

void deq_q4_1(const uint8_t* b, float* y) {
  const float d = rdh(b), m = rdh(b + 2);
  const uint8_t* qs = b + 4;
  for (int j = 0; j < 16; ++j) {
    y[j] = static_cast<float>(qs[j] & 0x0f) * d + m;
    y[j + 16] = static_cast<float>(qs[j] >> 4) * d + m;
  }
}

void deq_q5(const uint8_t* b, float* y, bool has_min) {
  const float d = rdh(b);
  const float m = has_min ? rdh(b + 2) : 0.0f;
  const uint8_t* p = b + (has_min ? 4 : 2);
  uint32_t qh;
  std::memcpy(&qh, p, 4);
  const uint8_t* qs = p + 4;
  const int offset = has_min ? 0 : 16;
  for (int j = 0; j < 16; ++j) {
    const int xh0 = static_cast<int>(((qh >> j) << 4) & 0x10);
    const int xh1 = static_cast<int>((qh >> (j + 12)) & 0x10);
    y[j] = static_cast<float>(((qs[j] & 0x0f) | xh0) - offset) * d + m;
    y[j + 16] = static_cast<float>(((qs[j] >> 4) | xh1) - offset) * d + m;
  }
}

void deq_q8_0(const uint8_t* b, float* y) {
  const float d = rdh(b);
  const int8_t* qs = reinterpret_cast<const int8_t*>(b + 2);
  for (int j = 0; j < 32; ++j) y[j] = static_cast<float>(qs[j]) * d;
}

inline void scale_min_k4(int j, const uint8_t* q, uint8_t& d, uint8_t& m) {
  if (j < 4) {
    d = q[j] & 63;
    m = q[j + 4] & 63;
  } else {
    d = static_cast<uint8_t>((q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4));
    m = static_cast<uint8_t>((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

// Q4_K (144 bytes) and Q5_K (176 bytes): f16 d, f16 dmin, 12 bytes of 6-bit scales/mins,
// [Q5_K: 32 bytes of high bits], 128 bytes of nibbles; 8 sub-blocks of 32.
void deq_qk_4_5(const uint8_t* b, float* y, bool five) {
  const float d = rdh(b), dmin = rdh(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* qh = b + 16;
  const uint8_t* q = b + (five ? 48 : 16);
  uint8_t u1 = 1, u2 = 2;
  for (int j = 0, is = 0; j < 256; j += 64, is += 2, q += 32) {
    uint8_t sc, mn;
    scale_min_k4(is, scales, sc, mn);
    const float d1 = d * sc, m1 = dmin * mn;
    scale_min_k4(is + 1, scales, sc, mn);
    const float d2 = d * sc, m2 = dmin * mn;
    for (int l = 0; l < 32; ++l) {
      const int h = five && (qh[l] & u1) ? 16 : 0;
      *y++ = d1 * static_cast<float>((q[l] & 0x0f) + h) - m1;
    }
    for (int l = 0; l < 32; ++l) {
      const int h = five && (qh[l] & u2) ? 16 : 0;
      *y++ = d2 * static_cast<float>((q[l] >> 4) + h) - m2;
    }
    u1 = static_cast<uint8_t>(u1 << 2);
    u2 = static_cast<uint8_t>(u2 << 2);
  }
}

// Q6_K (210 bytes): 128 bytes low nibbles, 64 bytes high 2-bit pairs, 16 int8 scales, f16 d.
void deq_q6_k(const uint8_t* b, float* y) {
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192);
  const float d = rdh(b + 208);
  for (int n = 0; n < 256; n += 128, y += 128, ql += 64, qh += 32, sc += 8) {
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      const int q1 = ((ql[l] & 0x0f) | (((qh[l] >> 0) & 3) << 4)) - 32;
      const int q2 = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) - 32;
      const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      y[l] = d * sc[is] * static_cast<float>(q1);
      y[l + 32] = d * sc[is + 2] * static_cast<float>(q2);
      y[l + 64] = d * sc[is + 4] * static_cast<float>(q3);
      y[l + 96] = d * sc[is + 6] * static_cast<float>(q4);
    }
  }
}

using block_fn = void (*)(const uint8_t*, float*);

block_fn block_decoder(ggml_type t) {
  switch (t) {
    case ggml_type::q4_0: return deq_q4_0;
    case ggml_type::q4_1: return deq_q4_1;
    case ggml_type::q5_0: return [](const uint8_t* b, float* y) { deq_q5(b, y, false); };
    case ggml_type::q5_1: return [](const uint8_t* b, float* y) { deq_q5(b, y, true); };
    case ggml_type::q8_0: return deq_q8_0;
    case ggml_type::q4_k: return [](const uint8_t* b, float* y) { deq_qk_4_5(b, y, false); };
    case ggml_type::q5_k: return [](const uint8_t* b, float* y) { deq_qk_4_5(b, y, true); };
    case ggml_type::q6_k: return deq_q6_k;
    default: return nullptr;
  }
}

}  // namespace

std::optional<ggml_type_traits> ggml_traits(uint32_t id) {
  for (const auto& e : k_types)
    if (e.id == id) return e.traits;
  return std::nullopt;
}

const char* ggml_type_name(ggml_type t) {
  auto tr = ggml_traits(static_cast<uint32_t>(t));
  return tr ? tr->name : "unknown";
}

bool can_dequantize(ggml_type t) {
  return t == ggml_type::f32 || t == ggml_type::f16 || t == ggml_type::bf16 || block_decoder(t) != nullptr;
}

size_t ggml_row_bytes(ggml_type t, int64_t n) {
  auto tr = ggml_traits(static_cast<uint32_t>(t));
  if (!tr) throw std::invalid_argument("unknown ggml type id " + std::to_string(static_cast<uint32_t>(t)));
  return static_cast<size_t>(n / tr->block_size) * tr->block_bytes;
}

float f16_to_f32(uint16_t h) { return f16_table()[h]; }

float bf16_to_f32(uint16_t h) {
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

void dequantize_row(ggml_type t, const void* src, float* dst, int64_t n) {
  const auto* p = static_cast<const uint8_t*>(src);
  switch (t) {
    case ggml_type::f32: std::memcpy(dst, p, static_cast<size_t>(n) * 4); return;
    case ggml_type::f16:
      for (int64_t i = 0; i < n; ++i) dst[i] = rdh(p + 2 * i);
      return;
    case ggml_type::bf16:
      for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(rd16(p + 2 * i));
      return;
    default: break;
  }
  block_fn fn = block_decoder(t);
  if (!fn) throw std::invalid_argument(std::string("cannot dequantize ggml type ") + ggml_type_name(t));
  const auto tr = *ggml_traits(static_cast<uint32_t>(t));
  if (n % tr.block_size != 0)
    throw std::invalid_argument(std::string(tr.name) + ": row of " + std::to_string(n) +
                                " elements is not a multiple of the block size " +
                                std::to_string(tr.block_size));
  for (int64_t b = 0; b < n / tr.block_size; ++b) fn(p + b * tr.block_bytes, dst + b * tr.block_size);
}

void dequantize_rows(ggml_type t, const void* src, float* dst, int64_t rows, int64_t cols) {
  if (!can_dequantize(t))
    throw std::invalid_argument(std::string("cannot dequantize ggml type ") + ggml_type_name(t));
  const int64_t block = ggml_traits(static_cast<uint32_t>(t))->block_size;
  if (cols % block != 0)
    throw std::invalid_argument(std::string(ggml_type_name(t)) + ": row of " + std::to_string(cols) +
                                " elements is not a multiple of the block size " + std::to_string(block));
  const size_t row_bytes = ggml_row_bytes(t, cols);
  const auto* p = static_cast<const uint8_t*>(src);
  f16_table();  // build the table before the parallel region
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) dequantize_row(t, p + static_cast<size_t>(r) * row_bytes, dst + r * cols, cols);
}

}  // namespace troupe
