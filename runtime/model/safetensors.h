#pragma once
/// safetensors reader (single file and sharded via model.safetensors.index.json),
/// memory-mapped and bounds-checked; decodes F32 / F16 / BF16 to f32.
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "runtime/model/mapped_file.h"
#include "kernels/base/tensor.h"

namespace troupe {

/// One tensor entry of a safetensors header.
struct safetensors_entry {
  std::string name;             ///< e.g. "model.layers.0.self_attn.q_proj.weight"
  std::string dtype;            ///< as stored: "F32", "F16", "BF16", ...
  std::vector<int64_t> shape;   ///< row-major, outermost first
  const uint8_t* data = nullptr;  ///< into the file map
  size_t bytes = 0;             ///< stored size

  /// Element count.
  int64_t numel() const;
};

/// One mapped .safetensors file with its parsed header. Throws troupe::load_error naming the
/// file, the tensor and the problem for a malformed header or out-of-bounds data.
class safetensors_file {
 public:
  /// Maps and parses `path`.
  explicit safetensors_file(const std::string& path);
  /// The path the file was opened with.
  const std::string& path() const { return map_.path(); }
  /// All entries, by name.
  const std::map<std::string, safetensors_entry>& entries() const { return entries_; }
  /// The entry `name`, or nullptr.
  const safetensors_entry* find(const std::string& name) const;

 private:
  void parse();
  mapped_file map_;
  std::map<std::string, safetensors_entry> entries_;
};

/// The weights of a Hugging Face model directory: model.safetensors, or the shards listed
/// in model.safetensors.index.json.
class safetensors_set {
 public:
  /// Opens the weights of `dir`; load_error when neither file is there or a shard is bad.
  explicit safetensors_set(const std::string& dir);
  /// The entry `name` (from whichever shard holds it), or nullptr.
  const safetensors_entry* find(const std::string& name) const;
  /// The file holding `name` (for messages); empty when absent.
  std::string file_of(const std::string& name) const;
  /// Every entry of every shard.
  std::vector<const safetensors_entry*> all() const;
  /// The directory.
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
  std::vector<std::unique_ptr<safetensors_file>> files_;
  std::map<std::string, size_t> where_;  ///< tensor name -> index into files_
};

/// Bytes per element of a safetensors dtype name; 0 when unknown.
size_t safetensors_dtype_size(const std::string& dtype);

/// Decodes `e` (F32 / F16 / BF16) into a new f32 host tensor of its shape; load_error
/// naming `file` and the tensor for another dtype or a rank above 4.
tensor safetensors_to_f32(const safetensors_entry& e, const std::string& file);

}  // namespace troupe
