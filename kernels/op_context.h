#pragma once
/// How an op runs: on which backend, with which execution resources.
/// Ops are enqueued on the context's stream; none synchronizes with the host
/// (the CPU backend is synchronous by nature).
#include "kernels/base/tensor.h"

namespace troupe::kernels {

/// Execution context handed to every op. Owned by a shard context.
struct op_context {
  backend_kind backend = backend_kind::cpu;
  int n_threads = 1;        ///< CPU worker threads for this shard
  void* stream = nullptr;   ///< cudaStream_t on the CUDA backend
  /// Compute every row in an order that does not depend on the rest of the batch (CUDA:
  /// one GEMM algorithm for any row count, no GEMV, one attention kernel for decode and
  /// prefill rows), so a row's result is bitwise the same alone or in any batch. The CPU
  /// kernels are batch-invariant always.
  bool batch_invariant = false;
  /// CUDA: matmul may time cuBLASLt's candidates for a new decode-sized shape (gemm_tune.cuh).
  /// Set only for a decode graph shape's first, eager step (shard_context::run_graph), so a
  /// serving step of another kind never stalls on a timing run.
  bool tune_gemms = false;
};

/// Thrown when an op is called on a backend this build does not include.
struct backend_unavailable : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace troupe::kernels
