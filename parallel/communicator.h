#pragma once
/// The data plane: collective and point-to-point transfers among the ranks of one group.
#include <chrono>
#include <stdexcept>
#include <string>

#include "kernels/base/tensor.h"

namespace troupe::parallel {

/// The instant by which a communicator call must have returned.
using deadline = std::chrono::steady_clock::time_point;

/// A deadline `ms` milliseconds from now.
inline deadline deadline_in(std::chrono::milliseconds ms) {
  return std::chrono::steady_clock::now() + ms;
}

/// Why a communicator call failed.
enum class comm_errc {
  timeout,    ///< the deadline passed before the transfer completed
  aborted,    ///< abort() was called on this communicator
  peer_lost,  ///< the peer's endpoint failed (process died, connection reset)
  invalid     ///< bad arguments: wrong dtype, device, size or peer, or a size mismatch
};

/// Lower-case name of `c` ("timeout", ...).
inline const char* comm_errc_name(comm_errc c) {
  switch (c) {
    case comm_errc::timeout:
      return "timeout";
    case comm_errc::aborted:
      return "aborted";
    case comm_errc::peer_lost:
      return "peer_lost";
    case comm_errc::invalid:
      return "invalid";
  }
  return "unknown";
}

/// A failed communicator call. The message names the op, the peer (when one is known) and why.
struct comm_error : std::runtime_error {
  /// What went wrong.
  comm_errc code;
  /// The rank the failing transfer was with, or -1 when no single peer is to blame.
  int peer = -1;

  /// `op` is the call ("all_reduce", "recv", ...); `reason` says what happened in words.
  comm_error(comm_errc c, const std::string& op, int peer_rank, const std::string& reason)
      : std::runtime_error(op + (peer_rank >= 0 ? " with peer " + std::to_string(peer_rank) : "") +
                           " failed (" + comm_errc_name(c) + "): " + reason),
        code(c),
        peer(peer_rank) {}
};

/// Collective and point-to-point transfers among the ranks of one group (a TP group, or two
/// adjacent pipeline stages). Every call has a deadline and never blocks past it (plus a small
/// bounded clean-up); abort() is idempotent, callable from any thread, and makes pending and
/// later calls throw comm_error(aborted) promptly. All other calls belong to one thread at a
/// time. Collectives must be called by every rank in the same order. Non-copyable.
class communicator {
 public:
  communicator() = default;
  communicator(const communicator&) = delete;
  communicator& operator=(const communicator&) = delete;
  virtual ~communicator() = default;

  /// This process's rank in the group, 0..size()-1.
  virtual int rank() const = 0;
  /// Number of ranks in the group.
  virtual int size() const = 0;
  /// In-place sum over all ranks of f32 `buf` (same shape everywhere). Deterministic: every
  /// rank gets bitwise-identical results, and the same inputs always give the same bits (each
  /// element is summed in rank order 0..n-1).
  virtual void all_reduce(tensor_view buf, deadline d) = 0;
  /// out = concat over ranks of `in` along dim 0 (`out` holds size() times the rows of `in`).
  virtual void all_gather(tensor_view in, tensor_view out, deadline d) = 0;
  /// Sends `buf` to `peer`; returns once `buf` may be reused. Pairs with the peer's recv().
  virtual void send(tensor_view buf, int peer, deadline d) = 0;
  /// Receives exactly `buf`'s bytes from `peer` into `buf`.
  virtual void recv(tensor_view buf, int peer, deadline d) = 0;
  /// Deferred mode (device communicators): every call only enqueues its transfer on the
  /// communicator's stream and returns; synchronize() then waits for all of them, so a whole
  /// forward (and a CUDA graph capture of it) runs without a host round trip. Returns whether
  /// the communicator supports the mode asked for (host communicators: only `false`).
  virtual bool set_deferred(bool on) { return !on; }
  /// Deferred mode: waits until every enqueued transfer is done, with the same deadline,
  /// abort and peer-failure semantics as a blocking call. No-op otherwise.
  virtual void synchronize(deadline d) {}
  /// Makes pending and later calls throw comm_error(aborted). Idempotent, any thread.
  virtual void abort() noexcept = 0;
  /// Whether abort() was called.
  virtual bool aborted() const noexcept = 0;
};

}  // namespace troupe::parallel
