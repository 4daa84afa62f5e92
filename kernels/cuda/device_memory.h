#pragma once
/// The CUDA runtime calls the rest of troupe needs (memory, streams, copies, graphs), behind
/// a plain C++ interface so that .cpp files need no CUDA headers. Every failure throws
/// std::runtime_error naming the call, the sizes and the CUDA error; the release functions
/// never throw (they run in destructors). Built when the CUDA backend is on.
#include <cstddef>

namespace troupe::cuda {

/// cudaMalloc of `bytes`; throws std::runtime_error naming the size and the CUDA error.
void* device_alloc(size_t bytes);
/// cudaFree; never throws (used from destructors).
void device_free(void* p) noexcept;
/// Number of visible CUDA devices (0 when there is no driver or device).
int device_count() noexcept;
/// Makes `device` current for the calling thread.
void set_device(int device);
/// Free and total bytes of the current device.
void memory_info(size_t& free_bytes, size_t& total_bytes);
/// Page-locked host memory of `bytes` (for fast, asynchronous copies).
void* pinned_alloc(size_t bytes);
/// Releases pinned_alloc memory; never throws.
void pinned_free(void* p) noexcept;
/// A new non-blocking stream on the current device.
void* stream_create();
/// Destroys a stream_create stream; never throws.
void stream_destroy(void* stream) noexcept;
/// Whether all work on `stream` has finished; throws when the stream reports an error.
bool stream_done(void* stream);
/// Waits for all work on `stream`.
void stream_sync(void* stream);
/// Enqueues a copy of `bytes` between any host or device memory on `stream`.
void copy_async(void* dst, const void* src, size_t bytes, void* stream);
/// Starts capturing `stream`'s work into a graph (thread-local capture mode).
void capture_begin(void* stream);
/// Ends the capture begun on `stream` and returns the instantiated, launchable graph.
void* capture_end(void* stream);
/// Ends a failed capture on `stream` and discards what was captured; never throws.
void capture_abandon(void* stream) noexcept;
/// Launches an instantiated graph on `stream`.
void graph_launch(void* graph, void* stream);
/// Destroys an instantiated graph; never throws.
void graph_destroy(void* graph) noexcept;
/// A new timing event on the current device.
void* event_create();
/// Destroys an event_create event; never throws.
void event_destroy(void* event) noexcept;
/// Records `event` on `stream`.
void event_record(void* event, void* stream);
/// Milliseconds between two recorded events, waiting for the later one.
float event_elapsed_ms(void* from, void* to);
/// Whether the work before `event`'s last record has finished (true when never recorded);
/// throws on a stream error.
bool event_done(void* event);

}  // namespace troupe::cuda
