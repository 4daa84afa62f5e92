#pragma once
/// Tensors and buffers: the one data type every op, loader and shard shares.
#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <stdexcept>
#include <string>

namespace troupe {

/// Element types an op can compute in.
enum class dtype : uint8_t { f32, f16, bf16, i32 };

/// Where a buffer lives and which backend runs the ops on it.
enum class backend_kind : uint8_t { cpu, cuda };

/// Bytes per element of `t`.
size_t dtype_size(dtype t);
/// Lower-case name of `t` ("f32", ...).
const char* dtype_name(dtype t);
/// Lower-case name of `b` ("cpu", "cuda").
const char* backend_name(backend_kind b);

/// Owning, contiguous, aligned memory on one device. RAII, move-only.
class buffer {
 public:
  buffer() = default;
  /// Allocates `bytes` on `where` (64-byte aligned on the host).
  buffer(size_t bytes, backend_kind where);
  buffer(const buffer&) = delete;
  buffer& operator=(const buffer&) = delete;
  buffer(buffer&& o) noexcept;
  buffer& operator=(buffer&& o) noexcept;
  ~buffer();

  void* data() { return data_; }
  const void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  backend_kind where() const { return where_; }

 private:
  void release() noexcept;
  void* data_ = nullptr;
  size_t bytes_ = 0;
  backend_kind where_ = backend_kind::cpu;
};

/// Shape of a row-major tensor, rank 0..4.
struct shape_t {
  std::array<int64_t, 4> dims{0, 0, 0, 0};
  int rank = 0;
  shape_t() = default;
  shape_t(std::initializer_list<int64_t> d);
  int64_t numel() const;
  int64_t operator[](int i) const { return dims[static_cast<size_t>(i)]; }
  bool operator==(const shape_t& o) const;
  std::string str() const;
};

/// Non-owning view of contiguous row-major data on one device.
struct tensor_view {
  void* data = nullptr;
  dtype type = dtype::f32;
  backend_kind where = backend_kind::cpu;
  shape_t shape;

  int64_t numel() const { return shape.numel(); }
  bool empty() const { return data == nullptr || numel() == 0; }
  float* f32() const { return static_cast<float*>(data); }
  int32_t* i32() const { return static_cast<int32_t*>(data); }
  /// Rows [begin, begin+count) along dimension 0.
  tensor_view rows(int64_t begin, int64_t count) const;
};

/// An owning tensor: a buffer plus its shape and type. Move-only.
class tensor {
 public:
  tensor() = default;
  tensor(shape_t s, dtype t, backend_kind where);
  tensor(tensor&&) noexcept = default;
  tensor& operator=(tensor&&) noexcept = default;

  tensor_view view() const;
  const shape_t& shape() const { return shape_; }
  dtype type() const { return type_; }
  backend_kind where() const { return buf_.where(); }
  int64_t numel() const { return shape_.numel(); }
  bool empty() const { return buf_.data() == nullptr; }
  float* f32() { return static_cast<float*>(buf_.data()); }
  const float* f32() const { return static_cast<const float*>(buf_.data()); }
  size_t bytes() const { return buf_.bytes(); }

 private:
  buffer buf_;
  shape_t shape_;
  dtype type_ = dtype::f32;
};

}  // namespace troupe
