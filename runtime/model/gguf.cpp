#include "runtime/model/gguf.h"

#include <cstring>
#include <limits>

#include "runtime/model/model_loader.h"

namespace troupe {
namespace {

constexpr int k_max_dims = 4;
constexpr int k_max_array_depth = 8;

bool is_int_type(gguf_type t) {
  switch (t) {
    case gguf_type::uint8: case gguf_type::int8: case gguf_type::uint16: case gguf_type::int16:
    case gguf_type::uint32: case gguf_type::int32: case gguf_type::uint64: case gguf_type::int64:
    case gguf_type::boolean:
      return true;
    default:
      return false;
  }
}

bool is_float_type(gguf_type t) { return t == gguf_type::float32 || t == gguf_type::float64; }

bool is_known_type(uint32_t t) { return t <= static_cast<uint32_t>(gguf_type::float64); }

/// Minimum bytes one value of `t` takes in the file (for sanity-checking array counts).
size_t min_value_bytes(gguf_type t) {
  switch (t) {
    case gguf_type::uint8: case gguf_type::int8: case gguf_type::boolean: return 1;
    case gguf_type::uint16: case gguf_type::int16: return 2;
    case gguf_type::uint32: case gguf_type::int32: case gguf_type::float32: return 4;
    case gguf_type::string: case gguf_type::uint64: case gguf_type::int64: case gguf_type::float64: return 8;
    case gguf_type::array: return 12;
  }
  return 1;
}

/// Bounds-checked little-endian cursor over the mapped file.
class reader {
 public:
  reader(const uint8_t* data, size_t size, const std::string& file) : p_(data), n_(size), file_(file) {}

  /// What is being read, for the truncation message.
  void context(std::string what) { ctx_ = std::move(what); }
  size_t pos() const { return pos_; }
  size_t remaining() const { return n_ - pos_; }

  [[noreturn]] void truncated() const { throw load_error(file_ + ": truncated while reading " + ctx_); }

  void need(uint64_t k) const {
    if (k > remaining()) truncated();
  }

  template <class T>
  T get() {
    need(sizeof(T));
    T v;
    std::memcpy(&v, p_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  std::string str() {
    const uint64_t len = get<uint64_t>();
    need(len);
    std::string s(reinterpret_cast<const char*>(p_ + pos_), static_cast<size_t>(len));
    pos_ += static_cast<size_t>(len);
    return s;
  }

 private:
  const uint8_t* p_;
  size_t n_;
  size_t pos_ = 0;
  const std::string& file_;
  std::string ctx_ = "header";
};

void read_scalar(reader& r, gguf_type t, gguf_value& v) {
  switch (t) {
    case gguf_type::uint8: v.i = r.get<uint8_t>(); break;
    case gguf_type::int8: v.i = r.get<int8_t>(); break;
    case gguf_type::uint16: v.i = r.get<uint16_t>(); break;
    case gguf_type::int16: v.i = r.get<int16_t>(); break;
    case gguf_type::uint32: v.i = r.get<uint32_t>(); break;
    case gguf_type::int32: v.i = r.get<int32_t>(); break;
    case gguf_type::uint64: v.i = static_cast<int64_t>(r.get<uint64_t>()); break;
    case gguf_type::int64: v.i = r.get<int64_t>(); break;
    case gguf_type::boolean: v.i = r.get<uint8_t>() != 0; break;
    case gguf_type::float32: v.f = r.get<float>(); break;
    case gguf_type::float64: v.f = r.get<double>(); break;
    case gguf_type::string: v.s = r.str(); break;
    case gguf_type::array: break;
  }
}

gguf_value read_value(reader& r, gguf_type t, const std::string& file, const std::string& key, int depth);

void read_array(reader& r, gguf_value& v, const std::string& file, const std::string& key, int depth) {
  const uint32_t et = r.get<uint32_t>();
  if (!is_known_type(et))
    throw load_error(file + ": metadata key '" + key + "' is an array of unknown value type " + std::to_string(et));
  if (depth >= k_max_array_depth)
    throw load_error(file + ": metadata key '" + key + "' nests arrays too deeply");
  v.elem_type = static_cast<gguf_type>(et);
  v.length = r.get<uint64_t>();
  if (v.length > r.remaining() / min_value_bytes(v.elem_type)) r.truncated();
  const size_t n = static_cast<size_t>(v.length);
  gguf_value elem;
  if (is_int_type(v.elem_type)) {
    v.ints.resize(n);
    for (size_t k = 0; k < n; ++k) {
      read_scalar(r, v.elem_type, elem);
      v.ints[k] = elem.i;
    }
  } else if (is_float_type(v.elem_type)) {
    v.floats.resize(n);
    for (size_t k = 0; k < n; ++k) {
      read_scalar(r, v.elem_type, elem);
      v.floats[k] = elem.f;
    }
  } else if (v.elem_type == gguf_type::string) {
    v.strings.resize(n);
    for (size_t k = 0; k < n; ++k) v.strings[k] = r.str();
  } else {
    v.arrays.reserve(n);
    for (size_t k = 0; k < n; ++k) v.arrays.push_back(read_value(r, gguf_type::array, file, key, depth + 1));
  }
}

gguf_value read_value(reader& r, gguf_type t, const std::string& file, const std::string& key, int depth) {
  gguf_value v;
  v.type = t;
  if (t == gguf_type::array)
    read_array(r, v, file, key, depth);
  else
    read_scalar(r, t, v);
  return v;
}

gguf_tensor_info read_tensor_info(reader& r, uint64_t index, const std::string& file) {
  gguf_tensor_info ti;
  r.context("tensor info " + std::to_string(index));
  ti.name = r.str();
  r.context("tensor info " + std::to_string(index) + " (" + ti.name + ")");
  const uint32_t n_dims = r.get<uint32_t>();
  if (n_dims == 0 || n_dims > k_max_dims)
    throw load_error(file + ": tensor '" + ti.name + "' has " + std::to_string(n_dims) +
                     " dimensions (1 to " + std::to_string(k_max_dims) + " supported)");
  for (uint32_t d = 0; d < n_dims; ++d) {
    const uint64_t ne = r.get<uint64_t>();
    if (ne > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      throw load_error(file + ": tensor '" + ti.name + "' has an invalid dimension " + std::to_string(ne));
    ti.dims.push_back(static_cast<int64_t>(ne));
  }
  const uint32_t type_id = r.get<uint32_t>();
  if (!ggml_traits(type_id))
    throw load_error(file + ": tensor '" + ti.name + "' has unknown tensor type id " + std::to_string(type_id));
  ti.type = static_cast<ggml_type>(type_id);
  ti.offset = r.get<uint64_t>();
  return ti;
}

}  // namespace

const char* gguf_type_name(gguf_type t) {
  static const char* const names[] = {"uint8", "int8",    "uint16", "int16", "uint32", "int32", "float32",
                                      "bool",  "string",  "array",  "uint64", "int64", "float64"};
  const auto i = static_cast<uint32_t>(t);
  return i < sizeof(names) / sizeof(names[0]) ? names[i] : "unknown";
}

bool gguf_value::is_integer() const { return is_int_type(type); }
bool gguf_value::is_float() const { return is_float_type(type); }

int64_t gguf_tensor_info::numel() const {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  return n;
}

gguf_file::gguf_file(const std::string& path) : map_(path) { parse(); }

void gguf_file::parse() {
  const std::string& file = path();
  reader r(map_.data(), map_.size(), file);
  r.context("header (magic)");
  const uint32_t magic = r.get<uint32_t>();
  if (std::memcmp(&magic, "GGUF", 4) != 0) throw load_error(file + ": not a GGUF file (bad magic)");
  r.context("header (version)");
  version_ = r.get<uint32_t>();
  if (version_ != 2 && version_ != 3)
    throw load_error(file + ": unsupported GGUF version " + std::to_string(version_) + " (2 and 3 are supported)");
  r.context("header (tensor count)");
  const uint64_t n_tensors = r.get<uint64_t>();
  r.context("header (metadata count)");
  const uint64_t n_kv = r.get<uint64_t>();

  for (uint64_t k = 0; k < n_kv; ++k) {
    r.context("metadata key " + std::to_string(k));
    std::string key = r.str();
    r.context("metadata value " + std::to_string(k) + " ('" + key + "')");
    const uint32_t t = r.get<uint32_t>();
    if (!is_known_type(t))
      throw load_error(file + ": metadata key '" + key + "' has unknown value type " + std::to_string(t));
    gguf_value v = read_value(r, static_cast<gguf_type>(t), file, key, 0);
    if (!kv_.emplace(key, std::move(v)).second) throw load_error(file + ": duplicate metadata key '" + key + "'");
  }

  // Each tensor info takes at least 8 (name) + 4 + 8 + 4 + 8 bytes.
  r.context("tensor infos");
  if (n_tensors > r.remaining() / 32) r.truncated();
  tensors_.reserve(static_cast<size_t>(n_tensors));
  for (uint64_t k = 0; k < n_tensors; ++k) {
    tensors_.push_back(read_tensor_info(r, k, file));
    if (!tensor_index_.emplace(tensors_.back().name, tensors_.size() - 1).second)
      throw load_error(file + ": duplicate tensor '" + tensors_.back().name + "'");
  }

  if (auto a = get_int("general.alignment")) {
    if (*a <= 0 || (*a & (*a - 1)) != 0)
      throw load_error(file + ": general.alignment " + std::to_string(*a) + " is not a power of two");
    alignment_ = static_cast<uint64_t>(*a);
  }
  data_offset_ = (r.pos() + alignment_ - 1) / alignment_ * alignment_;
  place_tensors();
}

void gguf_file::place_tensors() {
  const std::string& file = path();
  for (auto& ti : tensors_) {
    const auto tr = *ggml_traits(static_cast<uint32_t>(ti.type));
    if (ti.dims[0] % tr.block_size != 0)
      throw load_error(file + ": tensor '" + ti.name + "' has row length " + std::to_string(ti.dims[0]) +
                       ", not a multiple of the " + tr.name + " block size " + std::to_string(tr.block_size));
    int64_t numel = 1;
    for (int64_t d : ti.dims)
      if (__builtin_mul_overflow(numel, d, &numel))
        throw load_error(file + ": tensor '" + ti.name + "' has too many elements");
    const uint64_t blocks = static_cast<uint64_t>(numel / tr.block_size);
    if (blocks > std::numeric_limits<uint64_t>::max() / tr.block_bytes)
      throw load_error(file + ": tensor '" + ti.name + "' is too large");
    ti.bytes = static_cast<size_t>(blocks * tr.block_bytes);
    if (ti.offset % alignment_ != 0)
      throw load_error(file + ": tensor '" + ti.name + "' data offset " + std::to_string(ti.offset) +
                       " is not aligned to " + std::to_string(alignment_));
    const uint64_t size = map_.size();
    if (data_offset_ > size || ti.offset > size - data_offset_ || ti.bytes > size - data_offset_ - ti.offset)
      throw load_error(file + ": truncated while reading tensor data of '" + ti.name + "' (needs bytes up to " +
                       std::to_string(data_offset_ + ti.offset + ti.bytes) + ", file has " +
                       std::to_string(size) + ")");
    ti.data = map_.data() + data_offset_ + ti.offset;
  }
}

const gguf_value* gguf_file::find(const std::string& key) const {
  auto it = kv_.find(key);
  return it == kv_.end() ? nullptr : &it->second;
}

namespace {
[[noreturn]] void wrong_type(const std::string& file, const std::string& key, const gguf_value& v,
                             const char* expected) {
  std::string got = gguf_type_name(v.type);
  if (v.type == gguf_type::array) got += std::string(" of ") + gguf_type_name(v.elem_type);
  throw load_error(file + ": metadata key '" + key + "' has type " + got + ", expected " + expected);
}
}  // namespace

std::optional<int64_t> gguf_file::get_int(const std::string& key) const {
  const gguf_value* v = find(key);
  if (!v) return std::nullopt;
  if (!v->is_integer()) wrong_type(path(), key, *v, "an integer");
  return v->i;
}

std::optional<double> gguf_file::get_float(const std::string& key) const {
  const gguf_value* v = find(key);
  if (!v) return std::nullopt;
  if (v->is_float()) return v->f;
  if (v->is_integer()) return static_cast<double>(v->i);
  wrong_type(path(), key, *v, "a number");
}

std::optional<bool> gguf_file::get_bool(const std::string& key) const {
  const gguf_value* v = find(key);
  if (!v) return std::nullopt;
  if (!v->is_integer()) wrong_type(path(), key, *v, "a bool");
  return v->i != 0;
}

std::optional<std::string> gguf_file::get_string(const std::string& key) const {
  const gguf_value* v = find(key);
  if (!v) return std::nullopt;
  if (v->type != gguf_type::string) wrong_type(path(), key, *v, "a string");
  return v->s;
}

const std::vector<int64_t>* gguf_file::get_ints(const std::string& key) const {
  const gguf_value* v = find(key);
  if (!v) return nullptr;
  if (v->type != gguf_type::array || !is_int_type(v->elem_type)) wrong_type(path(), key, *v, "an array of integers");
  return &v->ints;
}

const std::vector<double>* gguf_file::get_floats(const std::string& key) const {
  const gguf_value* v = find(key);
  if (!v) return nullptr;
  if (v->type != gguf_type::array || !is_float_type(v->elem_type)) wrong_type(path(), key, *v, "an array of floats");
  return &v->floats;
}

const std::vector<std::string>* gguf_file::get_strings(const std::string& key) const {
  const gguf_value* v = find(key);
  if (!v) return nullptr;
  if (v->type != gguf_type::array || v->elem_type != gguf_type::string)
    wrong_type(path(), key, *v, "an array of strings");
  return &v->strings;
}

const gguf_tensor_info* gguf_file::find_tensor(const std::string& name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

namespace {
/// Row index mapping for the RoPE permutation: HF row (h, j, i) <-> GGUF row (h, i, j),
/// with j in {0, 1} and i in [0, head_dim/2).
void check_rope_rows(int64_t rows, int n_heads) {
  if (n_heads <= 0 || rows % n_heads != 0 || (rows / n_heads) % 2 != 0)
    throw std::invalid_argument("RoPE permutation: " + std::to_string(rows) + " rows do not split into " +
                                std::to_string(n_heads) + " heads of even size");
}
}  // namespace

void permute_rope_rows(const float* src, float* dst, int64_t rows, int64_t cols, int n_heads) {
  check_rope_rows(rows, n_heads);
  const int64_t hd = rows / n_heads, half = hd / 2;
  for (int64_t h = 0; h < n_heads; ++h)
    for (int64_t j = 0; j < 2; ++j)
      for (int64_t i = 0; i < half; ++i)
        std::memcpy(dst + (h * hd + i * 2 + j) * cols, src + (h * hd + j * half + i) * cols,
                    static_cast<size_t>(cols) * sizeof(float));
}

void unpermute_rope_rows(const float* src, float* dst, int64_t rows, int64_t cols, int n_heads) {
  check_rope_rows(rows, n_heads);
  const int64_t hd = rows / n_heads, half = hd / 2;
  for (int64_t h = 0; h < n_heads; ++h)
    for (int64_t j = 0; j < 2; ++j)
      for (int64_t i = 0; i < half; ++i)
        std::memcpy(dst + (h * hd + j * half + i) * cols, src + (h * hd + i * 2 + j) * cols,
                    static_cast<size_t>(cols) * sizeof(float));
}

}  // namespace troupe
