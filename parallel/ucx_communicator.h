#pragma once
/// A communicator over UCX (host memory): shared memory within a host, TCP (or any transport
/// UCX_TLS selects) across hosts. Used by the CPU backend and cross-host links.
#include <ucp/api/ucp.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "parallel/communicator.h"

namespace troupe::parallel {

/// How a ucx_communicator treats its peers.
struct ucx_options {
  /// Peers on this host (same boot id and IPC namespace) talk over shared memory. UCX 1.13's
  /// shared-memory transports have no peer-failure handling, so those endpoints run without
  /// it; a same-host peer's death is then found by watching its process (when pid namespaces
  /// match) or by the deadline. false: every endpoint gets UCX peer-failure handling, so
  /// same-host traffic goes over TCP loopback (or whatever UCX_TLS allows that has it).
  bool shared_memory = true;
};

/// UCX tag-matching communicator. Bootstrap has two phases so that worker addresses can travel
/// in control-plane (CAF) messages: construct, publish local_address(), then connect() with
/// every rank's address. Each instance owns its UCP context and worker, so several may live in
/// one process (one per thread). The worker is driven only by the thread making calls; abort()
/// merely raises a flag that the progress loop checks. Messages are matched by (kind, call
/// sequence number, phase, source rank), so those of different calls never mix; a message
/// that arrives after its receive timed out is never taken for a later one. Any comm_error
/// other than invalid leaves the group out of step: abort it and build a new one.
/// Not thread-safe apart from abort(): one thread at a time makes the calls.
class ucx_communicator final : public communicator {
 public:
  /// Phase 1: creates the UCP context and worker for `rank` of a group of `size` ranks.
  /// Transports follow UCX_TLS (default: all UCX finds). Throws comm_error(invalid) on bad
  /// rank/size and std::runtime_error when UCX cannot start.
  ucx_communicator(int rank, int size, ucx_options options = {});
  ~ucx_communicator() override;

  /// The bytes to publish to the other ranks: the UCX worker address plus this process's
  /// identity (host boot id, namespaces, pid), which decides shared memory and liveness checks.
  std::vector<char> local_address() const { return address_; }
  /// Phase 2: connects to every peer (`addresses` indexed by rank, own entry ignored) and
  /// handshakes with each, so it returns only when every peer is reachable both ways. A
  /// collective: every rank must call it. Bounded by `d`.
  void connect(const std::vector<std::vector<char>>& addresses, deadline d);

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  void all_reduce(tensor_view buf, deadline d) override;
  void all_gather(tensor_view in, tensor_view out, deadline d) override;
  void send(tensor_view buf, int peer, deadline d) override;
  void recv(tensor_view buf, int peer, deadline d) override;
  void abort() noexcept override;
  bool aborted() const noexcept override { return aborted_.load(std::memory_order_acquire); }
  /// Total time spent inside all_reduce / all_gather / send / recv (waiting included).
  std::chrono::nanoseconds busy_time() const { return busy_; }
  /// Calls of all_reduce / all_gather / send / recv made so far.
  int64_t calls() const { return calls_; }

  /// Byte size from which all_reduce switches from all-to-all to reduce-scatter + all-gather
  /// (both give the same bits: each element is summed in rank order either way).
  static constexpr size_t large_all_reduce_bytes = 64 * 1024;

 private:
  static constexpr uint64_t kind_p2p = 0;         ///< tag kind of send / recv
  static constexpr uint64_t kind_collective = 1;  ///< tag kind of all_gather / all_reduce
  static constexpr uint64_t kind_hello = 2;       ///< tag kind of the connect handshake
  /// One outstanding UCX request of the current call.
  struct pending {
    void* req = nullptr;        ///< UCX request; null once completed and released
    int peer = -1;              ///< rank on the other side
    bool is_send = false;       ///< send (else receive)
    size_t expected_bytes = 0;  ///< bytes a receive must get
  };
  /// Adds the time from its construction to its destruction to busy_ (and counts a call).
  struct busy_scope {
    explicit busy_scope(ucx_communicator& c) : c_(c), t0_(std::chrono::steady_clock::now()) {}
    ~busy_scope() { c_.busy_ += std::chrono::steady_clock::now() - t0_; c_.calls_++; }
    busy_scope(const busy_scope&) = delete;
    busy_scope& operator=(const busy_scope&) = delete;
    ucx_communicator& c_;
    std::chrono::steady_clock::time_point t0_;
  };
  std::chrono::nanoseconds busy_{0};
  int64_t calls_ = 0;
  /// What the endpoint error handler needs to find its peer.
  struct ep_context {
    ucx_communicator* self = nullptr;
    int peer = -1;
  };

  static void on_ep_error(void* arg, ucp_ep_h ep, ucs_status_t status);
  void check_call(const char* op, const tensor_view& t, int peer) const;
  void post_send(std::vector<pending>& ops, const void* data, size_t bytes, int peer, uint64_t tag,
                 const char* op);
  void post_recv(std::vector<pending>& ops, void* data, size_t bytes, int peer, uint64_t tag,
                 const char* op);
  void wait_all(std::vector<pending>& ops, const char* op, deadline d);
  void check_done(std::vector<pending>& ops, const char* op);
  void fail_and_drain(std::vector<pending>& ops, comm_errc code, const char* op, int peer,
                      const std::string& reason);
  void force_close(int peer);
  void check_liveness(const std::vector<pending>& ops);
  std::string failure_text(int peer) const;
  void progress_idle(int& idle);
  void all_reduce_small(float* data, int64_t n, deadline d);
  void all_reduce_large(float* data, int64_t n, deadline d);
  uint64_t tag(uint64_t kind, uint64_t seq, uint64_t phase, int src) const;

  int rank_;                              ///< this rank
  int size_;                              ///< ranks in the group
  ucx_options options_;                   ///< as constructed
  ucp_context_h context_ = nullptr;       ///< owned UCP context
  ucp_worker_h worker_ = nullptr;         ///< owned UCP worker
  std::vector<char> address_;             ///< [envelope bytes] identity + worker_'s address
  std::vector<ucp_ep_h> eps_;             ///< [size_]; null for self and closed peers
  std::unique_ptr<ep_context[]> ep_ctx_;  ///< [size_]; stable error-handler arguments
  std::vector<ucs_status_t> ep_status_;   ///< [size_]; UCS_OK or why the endpoint failed
  std::vector<uint8_t> unguarded_;        ///< [size_]; 1: endpoint without error handling
  std::vector<int64_t> watch_pid_;        ///< [size_]; peer pid to watch, 0 for none
  std::vector<uint64_t> watch_start_;     ///< [size_]; that process's start time (ticks)
  std::vector<uint8_t> exited_;           ///< [size_]; 1: the watched process is gone
  std::chrono::steady_clock::time_point next_watch_{};  ///< when to look at watched pids again
  std::vector<uint64_t> send_seq_;                      ///< [size_]; point-to-point sends per peer
  std::vector<uint64_t> recv_seq_;    ///< [size_]; point-to-point receives per peer
  uint64_t coll_seq_ = 0;             ///< collectives issued so far
  std::vector<float> scratch_;        ///< [(size_-1) * elements] all_reduce inputs
  std::atomic<bool> aborted_{false};  ///< set by abort()
};

}  // namespace troupe::parallel
