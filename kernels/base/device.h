#pragma once
/// Backend-neutral handles on a compute device: which device, its stream, pinned host
/// staging memory, copies and captured graphs. On the CPU backend they are trivial (no
/// stream, ordinary memory, memcpy); on CUDA they own the runtime objects. RAII, move-only.
#include <cstddef>
#include <string>

#include "kernels/base/tensor.h"

namespace troupe {

/// A compute device: the CPU, or CUDA device `ordinal`.
struct device_ref {
  backend_kind backend = backend_kind::cpu;
  int ordinal = 0;  ///< CUDA device number (0 on the CPU)

  /// "cpu" or "cuda:N".
  std::string str() const;
  /// Parses "cpu", "cuda" (= cuda:0) or "cuda:N"; throws std::invalid_argument naming `text`.
  static device_ref parse(const std::string& text);
  bool operator==(const device_ref& o) const { return backend == o.backend && ordinal == o.ordinal; }
};

/// Makes `d` the calling thread's current device (no-op on the CPU).
void use_device(const device_ref& d);
/// Free device memory in bytes (0 on the CPU: host memory is not budgeted here).
size_t free_device_memory(const device_ref& d);
/// Number of CUDA devices this process sees (0 in a build without CUDA).
int cuda_device_count() noexcept;

/// An execution stream: none on the CPU, an owned non-blocking cudaStream_t on CUDA.
class device_stream {
 public:
  device_stream() = default;
  /// A stream on `d` (made current first).
  explicit device_stream(const device_ref& d);
  device_stream(const device_stream&) = delete;
  device_stream& operator=(const device_stream&) = delete;
  device_stream(device_stream&& o) noexcept;
  device_stream& operator=(device_stream&& o) noexcept;
  ~device_stream();

  /// The native handle (cudaStream_t), null on the CPU.
  void* get() const { return stream_; }
  /// Whether all enqueued work has finished (true on the CPU); throws on a stream error.
  bool done() const;
  /// Waits for all enqueued work.
  void synchronize() const;

 private:
  void* stream_ = nullptr;
};

/// Host memory for staging copies: page-locked on CUDA, ordinary on the CPU.
class pinned_buffer {
 public:
  pinned_buffer() = default;
  pinned_buffer(size_t bytes, backend_kind b);
  pinned_buffer(const pinned_buffer&) = delete;
  pinned_buffer& operator=(const pinned_buffer&) = delete;
  pinned_buffer(pinned_buffer&& o) noexcept;
  pinned_buffer& operator=(pinned_buffer&& o) noexcept;
  ~pinned_buffer();

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }

 private:
  void release() noexcept;
  void* data_ = nullptr;
  size_t bytes_ = 0;
  backend_kind backend_ = backend_kind::cpu;
};

/// Copies `bytes` between host and device memory of backend `b`, in order on `stream`
/// (synchronous memcpy on the CPU).
void copy_bytes(void* dst, const void* src, size_t bytes, backend_kind b, void* stream);

/// Whether all work enqueued on `stream` has finished (true for a null stream); throws on
/// a stream error.
bool stream_done(void* stream);

/// The device time between two marks on a stream (a pair of CUDA events); measures
/// nothing on the CPU. Move-only.
class device_timer {
 public:
  device_timer() = default;
  /// A timer for streams of backend `b` (events made on the current device on CUDA).
  explicit device_timer(backend_kind b);
  device_timer(const device_timer&) = delete;
  device_timer& operator=(const device_timer&) = delete;
  device_timer(device_timer&& o) noexcept;
  device_timer& operator=(device_timer&& o) noexcept;
  ~device_timer();

  /// Marks the start on `stream` (no-op without events or stream).
  void start(void* stream);
  /// Marks the end on `stream`.
  void stop(void* stream);
  /// Milliseconds between the last start and stop marks, waiting for the stop; 0 when
  /// either is missing.
  double elapsed_ms();
  /// Whether the work before the last stop mark has finished (true without one or on the
  /// CPU); throws on a stream error.
  bool stop_done() const;

 private:
  void* begin_ = nullptr;
  void* end_ = nullptr;
  bool started_ = false, stopped_ = false;
};

/// A captured, instantiated CUDA graph (empty on the CPU). Move-only.
class device_graph {
 public:
  device_graph() = default;
  device_graph(const device_graph&) = delete;
  device_graph& operator=(const device_graph&) = delete;
  device_graph(device_graph&& o) noexcept;
  device_graph& operator=(device_graph&& o) noexcept;
  ~device_graph();

  /// Starts capturing the work enqueued on CUDA stream `stream`.
  static void begin_capture(void* stream);
  /// Ends the capture on `stream` and returns the launchable graph.
  static device_graph end_capture(void* stream);
  /// Ends a capture that failed half-way and discards it; never throws.
  static void abandon_capture(void* stream) noexcept;
  /// Replays the graph on `stream`.
  void launch(void* stream) const;
  bool empty() const { return exec_ == nullptr; }

 private:
  void* exec_ = nullptr;
};

}  // namespace troupe
