#pragma once
/// The compute side of one shard: its slice of the model, its shard context and its
/// communicators. Runs on a thread of its own (behind the shard actor, or in a test);
/// only abort() may be called from another thread.
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "parallel/partition.h"
#include "runtime/step.h"

namespace troupe {

namespace parallel {
class ucx_communicator;
}

/// Where a shard sits in its replica and how big it is.
struct shard_spec {
  std::string model_path = "default";
  int stage = 0;                    ///< pipeline stage
  int n_stages = 1;
  parallel::layer_range layers;     ///< this stage's layers
  int tp_rank = 0;
  int tp_size = 1;
  bool allow_uneven_heads = false;
  context_params context;
  int threads = 1;                  ///< CPU threads for the kernels
  int64_t timeout_ms = 5000;        ///< deadline of each tensor-parallel collective
  int64_t stage_timeout_ms = 120000;  ///< deadline of each send/recv between pipeline stages
};

/// The addresses a shard publishes so its peers can connect (empty where no link).
struct shard_addresses {
  std::vector<char> tensor;  ///< its rank in the TP group
  std::vector<char> prev;    ///< its end of the link to the stage before
  std::vector<char> next;    ///< its end of the link to the stage after
};

/// What one step produced on this shard (samples only on the sampling shard).
struct step_output {
  uint64_t step_id = 0;
  std::vector<sample_result> samples;
  int64_t busy_us = 0;  ///< time this shard spent in run() (forward + sampling)
  int64_t comm_us = 0;  ///< of that, time inside communicator calls (transfers and waits)
};

class shard_worker {
 public:
  /// Loads the shard's weights (slice of layers and heads) and creates its
  /// communicators' local endpoints. `progress` gets "loading", "ready".
  shard_worker(const shard_spec& spec, const std::function<void(const std::string&)>& progress = {});
  ~shard_worker();
  shard_worker(const shard_worker&) = delete;
  shard_worker& operator=(const shard_worker&) = delete;

  const shard_spec& spec() const { return spec_; }
  shard_addresses addresses() const;
  /// Connects the communicators: `tensor_group` = every TP rank's address (by rank),
  /// `prev` / `next` = the peer end of each pipeline link (empty where none).
  void connect(const std::vector<std::vector<char>>& tensor_group, const std::vector<char>& prev,
               const std::vector<char>& next, std::chrono::steady_clock::time_point deadline);
  /// Runs the forward for `r`; the last stage's TP rank 0 also samples.
  step_output run(const step_request& r);
  /// Whether this shard answers with samples.
  bool samples() const;
  /// Makes blocked and later transfers fail at once (a peer is gone). Idempotent, any thread.
  void abort() noexcept;

 private:
  /// Time spent inside the communicators so far.
  std::chrono::nanoseconds comm_time() const;

  shard_spec spec_;
  std::shared_ptr<const model> model_;
  std::unique_ptr<parallel::ucx_communicator> tensor_;  ///< null when tp_size == 1
  std::unique_ptr<parallel::ucx_communicator> prev_;    ///< null on the first stage
  std::unique_ptr<parallel::ucx_communicator> next_;    ///< null on the last stage
  std::unique_ptr<shard_context> ctx_;
  sampler_scratch scratch_;
};

}  // namespace troupe
