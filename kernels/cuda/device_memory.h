#pragma once
/// Device memory for runtime/tensor.h's buffer: allocation that reports failures as
/// exceptions naming the size and the CUDA error. Built when the CUDA backend is on.
#include <cstddef>

namespace troupe::cuda {

/// cudaMalloc of `bytes`; throws std::runtime_error naming the size and the CUDA error.
void* device_alloc(size_t bytes);
/// cudaFree; never throws (used from destructors).
void device_free(void* p) noexcept;
/// Number of visible CUDA devices (0 when there is no driver or device).
int device_count() noexcept;

}  // namespace troupe::cuda
