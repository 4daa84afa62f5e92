#pragma once
/// The single-process inference engine: one model, one shard context, a paged KV
/// cache and a continuous-batching scheduler. Requests go in; per-token events come
/// out of step(). Not thread-safe: one driver thread calls it (the replica actor in a
/// cluster, the CLI in a single process).
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "runtime/engine/forward.h"
#include "runtime/engine/kv_cache.h"
#include "runtime/engine/sampler.h"
#include "runtime/engine/scheduler.h"
#include "runtime/engine/step.h"
#include "runtime/text/stop_matcher.h"

namespace troupe {

/// Engine sizes and switches.
struct engine_config {
  int n_threads = 0;            ///< CPU threads; 0 = all cores
  int block_size = 16;          ///< tokens per KV block
  int kv_tokens = 16384;        ///< KV cache capacity in tokens (rounded up to blocks)
  int max_batch_tokens = 512;   ///< token budget per step (chunked prefill)
  int max_seqs = 32;            ///< sequences running at once
  int max_prefill_tokens = 0;   ///< prefill tokens a step carries beside decodes; 0 = the rest of the budget
  int prefill_per_decode = 0;   ///< scheduler_config::prefill_per_decode
  int max_context = 0;          ///< per-sequence limit; 0 = the model's, capped by the cache
  bool prefix_caching = true;
  bool record_logits = false;   ///< attach each sampled position's logits to its event (tests)
  bool local_execution = true;  ///< run the forward here; false: shards run it (begin/end_step)
  bool cuda_graphs = true;      ///< CUDA: replay decode steps from captured graphs
  bool batch_invariant = false; ///< see context_params::batch_invariant
  int graph_warmup_context = 0; ///< see context_params::graph_warmup_context (captured at construction)
  /// Overlapped steps (begin_step/end_step only): while exactly one step is in flight,
  /// begin_step also plans the next decode of its sampling sequences (scheduler::schedule's
  /// `ahead`), whose tokens the shard that ran that step fills in (step_request::ahead_rows).
  /// A replica of one shard then keeps two steps queued, so the device never waits for the
  /// head between them.
  bool overlap = false;
};

/// What one request produced in one step.
struct token_event {
  seq_id id = 0;
  int32_t token = -1;            ///< -1 when the event only reports the end (cancel)
  std::string text;              ///< new text safe to show (never half a character, never a stop string)
  float logprob = 0.0f;
  std::vector<token_logprob> top;
  bool finished = false;
  finish_reason reason = finish_reason::none;
  std::vector<float> logits;     ///< [vocab] when record_logits is on
};

/// Where a request resumes (request migration): the tokens its client already received.
/// The resumed sequence counts them as generated output (token index, max_tokens,
/// penalties and stop checks see them), and its detokenizer and stop matcher are primed
/// with them, so the events continue the stream with no gap and no duplicate text.
struct resume_point {
  std::vector<int32_t> emitted;  ///< [n] tokens already sent, in order
};

/// A scheduled step waiting for its forward and sampling (see engine::begin_step).
struct pending_step {
  step_plan plan;
  step_request request;
};

/// Final result of one request (see engine::generate).
struct generation_result {
  std::vector<int32_t> prompt_tokens;
  std::vector<int32_t> tokens;
  std::string text;
  finish_reason reason = finish_reason::none;
  std::vector<float> logprobs;
  std::vector<std::vector<float>> logits;  ///< per generated token, when record_logits
};

class engine {
 public:
  engine(std::shared_ptr<const model> m, engine_config cfg);
  engine(const engine&) = delete;
  engine& operator=(const engine&) = delete;

  /// Queues a request. Throws std::invalid_argument naming the problem (sampling
  /// values, empty prompt, token ids outside the vocabulary, prompt + max_tokens
  /// longer than the context).
  seq_id submit(std::vector<int32_t> prompt, const sampling_params& p);
  /// Queues a request that resumes after `from.emitted` (see resume_point). Throws
  /// std::invalid_argument as submit does, and when an emitted token is outside the
  /// vocabulary or the emitted tokens already reach max_tokens.
  seq_id submit(std::vector<int32_t> prompt, const sampling_params& p, const resume_point& from);
  /// Cancels a queued or running request; its blocks are freed at the next step.
  bool cancel(seq_id id);
  /// Runs one scheduler iteration here (local_execution) and returns its events.
  std::vector<token_event> step();

  /// Schedules a step from the sequences not in flight, within `budget` tokens (0 = the
  /// configured budget); nullopt when none can run now. Several may be in flight. With
  /// engine_config::overlap and one step in flight, the step may hold ahead rows.
  std::optional<pending_step> begin_step(int budget = 0);
  /// Completes a step with one sample per logit row (and, optionally, the logits
  /// [L, vocab] for recording) and returns its events.
  std::vector<token_event> end_step(pending_step& s, const std::vector<sample_result>& samples,
                                    const float* logits = nullptr);
  /// Gives up an in-flight step (its shards failed): its sequences are recomputed later.
  void abandon_step(pending_step& s);
  /// Stage-local recovery: gives back an in-flight step whose shards failed while most
  /// stages keep their KV cache: its sequences keep their blocks and run the step's tokens
  /// again later (scheduler::rollback).
  void hold_step(pending_step& s) {
    step_landed();
    sched_.rollback(s.plan);
  }
  /// Stage-local recovery: the steps that rebuild restarted stages' KV cache from every
  /// running sequence's computed tokens, in order, at most max_batch_tokens rows each
  /// (replay_stage still -1: the caller sets it). Forgets every cached prefix no running
  /// sequence holds (the restarted stage lost them). `tokens` gets the rows in all.
  std::vector<step_request> replay_steps(int64_t& tokens);
  /// The shards' KV cache is gone (they were replaced): every running sequence is
  /// recomputed from its tokens and no cached prefix is reused. Call after abandon_step.
  void kv_lost() { sched_.reset(); }
  /// The shards hold only `n_blocks` KV blocks (sized from their free device memory): the
  /// scheduler uses no more. See block_manager::limit_blocks.
  void limit_kv_blocks(int n_blocks) { blocks_.limit_blocks(n_blocks); }
  /// Events of sequences that ended outside a step (cancelled while waiting).
  std::vector<token_event> take_ended();
  bool has_work() const { return sched_.has_work(); }

  /// Runs `prompts` together to completion (a convenience for the CLI and tests).
  std::vector<generation_result> generate(const std::vector<std::vector<int32_t>>& prompts,
                                          const sampling_params& p);

  const model& get_model() const { return *model_; }
  const engine_config& config() const { return cfg_; }
  /// Turns overlapped steps on or off (engine_config::overlap) for the steps begun from now.
  void set_overlap(bool on) { cfg_.overlap = on; }
  const block_manager& blocks() const { return blocks_; }
  /// Journals the prefix cache's changes (block_manager::track_prefix_changes).
  void track_prefix_changes(std::size_t max_changes) { blocks_.track_prefix_changes(max_changes); }
  /// The prefix cache's changes since the last take (block_manager::take_prefix_changes).
  prefix_changes take_prefix_changes(std::size_t max_snapshot) { return blocks_.take_prefix_changes(max_snapshot); }
  /// Every key the prefix cache holds now (block_manager::prefix_snapshot).
  prefix_changes prefix_snapshot(std::size_t max_keys) { return blocks_.prefix_snapshot(max_keys); }
  /// The local shard context (null without local_execution).
  const shard_context* context() const { return ctx_.get(); }
  const scheduler& sched() const { return sched_; }
  int max_context() const { return max_context_; }

 private:
  struct request_state {
    std::unique_ptr<incremental_decoder> decoder;
    std::unique_ptr<stop_matcher> stops;
  };
  static std::string final_text(request_state& st);
  batch_input build_batch(const step_plan& plan) const;
  /// Fills `r`'s ahead rows from the plan (the step before it is the last begun one).
  void link_ahead_rows(const step_plan& plan, step_request& r) const;
  void step_landed();
  void emit(sequence& s, const sample_result& r, token_event& ev);
  std::optional<finish_reason> check_stop(const sequence& s, int32_t tok, token_event& ev);

  std::shared_ptr<const model> model_;
  engine_config cfg_;
  int max_context_ = 0;
  std::unique_ptr<shard_context> ctx_;  ///< null unless local_execution
  step_sampler sampler_;  ///< samples the local context's logits
  block_manager blocks_;
  scheduler sched_;
  std::unordered_map<seq_id, request_state> states_;
  seq_id next_id_ = 1;
  uint64_t next_step_ = 1;
  int steps_in_flight_ = 0;  ///< begun and not yet ended, abandoned or held
  uint64_t last_step_ = 0;   ///< the last begun step's id
  std::unordered_map<seq_id, int32_t> last_sample_rows_;  ///< the last begun step's sample index per sequence
};

}  // namespace troupe
