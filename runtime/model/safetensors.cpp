#include "runtime/model/safetensors.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

#include "kernels/base/dequant.h"
#include "runtime/model/model_loader.h"

namespace troupe {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// A header is JSON text; anything this large is a corrupt length field.
constexpr uint64_t k_max_header = 100ull << 20;

safetensors_entry parse_entry(const std::string& file, const std::string& name, const json& j,
                              const uint8_t* data, uint64_t data_size) {
  auto bad = [&](const std::string& what) { return load_error(file + ": tensor '" + name + "': " + what); };
  if (!j.is_object()) throw bad("header entry is not an object");
  safetensors_entry e;
  e.name = name;
  if (!j.contains("dtype") || !j["dtype"].is_string()) throw bad("missing or invalid 'dtype'");
  e.dtype = j["dtype"].get<std::string>();
  if (!j.contains("shape") || !j["shape"].is_array()) throw bad("missing or invalid 'shape'");
  int64_t numel = 1;
  for (const auto& d : j["shape"]) {
    if (!d.is_number_unsigned()) throw bad("shape has a non-integer or negative dimension");
    const uint64_t v = d.get<uint64_t>();
    if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
        __builtin_mul_overflow(numel, static_cast<int64_t>(v), &numel))
      throw bad("shape is too large");
    e.shape.push_back(static_cast<int64_t>(v));
  }
  const auto& off = j.contains("data_offsets") ? j["data_offsets"] : json();
  if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
    throw bad("missing or invalid 'data_offsets'");
  const uint64_t begin = off[0].get<uint64_t>(), end = off[1].get<uint64_t>();
  if (begin > end || end > data_size)
    throw bad("data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
              "] lie outside the data section of " + std::to_string(data_size) + " bytes");
  const size_t es = safetensors_dtype_size(e.dtype);
  uint64_t need = 0;  // a product past 2^64 must not wrap around to the bytes the entry holds
  if (es != 0 && __builtin_mul_overflow(static_cast<uint64_t>(numel), static_cast<uint64_t>(es), &need))
    throw bad("shape is too large for dtype " + e.dtype);
  if (es != 0 && (end - begin) != need)
    throw bad("holds " + std::to_string(end - begin) + " bytes, but shape and dtype " + e.dtype + " need " +
              std::to_string(need));
  e.data = data + begin;
  e.bytes = static_cast<size_t>(end - begin);
  return e;
}

}  // namespace

int64_t safetensors_entry::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

size_t safetensors_dtype_size(const std::string& dtype) {
  if (dtype == "F64" || dtype == "I64" || dtype == "U64") return 8;
  if (dtype == "F32" || dtype == "I32" || dtype == "U32") return 4;
  if (dtype == "F16" || dtype == "BF16" || dtype == "I16" || dtype == "U16") return 2;
  if (dtype == "I8" || dtype == "U8" || dtype == "BOOL" || dtype == "F8_E4M3" || dtype == "F8_E5M2") return 1;
  return 0;
}

safetensors_file::safetensors_file(const std::string& path) : map_(path) { parse(); }

void safetensors_file::parse() {
  const std::string& file = path();
  if (map_.size() < 8) throw load_error(file + ": truncated while reading the header length");
  uint64_t n = 0;
  std::memcpy(&n, map_.data(), 8);
  if (n > map_.size() - 8 || n > k_max_header)
    throw load_error(file + ": header length " + std::to_string(n) + " overflows the file (" +
                     std::to_string(map_.size()) + " bytes)");
  json header;
  try {
    header = json::parse(map_.data() + 8, map_.data() + 8 + n);
  } catch (const json::exception& e) {
    throw load_error(file + ": header is not valid JSON: " + e.what());
  }
  if (!header.is_object()) throw load_error(file + ": header is not a JSON object");
  const uint8_t* data = map_.data() + 8 + n;
  const uint64_t data_size = map_.size() - 8 - n;
  for (const auto& [name, j] : header.items()) {
    if (name == "__metadata__") continue;
    entries_.emplace(name, parse_entry(file, name, j, data, data_size));
  }
}

const safetensors_entry* safetensors_file::find(const std::string& name) const {
  auto it = entries_.find(name);
  return it == entries_.end() ? nullptr : &it->second;
}

safetensors_set::safetensors_set(const std::string& dir) : dir_(dir) {
  const fs::path index = fs::path(dir) / "model.safetensors.index.json";
  const fs::path single = fs::path(dir) / "model.safetensors";
  if (fs::exists(index)) {
    json j;
    try {
      std::ifstream in(index);
      j = json::parse(in);
    } catch (const json::exception& e) {
      throw load_error(index.string() + ": not valid JSON: " + e.what());
    }
    if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
      throw load_error(index.string() + ": missing key 'weight_map'");
    std::map<std::string, size_t> shard_index;
    for (const auto& [name, shard] : j["weight_map"].items()) {
      if (!shard.is_string()) throw load_error(index.string() + ": weight_map['" + name + "'] is not a string");
      const std::string s = shard.get<std::string>();
      if (s.find('/') != std::string::npos || s.find("..") != std::string::npos)
        throw load_error(index.string() + ": weight_map['" + name + "'] names a file outside the directory");
      auto [it, added] = shard_index.emplace(s, files_.size());
      if (added) files_.push_back(std::make_unique<safetensors_file>((fs::path(dir) / s).string()));
      if (!files_[it->second]->find(name))
        throw load_error(files_[it->second]->path() + ": missing tensor '" + name + "' listed in " + index.string());
      where_[name] = it->second;
    }
  } else if (fs::exists(single)) {
    files_.push_back(std::make_unique<safetensors_file>(single.string()));
    for (const auto& kv : files_[0]->entries()) where_[kv.first] = 0;
  } else {
    throw load_error(dir + ": no model.safetensors or model.safetensors.index.json");
  }
}

const safetensors_entry* safetensors_set::find(const std::string& name) const {
  auto it = where_.find(name);
  return it == where_.end() ? nullptr : files_[it->second]->find(name);
}

std::string safetensors_set::file_of(const std::string& name) const {
  auto it = where_.find(name);
  return it == where_.end() ? std::string() : files_[it->second]->path();
}

std::vector<const safetensors_entry*> safetensors_set::all() const {
  std::vector<const safetensors_entry*> out;
  for (const auto& kv : where_) out.push_back(files_[kv.second]->find(kv.first));
  return out;
}

tensor safetensors_to_f32(const safetensors_entry& e, const std::string& file) {
  ggml_type t;
  if (e.dtype == "F32") t = ggml_type::f32;
  else if (e.dtype == "F16") t = ggml_type::f16;
  else if (e.dtype == "BF16") t = ggml_type::bf16;
  else throw load_error(file + ": tensor '" + e.name + "' has unsupported dtype " + e.dtype + " (F32, F16, BF16)");
  if (e.shape.size() > 4) throw load_error(file + ": tensor '" + e.name + "' has rank above 4");
  shape_t s;
  s.rank = static_cast<int>(e.shape.size());
  for (size_t k = 0; k < e.shape.size(); ++k) s.dims[k] = e.shape[k];
  tensor out(s, dtype::f32, backend_kind::cpu);
  const int64_t cols = e.shape.empty() ? 1 : e.shape.back();
  const int64_t rows = cols == 0 ? 0 : e.numel() / cols;
  if (e.numel() > 0) dequantize_rows(t, e.data, out.f32(), rows, cols);
  return out;
}

}  // namespace troupe
