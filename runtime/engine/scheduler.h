#pragma once
/// Continuous batching over the paged KV cache: admit, chunked prefill, decode,
/// preempt by recompute when blocks run out, finish and cancel (vLLM's scheduler,
/// one token budget per step shared by prefills and decodes; decodes are scheduled
/// first, and prefill chunks beside decodes may have a budget of their own).
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <vector>

#include "runtime/engine/kv_cache.h"
#include "runtime/engine/sampler.h"

namespace troupe {

/// Why a sequence stopped.
enum class finish_reason : uint8_t { none, stop, length, cancelled };

/// "stop", "length", "cancelled" (OpenAI's finish_reason), "" for none.
const char* finish_reason_name(finish_reason r);

/// One request's state inside a scheduler.
struct sequence {
  seq_id id = 0;
  std::vector<int32_t> tokens;  ///< prompt followed by generated tokens
  int n_prompt = 0;
  sampling_params params;
  int n_computed = 0;           ///< tokens whose KV is in the cache
  int n_preemptions = 0;
  int in_flight = 0;            ///< steps holding it not completed yet (micro-batches, or an ahead step)
  int pending_tokens = 0;       ///< tokens those steps will append (one per chunk that samples)
  int flight_end = 0;           ///< tokens whose KV the steps in flight will have written (their last chunk's end)
  /// Set while an ended sequence waits for a step still in flight (an ahead step):
  /// it is released, and its step's sample dropped, when that step completes.
  finish_reason finish = finish_reason::none;

  int n_generated() const { return static_cast<int>(tokens.size()) - n_prompt; }
};

/// One sequence's share of a step: rows tokens[start, start + len).
struct scheduled_chunk {
  sequence* seq = nullptr;
  int start = 0;
  int len = 0;
  bool wants_logits = false;  ///< the chunk ends at the last known token: sample after it
  /// An ahead decode (overlapped steps): the row's token is the one the sequence's step in
  /// flight samples, unknown when this step is planned; it is filled in where that step ran.
  bool ahead = false;
};

/// What one engine step runs.
struct step_plan {
  std::vector<scheduled_chunk> chunks;
  std::vector<seq_id> preempted;  ///< sequences that lost their KV this step
  int n_tokens = 0;
  bool empty() const { return chunks.empty(); }
};

/// Scheduler limits.
struct scheduler_config {
  int max_batch_tokens = 512;  ///< token budget of one step (prefill chunks + decodes)
  int max_seqs = 64;           ///< sequences running at once
  int max_context = 2048;      ///< tokens one sequence may hold (prompt + output)
  /// Prefill tokens a step carries beside at least one decode (0: whatever the decodes
  /// leave of the step's budget). Bounds how much a prefill lengthens a decode's step.
  int max_prefill_tokens = 0;
  /// With max_prefill_tokens set: beside n decodes a step carries at most
  /// max(max_prefill_tokens / 4, prefill_per_decode x n) prefill tokens (0: no such
  /// limit). Few decodes take short chunks, whose step stays near a decode step's; many
  /// decodes take the whole cap, whose cost is then shared by more streams.
  int prefill_per_decode = 0;
};

class scheduler {
 public:
  scheduler(block_manager& blocks, scheduler_config cfg);

  /// Queues a sequence (arrival order is service order).
  void add(std::unique_ptr<sequence> s);
  /// Marks the sequence cancelled; it is released at the next schedule(). False if unknown.
  bool cancel(seq_id id);
  /// Builds the next step from the sequences not already in flight, within `budget`
  /// tokens (0 = max_batch_tokens). Several plans may be in flight at once (pipeline
  /// micro-batches); each must be completed with complete(). `ahead` (overlapped steps,
  /// with exactly one plan in flight): a running sequence whose step in flight samples its
  /// next token also gets its following decode (a chunk marked `ahead`), unless that token
  /// may be its last (max_tokens, max_context) or a cancel request waits for it; one whose
  /// prompt chunk in flight samples nothing gets its next prompt chunk.
  step_plan schedule(int budget = 0, bool ahead = false);
  /// After a step: records the computed KV and appends each sampled token (one per chunk
  /// that wanted logits, in chunk order).
  void complete(const step_plan& plan, const std::vector<int32_t>& sampled);
  /// Abandons an in-flight plan (its step failed): its sequences lose their KV and are
  /// queued again to be recomputed.
  void abandon(const step_plan& plan);
  /// Gives back an in-flight plan whose step failed while the KV of its sequences'
  /// computed tokens survives (stage-local recovery): they stay running with their blocks
  /// and their chunks are scheduled again.
  void rollback(const step_plan& plan);
  /// The KV storage was lost: every running sequence goes back to the front of the
  /// queue (in admission order) to be recomputed from its tokens. Call after abandoning
  /// the plans in flight.
  void reset();
  /// Ends a sequence (stop condition found by the caller) and frees its blocks; one still
  /// held by a step in flight (an ahead step) ends when that step completes or is abandoned.
  void finish(seq_id id, finish_reason why);
  /// Takes finished sequences out of the scheduler.
  std::vector<std::unique_ptr<sequence>> take_finished();

  bool has_work() const { return !running_.empty() || !waiting_.empty(); }
  int n_running() const { return static_cast<int>(running_.size()); }
  /// The running sequences, in admission order.
  const std::vector<std::unique_ptr<sequence>>& running() const { return running_; }
  int n_waiting() const { return static_cast<int>(waiting_.size()); }
  const scheduler_config& config() const { return cfg_; }

 private:
  bool schedule_running(step_plan& plan, int& budget, bool decodes, bool ahead);
  /// Whether exactly one step in flight holds `s`, which has not ended and no cancel waits for.
  bool one_step_holds(const sequence& s) const;
  /// Whether `s`, held by the one step in flight, may get its next decode planned ahead.
  bool may_go_ahead(const sequence& s) const;
  /// Whether `s`, whose prompt chunk in flight samples nothing, may get its next chunk
  /// planned ahead (its KV follows the chunk in flight, which the shard writes first).
  bool may_chunk_ahead(const sequence& s) const;
  /// A step holding `s` is over (completed, abandoned or rolled back).
  void land(sequence* s, const scheduled_chunk& c);
  /// Moves an ended sequence whose last step landed to the finished list.
  bool retire_if_ended(sequence* s);
  void admit_waiting(step_plan& plan, int& budget);
  /// Prefill tokens a step may carry beside the decodes already in `plan`.
  int prefill_cap(const step_plan& plan) const;
  void preempt(sequence* s, step_plan& plan);
  sequence* newest_idle();
  /// Plans rows [start, start + len) of `s` (`ahead`: a decode whose token is in flight).
  void add_chunk(step_plan& plan, sequence* s, int start, int len, int& budget, bool ahead = false);
  void release(sequence* s);
  void drop_cancelled();
  sequence* find(seq_id id);

  block_manager& blocks_;
  scheduler_config cfg_;
  std::deque<std::unique_ptr<sequence>> waiting_;
  std::vector<std::unique_ptr<sequence>> running_;  ///< in admission order
  std::vector<std::unique_ptr<sequence>> finished_;
  std::vector<seq_id> cancel_requests_;
};

}  // namespace troupe
