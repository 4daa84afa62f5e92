#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "kernels/cuda/device_memory.h"

namespace troupe::cuda {

void* device_alloc(size_t bytes) {
  void* p = nullptr;
  cudaError_t err = cudaMalloc(&p, bytes);
  if (err != cudaSuccess)
    throw std::runtime_error("cuda: cannot allocate " + std::to_string(bytes) +
                             " bytes of device memory: " + cudaGetErrorString(err));
  return p;
}

void device_free(void* p) noexcept {
  if (p) cudaFree(p);
}

int device_count() noexcept {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) return 0;
  return n;
}

}  // namespace troupe::cuda
