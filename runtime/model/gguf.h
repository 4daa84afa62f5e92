#pragma once
/// GGUF (v2 and v3) parser: header, metadata, tensor infos, and the data section,
/// read straight from a memory map with every read bounds-checked.
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "kernels/base/dequant.h"
#include "runtime/model/mapped_file.h"

namespace troupe {

/// GGUF metadata value types.
enum class gguf_type : uint32_t {
  uint8 = 0, int8 = 1, uint16 = 2, int16 = 3, uint32 = 4, int32 = 5, float32 = 6,
  boolean = 7, string = 8, array = 9, uint64 = 10, int64 = 11, float64 = 12,
};

/// Lower-case name of `t` ("uint32", "array", ...); "unknown" for an id outside the enum.
const char* gguf_type_name(gguf_type t);

/// One metadata value. Scalars fill one field; arrays fill the vector of their element kind.
struct gguf_value {
  gguf_type type = gguf_type::uint8;       ///< the stored type
  gguf_type elem_type = gguf_type::uint8;  ///< element type (arrays only)
  int64_t i = 0;        ///< integer and bool scalars (uint64 above INT64_MAX: same bits)
  double f = 0.0;       ///< float scalars
  std::string s;        ///< string scalar
  std::vector<int64_t> ints;          ///< integer and bool arrays
  std::vector<double> floats;         ///< float arrays
  std::vector<std::string> strings;   ///< string arrays
  std::vector<gguf_value> arrays;     ///< arrays of arrays
  uint64_t length = 0;                ///< array element count

  /// Whether the value is an integer or bool scalar.
  bool is_integer() const;
  /// Whether the value is a float scalar.
  bool is_float() const;
};

/// One tensor's description from the tensor-info section.
struct gguf_tensor_info {
  std::string name;            ///< e.g. "blk.0.attn_q.weight"
  std::vector<int64_t> dims;   ///< ne[0] (fastest varying, = in_features) first
  ggml_type type = ggml_type::f32;
  uint64_t offset = 0;         ///< from the start of the data section
  size_t bytes = 0;            ///< stored size
  const uint8_t* data = nullptr;  ///< into the file map

  /// Element count.
  int64_t numel() const;
  /// Rows when viewed as a matrix [prod(dims[1..]), dims[0]].
  int64_t rows() const { return dims.empty() || dims[0] == 0 ? 0 : numel() / dims[0]; }
};

/// A parsed, memory-mapped GGUF file. Throws troupe::load_error naming the file and
/// what was being read for a truncated, corrupt or unsupported file.
class gguf_file {
 public:
  /// Maps and parses `path`.
  explicit gguf_file(const std::string& path);

  /// The path the file was opened with.
  const std::string& path() const { return map_.path(); }
  /// Format version (2 or 3).
  uint32_t version() const { return version_; }
  /// Data alignment (general.alignment, default 32).
  uint64_t alignment() const { return alignment_; }
  /// File offset of the data section.
  uint64_t data_offset() const { return data_offset_; }
  /// All metadata, by key.
  const std::map<std::string, gguf_value>& metadata() const { return kv_; }
  /// All tensor infos, in file order.
  const std::vector<gguf_tensor_info>& tensors() const { return tensors_; }

  /// The value of `key`, or nullptr.
  const gguf_value* find(const std::string& key) const;
  /// Integer (or bool) scalar at `key`; nullopt when absent; load_error for another type.
  std::optional<int64_t> get_int(const std::string& key) const;
  /// Float or integer scalar at `key`; nullopt when absent; load_error for another type.
  std::optional<double> get_float(const std::string& key) const;
  /// Bool (or integer) scalar at `key`; nullopt when absent; load_error for another type.
  std::optional<bool> get_bool(const std::string& key) const;
  /// String scalar at `key`; nullopt when absent; load_error for another type.
  std::optional<std::string> get_string(const std::string& key) const;
  /// Integer (or bool) array at `key`; nullptr when absent; load_error for another type.
  const std::vector<int64_t>* get_ints(const std::string& key) const;
  /// Float array at `key`, as doubles; nullptr when absent; load_error for another type.
  const std::vector<double>* get_floats(const std::string& key) const;
  /// String array at `key`; nullptr when absent; load_error for another type.
  const std::vector<std::string>* get_strings(const std::string& key) const;
  /// The tensor named `name`, or nullptr.
  const gguf_tensor_info* find_tensor(const std::string& name) const;

 private:
  void parse();
  void place_tensors();
  mapped_file map_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::map<std::string, gguf_value> kv_;
  std::vector<gguf_tensor_info> tensors_;
  std::map<std::string, size_t> tensor_index_;
};

/// Applies llama.cpp's interleaved-RoPE row permutation (HF order -> GGUF `llama` order):
/// rows viewed as (n_heads, 2, head_dim/2) become (n_heads, head_dim/2, 2).
/// `src` and `dst` are [rows, cols] and must not overlap.
void permute_rope_rows(const float* src, float* dst, int64_t rows, int64_t cols, int n_heads);

/// Inverse of permute_rope_rows (GGUF `llama` order -> HF order).
void unpermute_rope_rows(const float* src, float* dst, int64_t rows, int64_t cols, int n_heads);

}  // namespace troupe
