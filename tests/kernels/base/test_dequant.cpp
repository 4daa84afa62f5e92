// Decoding of ggml block formats to f32, on hand-built blocks with known answers and on
// pseudo-random blocks whose expected values come from the gguf Python package.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <vector>

#include "kernels/base/dequant.h"

using namespace troupe;

namespace {

void put_f16(std::vector<uint8_t>& b, size_t off, uint16_t h) {
  b[off] = static_cast<uint8_t>(h & 0xff);
  b[off + 1] = static_cast<uint8_t>(h >> 8);
}

/// Deterministic bytes: the LCG s = s * 1103515245 + 12345 (mod 2^32), byte = (s >> 16) & 0xff,
/// seed 12345; the Python reference values below were computed from the same bytes.
std::vector<uint8_t> lcg_bytes(size_t n) {
  std::vector<uint8_t> out(n);
  uint32_t s = 12345;
  for (auto& b : out) {
    s = s * 1103515245u + 12345u;
    b = static_cast<uint8_t>((s >> 16) & 0xff);
  }
  return out;
}

std::vector<float> decode(ggml_type t, const std::vector<uint8_t>& block, int64_t n) {
  std::vector<float> y(static_cast<size_t>(n));
  dequantize_row(t, block.data(), y.data(), n);
  return y;
}

}  // namespace

TEST_CASE("half and bfloat16 values decode exactly, including subnormals and infinities", "[loader][dequant]") {
  CHECK(f16_to_f32(0x3C00) == 1.0f);
  CHECK(f16_to_f32(0xC000) == -2.0f);
  CHECK(f16_to_f32(0x3800) == 0.5f);
  CHECK(f16_to_f32(0x7BFF) == 65504.0f);
  CHECK(f16_to_f32(0x0001) == std::ldexp(1.0f, -24));
  CHECK(f16_to_f32(0x03FF) == 1023.0f * std::ldexp(1.0f, -24));
  CHECK(f16_to_f32(0x8000) == 0.0f);
  CHECK(std::signbit(f16_to_f32(0x8000)));
  CHECK(f16_to_f32(0x7C00) == std::numeric_limits<float>::infinity());
  CHECK(std::isnan(f16_to_f32(0x7E00)));
  CHECK(bf16_to_f32(0x3F80) == 1.0f);
  CHECK(bf16_to_f32(0xC040) == -3.0f);
}

TEST_CASE("a Q4_1 block decodes low nibbles to elements 0..15 and high nibbles to 16..31", "[loader][dequant]") {
  std::vector<uint8_t> b(20);
  put_f16(b, 0, 0x3800);  // d = 0.5
  put_f16(b, 2, 0xBC00);  // m = -1
  for (int j = 0; j < 16; ++j) b[4 + j] = static_cast<uint8_t>(j | ((15 - j) << 4));
  const auto y = decode(ggml_type::q4_1, b, 32);
  for (int j = 0; j < 16; ++j) {
    CHECK(y[j] == 0.5f * j - 1.0f);
    CHECK(y[j + 16] == 0.5f * (15 - j) - 1.0f);
  }
}

TEST_CASE("a Q8_0 block decodes to its signed bytes times the scale", "[loader][dequant]") {
  std::vector<uint8_t> b(34);
  put_f16(b, 0, 0x3400);  // d = 0.25
  for (int j = 0; j < 32; ++j) b[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(j - 16));
  const auto y = decode(ggml_type::q8_0, b, 32);
  for (int j = 0; j < 32; ++j) CHECK(y[j] == 0.25f * (j - 16));
}

TEST_CASE("a Q4_0 block decodes nibbles offset by 8 times the scale", "[loader][dequant]") {
  std::vector<uint8_t> b(18);
  put_f16(b, 0, 0x4000);  // d = 2
  for (int j = 0; j < 16; ++j) b[2 + j] = static_cast<uint8_t>(j | (((j + 3) & 15) << 4));
  const auto y = decode(ggml_type::q4_0, b, 32);
  for (int j = 0; j < 16; ++j) {
    CHECK(y[j] == 2.0f * (j - 8));
    CHECK(y[j + 16] == 2.0f * (((j + 3) & 15) - 8));
  }
}

TEST_CASE("Q5 and K-quant blocks match the gguf Python package's dequantization", "[loader][dequant]") {
  // Expected values: gguf.quants.dequantize (gguf 0.x, numpy) on lcg_bytes(block bytes) with the
  // f16 fields overwritten as below (d = 0.125, dmin = 0.0625, m = -0.5).
  struct ref {
    ggml_type type;
    size_t bytes;
    int64_t n;
    std::vector<std::pair<size_t, uint16_t>> f16;
    std::vector<std::pair<int, float>> expect;
  };
  const std::vector<ref> refs = {
      {ggml_type::q5_0, 22, 32, {{0, 0x3000}}, {{0, 1.625f}, {1, -0.75f}, {15, 1.125f}, {16, 0.125f}, {17, 0.625f}, {31, 0.125f}}},
      {ggml_type::q5_1, 24, 32, {{0, 0x3000}, {2, 0xB800}}, {{0, 2.75f}, {1, 2.125f}, {15, 1.5f}, {16, 3.125f}, {17, 1.25f}, {31, 0.25f}}},
      {ggml_type::q4_k, 144, 256, {{0, 0x3000}, {2, 0x2C00}},
       {{0, 33.25f}, {1, 44.875f}, {31, 29.375f}, {32, 37.0625f}, {63, 20.1875f}, {64, 15.375f}, {100, 4.8125f},
        {127, 30.8125f}, {128, 3.9375f}, {200, 0.9375f}, {255, 29.5625f}}},
      {ggml_type::q5_k, 176, 256, {{0, 0x3000}, {2, 0x2C00}},
       {{0, 79.75f}, {1, 17.75f}, {31, 44.875f}, {32, 48.3125f}, {63, 53.9375f}, {64, 11.75f}, {100, 69.8125f},
        {127, 92.5625f}, {128, 47.6875f}, {200, -1.3125f}, {255, 9.5625f}}},
      {ggml_type::q6_k, 210, 256, {{208, 0x3000}},
       {{0, -378.0f}, {1, -54.0f}, {31, 310.75f}, {32, 180.0f}, {63, -15.75f}, {64, -304.5f}, {100, -315.375f},
        {127, 217.0f}, {128, 157.5f}, {200, 0.0f}, {255, 34.875f}}},
  };
  for (const auto& r : refs) {
    INFO(ggml_type_name(r.type));
    auto b = lcg_bytes(r.bytes);
    for (const auto& [off, h] : r.f16) put_f16(b, off, h);
    const auto y = decode(r.type, b, r.n);
    for (const auto& [i, v] : r.expect) {
      INFO("element " << i);
      CHECK(y[static_cast<size_t>(i)] == Approx(v).margin(1e-6));
    }
  }
}

TEST_CASE("dequantize_rows decodes every row like dequantize_row", "[loader][dequant]") {
  const int64_t rows = 7, cols = 64;
  auto bytes = lcg_bytes(static_cast<size_t>(rows) * ggml_row_bytes(ggml_type::q8_0, cols));
  for (size_t off = 0; off < bytes.size(); off += 34) put_f16(bytes, off, 0x2E00);
  std::vector<float> all(static_cast<size_t>(rows * cols));
  dequantize_rows(ggml_type::q8_0, bytes.data(), all.data(), rows, cols);
  for (int64_t r = 0; r < rows; ++r) {
    std::vector<float> one(static_cast<size_t>(cols));
    dequantize_row(ggml_type::q8_0, bytes.data() + r * 68, one.data(), cols);
    CHECK(std::memcmp(one.data(), all.data() + r * cols, one.size() * sizeof(float)) == 0);
  }
}

TEST_CASE("type facts follow ggml and undecodable input is refused", "[loader][dequant]") {
  REQUIRE(ggml_traits(3));
  CHECK(std::string(ggml_traits(3)->name) == "Q4_1");
  CHECK(ggml_traits(3)->block_bytes == 20);
  CHECK(ggml_traits(14)->block_bytes == 210);
  CHECK_FALSE(ggml_traits(4));
  CHECK_FALSE(ggml_traits(999));
  CHECK(ggml_row_bytes(ggml_type::q8_0, 576) == 18 * 34);
  CHECK(can_dequantize(ggml_type::bf16));
  CHECK_FALSE(can_dequantize(ggml_type::iq2_xxs));
  std::vector<uint8_t> b(66);
  std::vector<float> y(256);
  CHECK_THROWS_AS(dequantize_rows(ggml_type::iq2_xxs, b.data(), y.data(), 1, 256), std::invalid_argument);
  CHECK_THROWS_WITH(dequantize_rows(ggml_type::q8_0, b.data(), y.data(), 1, 40),
                    Catch::Contains("not a multiple of the block size 32"));
}
