#pragma once
// Autotuning of cuBLASLt GEMMs (matmul.cu): the heuristic ranks algorithms by a model of the
// GPU, not by measurement, and at the skinny shapes of batched decode (tens to hundreds of
// rows against 4096 x 14336 weights) its first choice is not always the fastest. For the row
// counts a decode step uses, matmul times the heuristic's first candidates once, on the
// real operands, and keeps the fastest in the shape's plan (TensorRT-LLM profiles its GEMMs
// the same way; PyTorch's max-autotune does it for Triton kernels).
//
// Off by default (TROUPE_GEMM_TUNE=1 turns it on): on one H200 it made offline decode 3.9%
// faster at batch 64 but served decode steps had outliers of up to 150 ms with it, ITL p99
// 72-108 ms against 21-28 without, same binary, same call (docs/benchmarks.md); the cause
// is not known yet.
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace troupe::kernels::cuda {

/// One cuBLASLt call with its operands: what fastest_algo() runs.
struct gemm_call {
  cublasLtHandle_t handle = nullptr;
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  const void* w = nullptr;   // A: [n, k]
  const void* x = nullptr;   // B: [m, k]
  void* out = nullptr;       // D: [m, n] (overwritten by every timed run)
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  cudaStream_t stream = nullptr;
};

/// Whether GEMMs of m rows on `stream` are tuned (matmul asks only where op_context::tune_gemms
/// is set: a decode graph shape's first, eager step): TROUPE_GEMM_TUNE is "1", m is a decode
/// batch size (1 to 512, a power of two or 1.5 times one: the CUDA-graph buckets of
/// runtime/engine/forward.cpp) and the stream is not capturing a graph (nothing can be
/// timed then). Other row counts (prefill chunks of any length) keep the heuristic's first.
bool gemm_tuning_wanted(int64_t m, cudaStream_t stream);

/// TROUPE_GEMM_TUNE is "2": tuning times only the candidates that do not split k (an
/// experiment on the serving outliers of tuned plans, docs/gpu-notes.md).
bool gemm_tune_whole_k();

/// The index in `candidates` of the fastest algorithm for `call`: each runs once to warm
/// up, then `reps` times with the L2 cache flushed before every run (weights stream from
/// memory in a real step), and the one with the lowest median wins (with
/// gemm_tune_whole_k, among those with a split-K count of 1). Returns 0 (the heuristic's
/// first) when there is one candidate, when none is timed, or when a flush buffer cannot be
/// had. Synchronizes the stream.
size_t fastest_algo(const gemm_call& call, const std::vector<cublasLtMatmulHeuristicResult_t>& candidates,
                    int reps = 5);

}  // namespace troupe::kernels::cuda
