#include "kernels/cuda/gemm_tune.cuh"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "kernels/cuda/common.cuh"

namespace troupe::kernels::cuda {
namespace {

/// Bytes written between timed runs: twice the largest L2 of a current GPU (H200: 50 MB).
constexpr size_t flush_bytes = 128u << 20;

bool is_bucket(int64_t m) {
  if (m < 1 || m > 512) return false;
  for (int64_t p = 1; p <= 512; p *= 2)
    if (m == p || (p >= 2 && m == p + p / 2)) return true;
  return false;
}

/// RAII pair of CUDA events.
struct event_pair {
  cudaEvent_t start = nullptr, stop = nullptr;
  event_pair() {
    check_cuda(cudaEventCreate(&start), "matmul", "creating a tuning event");
    check_cuda(cudaEventCreate(&stop), "matmul", "creating a tuning event");
  }
  ~event_pair() {
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
  }
  event_pair(const event_pair&) = delete;
  event_pair& operator=(const event_pair&) = delete;
};

/// A device buffer freed on scope exit; empty when the allocation failed.
struct scratch {
  void* p = nullptr;
  explicit scratch(size_t bytes) {
    if (cudaMalloc(&p, bytes) != cudaSuccess) {
      (void)cudaGetLastError();  // clears the failed allocation's error
      p = nullptr;
    }
  }
  ~scratch() {
    if (p) cudaFree(p);
  }
  scratch(const scratch&) = delete;
  scratch& operator=(const scratch&) = delete;
};

cublasStatus_t run(const gemm_call& c, const cublasLtMatmulAlgo_t& algo) {
  const float alpha = 1.0f, beta = 0.0f;
  return cublasLtMatmul(c.handle, c.desc, &alpha, c.w, c.a, c.x, c.b, &beta, c.out, c.d, c.out, c.d, &algo,
                        c.workspace, c.workspace_bytes, c.stream);
}

/// Median of `reps` cold runs of `algo` in ms; +inf when cuBLASLt refuses it.
float cold_median_ms(const gemm_call& c, const cublasLtMatmulAlgo_t& algo, void* flush, int reps) {
  if (run(c, algo) != CUBLAS_STATUS_SUCCESS) return std::numeric_limits<float>::infinity();
  event_pair ev;
  std::vector<float> ms;
  for (int r = 0; r < reps; ++r) {
    check_cuda(cudaMemsetAsync(flush, r & 1, flush_bytes, c.stream), "matmul", "flushing L2 for tuning");
    check_cuda(cudaEventRecord(ev.start, c.stream), "matmul", "recording a tuning event");
    if (run(c, algo) != CUBLAS_STATUS_SUCCESS) return std::numeric_limits<float>::infinity();
    check_cuda(cudaEventRecord(ev.stop, c.stream), "matmul", "recording a tuning event");
    check_cuda(cudaEventSynchronize(ev.stop), "matmul", "timing a candidate algorithm");
    float t = 0;
    check_cuda(cudaEventElapsedTime(&t, ev.start, ev.stop), "matmul", "reading a tuning event");
    ms.push_back(t);
  }
  std::nth_element(ms.begin(), ms.begin() + static_cast<ptrdiff_t>(ms.size() / 2), ms.end());
  return ms[ms.size() / 2];
}

}  // namespace

bool gemm_tuning_wanted(int64_t m, cudaStream_t stream) {
  const char* e = std::getenv("TROUPE_GEMM_TUNE");
  if (!e || (std::strcmp(e, "1") != 0 && std::strcmp(e, "2") != 0)) return false;  // opt-in: see gemm_tune.cuh
  if (!is_bucket(m)) return false;
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(stream, &status) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  return status == cudaStreamCaptureStatusNone;
}

bool gemm_tune_whole_k() {
  const char* e = std::getenv("TROUPE_GEMM_TUNE");
  return e && std::strcmp(e, "2") == 0;
}

size_t fastest_algo(const gemm_call& call, const std::vector<cublasLtMatmulHeuristicResult_t>& candidates,
                    int reps) {
  if (candidates.size() < 2) return 0;
  scratch flush(flush_bytes);
  if (!flush.p) return 0;
  const bool whole_k = gemm_tune_whole_k();
  size_t best = 0;
  float best_ms = std::numeric_limits<float>::infinity();
  for (size_t i = 0; i < candidates.size(); ++i) {
    int32_t split = 1;
    size_t written = 0;
    if (whole_k && (cublasLtMatmulAlgoConfigGetAttribute(&candidates[i].algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &split,
                                                         sizeof split, &written) != CUBLAS_STATUS_SUCCESS ||
                    split > 1))
      continue;
    const float t = cold_median_ms(call, candidates[i].algo, flush.p, reps);
    if (t < best_ms) {
      best_ms = t;
      best = i;
    }
  }
  return best;
}

}  // namespace troupe::kernels::cuda
