#pragma once
/// ggml tensor storage types and their decoding to f32 (block layouts as in ggml).
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

namespace troupe {

/// ggml's tensor type ids, as stored in GGUF tensor infos.
enum class ggml_type : uint32_t {
  f32 = 0, f16 = 1, q4_0 = 2, q4_1 = 3, q5_0 = 6, q5_1 = 7, q8_0 = 8, q8_1 = 9,
  q2_k = 10, q3_k = 11, q4_k = 12, q5_k = 13, q6_k = 14, q8_k = 15,
  iq2_xxs = 16, iq2_xs = 17, iq3_xxs = 18, iq1_s = 19, iq4_nl = 20, iq3_s = 21, iq2_s = 22,
  iq4_xs = 23, i8 = 24, i16 = 25, i32 = 26, i64 = 27, f64 = 28, iq1_m = 29, bf16 = 30,
  tq1_0 = 34, tq2_0 = 35, mxfp4 = 39, nvfp4 = 40, q1_0 = 41,
};

/// Storage facts of one ggml type.
struct ggml_type_traits {
  const char* name;     ///< upper-case ggml name ("Q4_1")
  int64_t block_size;   ///< elements per block
  size_t block_bytes;   ///< bytes per block
};

/// Traits of the type with id `id`, or nullopt when the id is unknown.
std::optional<ggml_type_traits> ggml_traits(uint32_t id);
/// Upper-case name of `t` ("Q4_1"); "unknown" for an id not in the table.
const char* ggml_type_name(ggml_type t);
/// Whether dequantize_row / dequantize_rows can decode `t`.
bool can_dequantize(ggml_type t);
/// Bytes taken by `n` elements of `t` (`n` must be a multiple of the block size).
size_t ggml_row_bytes(ggml_type t, int64_t n);

/// IEEE half -> float (exact, handles subnormals, inf and NaN).
float f16_to_f32(uint16_t h);
/// bfloat16 -> float.
float bf16_to_f32(uint16_t h);

/// Decodes `n` elements of type `t` at `src` into `dst`. `n` must be a multiple of the
/// block size; throws std::invalid_argument for a type that cannot be decoded.
void dequantize_row(ggml_type t, const void* src, float* dst, int64_t n);

/// Decodes `rows` rows of `cols` elements each (rows contiguous, each ggml_row_bytes(t, cols)
/// long) into `dst` [rows, cols]; parallel over rows (OpenMP).
void dequantize_rows(ggml_type t, const void* src, float* dst, int64_t rows, int64_t cols);

}  // namespace troupe
