#include "kernels/base/device.h"

#include <cstring>
#include <stdexcept>
#include <utility>

#ifdef TROUPE_HAVE_CUDA
#include "kernels/cuda/device_memory.h"
#endif

namespace troupe {

namespace {

[[noreturn, maybe_unused]] void no_cuda(const char* what) {
  throw std::runtime_error(std::string(what) + ": this build has no CUDA backend");
}

}  // namespace

std::string device_ref::str() const {
  switch (backend) {
    case backend_kind::cpu: return "cpu";
    case backend_kind::cuda: return "cuda:" + std::to_string(ordinal);
  }
  return "unknown";
}

device_ref device_ref::parse(const std::string& text) {
  if (text == "cpu") return {};
  if (text == "cuda") return {backend_kind::cuda, 0};
  if (text.rfind("cuda:", 0) == 0) {
    const std::string n = text.substr(5);
    if (!n.empty() && n.size() <= 4 && n.find_first_not_of("0123456789") == std::string::npos)
      return {backend_kind::cuda, std::stoi(n)};
  }
  throw std::invalid_argument("device '" + text + "' is not cpu, cuda or cuda:N");
}

void use_device(const device_ref& d) {
  switch (d.backend) {
    case backend_kind::cpu: return;
    case backend_kind::cuda:
#ifdef TROUPE_HAVE_CUDA
      return cuda::set_device(d.ordinal);
#else
      no_cuda("use_device");
#endif
  }
}

size_t free_device_memory(const device_ref& d) {
  switch (d.backend) {
    case backend_kind::cpu: return 0;
    case backend_kind::cuda: {
#ifdef TROUPE_HAVE_CUDA
      cuda::set_device(d.ordinal);
      size_t free_bytes = 0, total = 0;
      cuda::memory_info(free_bytes, total);
      return free_bytes;
#else
      no_cuda("free_device_memory");
#endif
    }
  }
  return 0;
}

int cuda_device_count() noexcept {
#ifdef TROUPE_HAVE_CUDA
  return cuda::device_count();
#else
  return 0;
#endif
}

device_stream::device_stream(const device_ref& d) {
  switch (d.backend) {
    case backend_kind::cpu: return;
    case backend_kind::cuda:
#ifdef TROUPE_HAVE_CUDA
      cuda::set_device(d.ordinal);
      stream_ = cuda::stream_create();
      return;
#else
      no_cuda("device_stream");
#endif
  }
}

device_stream::device_stream(device_stream&& o) noexcept
    : stream_(std::exchange(o.stream_, nullptr)) {}

device_stream& device_stream::operator=(device_stream&& o) noexcept {
  if (this != &o) {
#ifdef TROUPE_HAVE_CUDA
    if (stream_) cuda::stream_destroy(stream_);
#endif
    stream_ = std::exchange(o.stream_, nullptr);
  }
  return *this;
}

device_stream::~device_stream() {
#ifdef TROUPE_HAVE_CUDA
  if (stream_) cuda::stream_destroy(stream_);
#endif
  stream_ = nullptr;
}

bool device_stream::done() const {
#ifdef TROUPE_HAVE_CUDA
  if (stream_) return cuda::stream_done(stream_);
#endif
  return true;
}

void device_stream::synchronize() const {
#ifdef TROUPE_HAVE_CUDA
  if (stream_) cuda::stream_sync(stream_);
#endif
}

pinned_buffer::pinned_buffer(size_t bytes, backend_kind b) : bytes_(bytes), backend_(b) {
  if (bytes == 0) return;
  switch (b) {
    case backend_kind::cpu:
      data_ = ::operator new(bytes);
      return;
    case backend_kind::cuda:
#ifdef TROUPE_HAVE_CUDA
      data_ = cuda::pinned_alloc(bytes);
      return;
#else
      no_cuda("pinned_buffer");
#endif
  }
}

pinned_buffer::pinned_buffer(pinned_buffer&& o) noexcept
    : data_(std::exchange(o.data_, nullptr)), bytes_(std::exchange(o.bytes_, 0)), backend_(o.backend_) {}

pinned_buffer& pinned_buffer::operator=(pinned_buffer&& o) noexcept {
  if (this != &o) {
    release();
    data_ = std::exchange(o.data_, nullptr);
    bytes_ = std::exchange(o.bytes_, 0);
    backend_ = o.backend_;
  }
  return *this;
}

pinned_buffer::~pinned_buffer() { release(); }

void pinned_buffer::release() noexcept {
  if (!data_) return;
  switch (backend_) {
    case backend_kind::cpu: ::operator delete(data_); break;
    case backend_kind::cuda:
#ifdef TROUPE_HAVE_CUDA
      cuda::pinned_free(data_);
#endif
      break;
  }
  data_ = nullptr;
  bytes_ = 0;
}

void copy_bytes(void* dst, const void* src, size_t bytes, backend_kind b, void* stream) {
  switch (b) {
    case backend_kind::cpu:
      if (bytes) std::memcpy(dst, src, bytes);
      return;
    case backend_kind::cuda:
#ifdef TROUPE_HAVE_CUDA
      return cuda::copy_async(dst, src, bytes, stream);
#else
      no_cuda("copy_bytes");
#endif
  }
}

device_timer::device_timer(backend_kind b) {
#ifdef TROUPE_HAVE_CUDA
  if (b == backend_kind::cuda) {
    begin_ = cuda::event_create();
    end_ = cuda::event_create();
  }
#endif
}

device_timer::device_timer(device_timer&& o) noexcept
    : begin_(std::exchange(o.begin_, nullptr)),
      end_(std::exchange(o.end_, nullptr)),
      started_(std::exchange(o.started_, false)),
      stopped_(std::exchange(o.stopped_, false)) {}

device_timer& device_timer::operator=(device_timer&& o) noexcept {
  if (this != &o) {
    device_timer gone(std::move(*this));
    begin_ = std::exchange(o.begin_, nullptr);
    end_ = std::exchange(o.end_, nullptr);
    started_ = std::exchange(o.started_, false);
    stopped_ = std::exchange(o.stopped_, false);
  }
  return *this;
}

device_timer::~device_timer() {
#ifdef TROUPE_HAVE_CUDA
  cuda::event_destroy(begin_);
  cuda::event_destroy(end_);
#endif
}

void device_timer::start(void* stream) {
#ifdef TROUPE_HAVE_CUDA
  if (!begin_ || !stream) return;
  cuda::event_record(begin_, stream);
  started_ = true;
  stopped_ = false;
#endif
}

void device_timer::stop(void* stream) {
#ifdef TROUPE_HAVE_CUDA
  if (!end_ || !stream || !started_) return;
  cuda::event_record(end_, stream);
  stopped_ = true;
#endif
}

double device_timer::elapsed_ms() {
#ifdef TROUPE_HAVE_CUDA
  if (started_ && stopped_) return cuda::event_elapsed_ms(begin_, end_);
#endif
  return 0.0;
}

bool device_timer::stop_done() const {
#ifdef TROUPE_HAVE_CUDA
  if (end_ && stopped_) return cuda::event_done(end_);
#endif
  return true;
}

device_graph::device_graph(device_graph&& o) noexcept : exec_(std::exchange(o.exec_, nullptr)) {}

device_graph& device_graph::operator=(device_graph&& o) noexcept {
  if (this != &o) {
#ifdef TROUPE_HAVE_CUDA
    if (exec_) cuda::graph_destroy(exec_);
#endif
    exec_ = std::exchange(o.exec_, nullptr);
  }
  return *this;
}

device_graph::~device_graph() {
#ifdef TROUPE_HAVE_CUDA
  if (exec_) cuda::graph_destroy(exec_);
#endif
  exec_ = nullptr;
}

void device_graph::begin_capture(void* stream) {
#ifdef TROUPE_HAVE_CUDA
  if (stream) return cuda::capture_begin(stream);
#endif
  throw std::logic_error("device_graph: only a CUDA stream can be captured");
}

device_graph device_graph::end_capture(void* stream) {
  device_graph g;
#ifdef TROUPE_HAVE_CUDA
  if (stream) {
    g.exec_ = cuda::capture_end(stream);
    return g;
  }
#endif
  throw std::logic_error("device_graph: only a CUDA stream can be captured");
}

void device_graph::abandon_capture(void* stream) noexcept {
#ifdef TROUPE_HAVE_CUDA
  if (stream) cuda::capture_abandon(stream);
#endif
}

void device_graph::launch(void* stream) const {
#ifdef TROUPE_HAVE_CUDA
  if (exec_ && stream) return cuda::graph_launch(exec_, stream);
#endif
  throw std::logic_error("device_graph: nothing to launch");
}

bool stream_done(void* stream) {
#ifdef TROUPE_HAVE_CUDA
  if (stream) return cuda::stream_done(stream);
#endif
  return true;
}

}  // namespace troupe
