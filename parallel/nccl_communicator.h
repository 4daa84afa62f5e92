#pragma once
/// A communicator over NCCL for device (CUDA) buffers. Exists only when the build found NCCL
/// (TROUPE_HAVE_NCCL); include it under the same #ifdef.
#ifdef TROUPE_HAVE_NCCL

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <atomic>
#include <mutex>
#include <vector>

#include "parallel/communicator.h"

namespace troupe::parallel {

/// NCCL communicator for one rank on one CUDA device. Initialisation is non-blocking and
/// polled against a deadline; every transfer is enqueued on the stream given at construction
/// and then polled (stream, NCCL async error, deadline, abort flag), so no call blocks past
/// its deadline. NCCL cannot cancel an enqueued operation: a timeout aborts the NCCL
/// communicator, and later calls throw comm_error(aborted); the group must then be re-created
/// (docs/reliability.md). all_reduce gives every rank the same bits and is repeatable
/// for a fixed group, size and NCCL configuration, but sums in NCCL's order (ring or tree),
/// not in rank order, so its bits differ from ucx_communicator's.
class nccl_communicator final : public communicator {
 public:
  /// A fresh NCCL unique id as bytes: rank 0 makes it and the control plane hands it to all.
  static std::vector<char> nccl_unique_id();

  /// Joins the group `id` as `rank` of `size` on CUDA `device`, enqueueing on `stream` (which
  /// must belong to `device` and outlive this). Throws comm_error(timeout) when the other
  /// ranks do not join by `d`, comm_error(invalid) on bad arguments.
  nccl_communicator(int rank, int size, const std::vector<char>& id, int device,
                    cudaStream_t stream, deadline d);
  /// Finalizes the NCCL communicator (bounded wait), or aborts it when that does not finish.
  ~nccl_communicator() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  /// In-place sum of `buf` (f32, f16, bf16 or i32 on this device) over all ranks.
  void all_reduce(tensor_view buf, deadline d) override;
  void all_gather(tensor_view in, tensor_view out, deadline d) override;
  void send(tensor_view buf, int peer, deadline d) override;
  void recv(tensor_view buf, int peer, deadline d) override;
  /// Deferred mode is supported: transfers only enqueue, synchronize() waits.
  bool set_deferred(bool on) override {
    deferred_ = on;
    return true;
  }
  void synchronize(deadline d) override;
  /// Calls ncclCommAbort once (any thread); pending and later calls throw comm_error(aborted).
  void abort() noexcept override;
  bool aborted() const noexcept override { return aborted_.load(std::memory_order_acquire); }

 private:
  ncclDataType_t check_call(const char* op, const tensor_view& t, int peer) const;
  void enqueued(ncclResult_t r, const char* op, int peer, deadline d);
  void wait(const char* op, int peer, deadline d);
  void abort_locked() noexcept;

  int rank_;                          ///< this rank
  int size_;                          ///< ranks in the group
  int device_;                        ///< CUDA device ordinal
  cudaStream_t stream_;               ///< stream every transfer is enqueued on (not owned)
  ncclComm_t comm_ = nullptr;         ///< owned; null once aborted or destroyed
  mutable std::mutex comm_mutex_;     ///< guards comm_ against abort() from other threads
  std::atomic<bool> aborted_{false};  ///< set by abort() and by a timeout
  bool deferred_ = false;             ///< calls only enqueue (set_deferred)
};

}  // namespace troupe::parallel

#endif  // TROUPE_HAVE_NCCL
