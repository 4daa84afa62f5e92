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
#include "kernels/base/device.h"
#include "runtime/engine/step.h"

namespace troupe {

namespace parallel {
class communicator;
class ucx_communicator;
}  // namespace parallel

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
  std::string device = "cpu";       ///< "cpu" or "cuda:N": where the weights and the work go
  std::string weight_type = "bf16"; ///< on CUDA: "bf16" or "f16" (the CPU computes in f32)
  bool random_weights = false;      ///< the `random` load format (model_path holds config.json)
  double kv_fraction = 0.9;         ///< on CUDA: share of the free memory after loading the KV cache may take
  int64_t timeout_ms = 5000;        ///< deadline of each tensor-parallel collective
  int64_t stage_timeout_ms = 120000;  ///< deadline of each send/recv between pipeline stages
  int64_t stall_timeout_ms = 0;       ///< a step without a progress beat for this long is stalled (0 = off)
  int64_t release_wait_ms = 30000;    ///< how long loading waits for a stopped shard to release the device
};

/// The addresses a shard publishes so its peers can connect (empty where no link).
struct shard_addresses {
  std::vector<char> tensor;  ///< its rank in the TP group
  std::vector<char> prev;    ///< its end of the link to the stage before
  std::vector<char> next;    ///< its end of the link to the stage after
  int kv_blocks = 0;         ///< KV blocks its device memory holds (kv_capacity_blocks), 0 on the CPU
  int64_t kv_rows = 0;       ///< KV rows its context has written so far (relink: the kept cache's count)
};

/// What one step produced on this shard (samples only on the sampling shard).
struct step_output {
  uint64_t step_id = 0;
  std::vector<sample_result> samples;
  int64_t busy_us = 0;  ///< time this shard spent in run() (forward + sampling)
  int64_t comm_us = 0;  ///< of that, time inside communicator calls (transfers and waits)
  int64_t kv_rows = 0;  ///< KV rows this shard has written since it loaded (each row: every layer's K and V)
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
  /// `keep_kv`: keep the context made by an earlier connect() (its KV cache and kept stage
  /// inputs), only relinking it; otherwise a fresh context.
  void connect(const std::vector<std::vector<char>>& tensor_group, const std::vector<char>& prev,
               const std::vector<char>& next, std::chrono::steady_clock::time_point deadline,
               bool keep_kv = false);
  /// Stage-local recovery: fresh communicator endpoints (the old ones were aborted, their
  /// peers replaced), to be connected by connect(..., keep_kv = true); the weights and the
  /// context stay. Returns the new addresses. `drop_context` (a new head adopts the shard):
  /// the context and its KV cache go too, before the addresses measure the free memory, and
  /// the next connect() makes a fresh one.
  shard_addresses relink(bool drop_context = false);
  /// KV blocks that fit in `fraction` of the device memory free now, after the weights and
  /// before the context's scratch (which is estimated and kept out); a block counts its K and V
  /// in every layer and, when the stage keeps its inputs for the next, their rows. The CPU: spec's count.
  int kv_capacity_blocks(double fraction) const;
  /// Sets the KV cache size (blocks) the context gets at connect().
  void set_kv_blocks(int n_blocks) { spec_.context.n_blocks = n_blocks; }
  /// The last step's logits on the host [L, vocab], when the sampling shard brought them
  /// there (a row asked for logprobs or penalties); else null.
  const float* host_logits() const { return sampler_.host_logits(); }
  /// Bytes of weights one decode step reads on this shard (every layer matrix and norm,
  /// the output projection; not the embedding table, of which it reads a row).
  size_t weight_bytes() const;
  /// The shard context (after connect()).
  const shard_context* context() const { return ctx_.get(); }
  /// Runs the forward for `r`; the last stage's TP rank 0 also samples, and with
  /// `r.keep_tokens` every rank of a one-stage replica does. Ahead rows
  /// (step_request::ahead_rows) take the tokens this shard sampled in step `r.ahead_of`,
  /// which must be the last step it ran: only a replica of one stage has them. They are filled in `r` in place (the row's token, and the end
  /// of its sampling history) before anything runs; a step refused for them (a
  /// std::runtime_error naming the steps) leaves the shard as it was.
  step_output run(step_request& r);
  /// run() on a copy of `r` when it has ahead rows.
  step_output run(const step_request& r);

  // -- pipelined steps (a replica of one shard on a device) ------------------------------
  /// Whether begin(r) may enqueue `r` now: one stage and one tensor rank on CUDA, `r` a
  /// normal step whose samples are drawn on the device, fewer than two steps in flight, and,
  /// with one in flight, no more samples than the sampler holds now and `r`'s ahead rows all
  /// taking that step's tokens (at most 16 runs of consecutive rows) with no penalty history
  /// to append them to.
  bool can_begin(const step_request& r) const;
  /// Enqueues `r`'s forward and sampling without waiting (can_begin(r) must hold): its
  /// ahead rows take the tokens of the step in flight on the device (or, with none in
  /// flight, those of the last step run here, as run() does). `r` is changed as run() does.
  void begin(step_request& r);
  /// Waits for the oldest begun step (until the stage timeout after it became the oldest) and
  /// returns its output. A failure (the deadline, a device error) drops every step in flight
  /// and rethrows.
  step_output complete();
  /// Steps begun and not yet completed.
  size_t in_flight() const { return flight_.size(); }
  /// Whether complete() will not wait: the oldest begun step has finished on the device, or
  /// its deadline has passed (complete() then throws the timeout).
  bool front_done() const;
  /// Forgets the steps in flight (their device work still runs, its results unread): the
  /// next step with ahead rows is refused, as after a failed step. For a caller that could not
  /// complete them (an error of its own). Idempotent.
  void abandon() noexcept;
  /// Whether this shard answers every step with samples (the last stage's rank 0).
  bool samples() const;
  /// Makes blocked and later transfers fail at once (a peer is gone). Idempotent, any thread.
  void abort() noexcept;

 private:
  /// Time spent inside the communicators so far.
  std::chrono::nanoseconds comm_time() const;
  /// CUDA: joins the NCCL groups (tensor group, links to the stages before and after).
  void connect_device(const std::vector<std::vector<char>>& tensor_group, const std::vector<char>& prev,
                      std::chrono::steady_clock::time_point deadline);
  /// Makes this shard's communicator endpoints (CPU: UCX workers; CUDA: NCCL ids).
  void make_endpoints();
  /// Runs a stage-local recovery replay step (see step_request::replay_stage).
  void replay(const step_request& r);
  /// Fills `r`'s ahead rows in from the samples of step `last`, the last one run here to
  /// its end.
  void fill_ahead(step_request& r, uint64_t last) const;
  /// Runs `r` (its ahead rows filled in).
  step_output execute(const step_request& r);

  shard_spec spec_;
  device_ref device_;
  std::shared_ptr<const model> model_;
  device_stream stream_;  ///< CUDA: the stream of the forward and of the NCCL transfers
  std::unique_ptr<parallel::ucx_communicator> tensor_;  ///< CPU: null when tp_size == 1
  std::unique_ptr<parallel::ucx_communicator> prev_;    ///< CPU: null on the first stage
  std::unique_ptr<parallel::ucx_communicator> next_;    ///< CPU: null on the last stage
  std::vector<char> tensor_id_;  ///< CUDA: the NCCL id this rank offers its tensor group (rank 0's is used)
  std::vector<char> next_id_;    ///< CUDA: the NCCL id of the link to the next stage (this end makes it)
  std::unique_ptr<parallel::communicator> tensor_dev_;  ///< CUDA: NCCL tensor group
  std::unique_ptr<parallel::communicator> prev_dev_;    ///< CUDA: NCCL link to the stage before
  std::unique_ptr<parallel::communicator> next_dev_;    ///< CUDA: NCCL link to the stage after
  std::unique_ptr<shard_context> ctx_;
  /// Communicators replaced by relink(), kept until connect() moves the context off them.
  std::vector<std::unique_ptr<parallel::communicator>> retired_;
  step_sampler sampler_;
  uint64_t last_step_ = 0;             ///< the last step run to its end here (0: none, or it failed)
  std::vector<int32_t> last_tokens_;   ///< [L] that step's sampled tokens
  /// A begun step (pipelined): what complete() needs.
  struct begun_step {
    uint64_t step_id = 0;
    size_t n_samples = 0;
    int mark = 0;          ///< shard_context::mark_step's
    int slot = 0;          ///< step_sampler's host token slot
    int64_t kv_rows = 0;   ///< the context's KV rows after it was enqueued
    std::chrono::steady_clock::time_point t0;        ///< begun, or when it became the oldest (busy_us from it)
    std::chrono::steady_clock::time_point deadline;  ///< the stage timeout after it became the oldest
  };
  std::vector<begun_step> flight_;  ///< oldest first, at most two
  int next_slot_ = 0;
  /// The device token runs of `r`'s ahead rows from the step in flight; empty when more
  /// than 16 or invalid.
  std::vector<shard_context::token_run> ahead_runs(const step_request& r) const;
};

}  // namespace troupe
