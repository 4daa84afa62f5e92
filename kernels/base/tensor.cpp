#include "kernels/base/tensor.h"

#include <cstdlib>
#include <cstring>
#include <sstream>
#include <utility>

#ifdef TROUPE_HAVE_CUDA
#include "kernels/cuda/device_memory.h"
#endif

namespace troupe {

size_t dtype_size(dtype t) {
  switch (t) {
    case dtype::f32: return 4;
    case dtype::f16: return 2;
    case dtype::bf16: return 2;
    case dtype::i32: return 4;
  }
  return 0;
}

const char* dtype_name(dtype t) {
  switch (t) {
    case dtype::f32: return "f32";
    case dtype::f16: return "f16";
    case dtype::bf16: return "bf16";
    case dtype::i32: return "i32";
  }
  return "?";
}

const char* backend_name(backend_kind b) {
  switch (b) {
    case backend_kind::cpu: return "cpu";
    case backend_kind::cuda: return "cuda";
  }
  return "?";
}

buffer::buffer(size_t bytes, backend_kind where) : bytes_(bytes), where_(where) {
  if (bytes == 0) return;
  switch (where) {
    case backend_kind::cpu: {
      size_t rounded = (bytes + 63) / 64 * 64;
      data_ = std::aligned_alloc(64, rounded);
      if (!data_) throw std::bad_alloc();
      return;
    }
    case backend_kind::cuda:
#ifdef TROUPE_HAVE_CUDA
      data_ = cuda::device_alloc(bytes);
      return;
#else
      throw std::runtime_error("buffer: this build has no CUDA backend");
#endif
  }
}

buffer::buffer(buffer&& o) noexcept
    : data_(std::exchange(o.data_, nullptr)), bytes_(std::exchange(o.bytes_, 0)), where_(o.where_) {}

buffer& buffer::operator=(buffer&& o) noexcept {
  if (this != &o) {
    release();
    data_ = std::exchange(o.data_, nullptr);
    bytes_ = std::exchange(o.bytes_, 0);
    where_ = o.where_;
  }
  return *this;
}

buffer::~buffer() { release(); }

void buffer::release() noexcept {
  if (!data_) return;
  switch (where_) {
    case backend_kind::cpu: std::free(data_); break;
    case backend_kind::cuda:
#ifdef TROUPE_HAVE_CUDA
      cuda::device_free(data_);
#endif
      break;
  }
  data_ = nullptr;
  bytes_ = 0;
}

shape_t::shape_t(std::initializer_list<int64_t> d) {
  if (d.size() > 4) throw std::invalid_argument("shape: rank above 4");
  rank = static_cast<int>(d.size());
  size_t i = 0;
  for (auto v : d) {
    if (v < 0) throw std::invalid_argument("shape: negative dimension");
    dims[i++] = v;
  }
}

int64_t shape_t::numel() const {
  int64_t n = 1;
  for (int i = 0; i < rank; ++i) n *= dims[static_cast<size_t>(i)];
  return n;
}

bool shape_t::operator==(const shape_t& o) const {
  if (rank != o.rank) return false;
  for (int i = 0; i < rank; ++i)
    if (dims[static_cast<size_t>(i)] != o.dims[static_cast<size_t>(i)]) return false;
  return true;
}

std::string shape_t::str() const {
  std::ostringstream s;
  s << '[';
  for (int i = 0; i < rank; ++i) s << (i ? ", " : "") << dims[static_cast<size_t>(i)];
  s << ']';
  return s.str();
}

tensor_view tensor_view::rows(int64_t begin, int64_t count) const {
  if (shape.rank == 0 || begin < 0 || count < 0 || begin + count > shape[0])
    throw std::out_of_range("tensor_view::rows: [" + std::to_string(begin) + ", " +
                            std::to_string(begin + count) + ") outside " + shape.str());
  tensor_view v = *this;
  int64_t row_elems = shape[0] == 0 ? 0 : numel() / shape[0];
  v.data = static_cast<char*>(data) + static_cast<size_t>(begin * row_elems) * dtype_size(type);
  v.shape.dims[0] = count;
  return v;
}

tensor::tensor(shape_t s, dtype t, backend_kind where)
    : buf_(static_cast<size_t>(s.numel()) * dtype_size(t), where), shape_(s), type_(t) {}

tensor_view tensor::view() const {
  tensor_view v;
  v.data = const_cast<void*>(buf_.data());
  v.type = type_;
  v.where = buf_.where();
  v.shape = shape_;
  return v;
}

}  // namespace troupe
