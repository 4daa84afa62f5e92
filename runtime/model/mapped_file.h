#pragma once
/// Read-only memory map of a whole file (RAII, move-only).
#include <cstddef>
#include <cstdint>
#include <string>

namespace troupe {

/// A file mapped read-only into memory for as long as the object lives.
class mapped_file {
 public:
  mapped_file() = default;
  /// Maps `path`; throws troupe::load_error naming the file when it cannot be opened or mapped.
  explicit mapped_file(const std::string& path);
  mapped_file(const mapped_file&) = delete;
  mapped_file& operator=(const mapped_file&) = delete;
  mapped_file(mapped_file&& o) noexcept;
  mapped_file& operator=(mapped_file&& o) noexcept;
  ~mapped_file();

  /// First byte of the file (nullptr for an empty file).
  const uint8_t* data() const { return data_; }
  /// File size in bytes.
  size_t size() const { return size_; }
  /// The path the file was opened with.
  const std::string& path() const { return path_; }

 private:
  void release() noexcept;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  std::string path_;
};

}  // namespace troupe
