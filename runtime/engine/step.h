#pragma once
/// One engine step as it travels from the scheduler to whoever runs the forward: a
/// local shard context, or the shards of a replica (actors). Small by design: token
/// ids, positions, block tables and sampling requests, never activations.
#include <cstdint>
#include <vector>

#include "runtime/engine/forward.h"
#include "runtime/engine/kv_cache.h"
#include "runtime/engine/sampler.h"

namespace troupe {

/// What to sample for one logit row of a step.
struct sample_request {
  seq_id id = 0;
  sampling_params params;
  std::vector<int32_t> history;  ///< prompt + generated tokens; empty when no penalty needs them
  int n_prompt = 0;              ///< prompt tokens at the front of `history`
  uint64_t token_index = 0;      ///< index of the token being generated
};

/// A step's forward input and its sampling requests (in logit-row order).
struct step_request {
  uint64_t step_id = 0;
  batch_input batch;
  std::vector<sample_request> samples;
  /// Stage-local recovery: >= 0 makes this a replay that rebuilds the KV cache of stage
  /// `replay_stage` only (the stage before sends the inputs it kept; no other stage works,
  /// nothing is sampled). -1: a normal step.
  int32_t replay_stage = -1;
  /// Overlapped steps: rows whose token the step `ahead_of` (the one run just before this on
  /// the same shard) sampled: batch.tokens[ahead_rows[i]] = that step's sample ahead_from[i]
  /// (and it ends the row's sampling history). Filled in by the shard (shard_worker::run).
  uint64_t ahead_of = 0;
  std::vector<int32_t> ahead_rows;  ///< [A] rows of this step
  std::vector<int32_t> ahead_from;  ///< [A] sample indices of step ahead_of
  /// Overlapped steps: the next step may take this one's tokens, so every tensor rank of a
  /// one-stage replica samples (and answers with) them, not only rank 0.
  bool keep_tokens = false;
};

/// Samples one token per row of `logits` [L, vocab] (L == requests.size()).
std::vector<sample_result> sample_rows(tensor_view logits, const std::vector<sample_request>& requests,
                                       sampler_scratch& scratch);

/// True when `p` has a penalty that reads the token history.
bool needs_history(const sampling_params& p);

/// Samples a step's logits wherever they live. On the CPU: sample_rows. On CUDA: on the
/// device (kernels::argmax / kernels::sample) when no row needs penalties or logprobs, so
/// only the token ids come back; otherwise on the host from a copy of the logits. Owns the
/// buffers that takes; one per shard context.
class step_sampler {
 public:
  /// Finishes `ctx`'s step (waiting until `d`, see shard_context::finish) and samples one
  /// token per row of `logits` [L, vocab] f32. `keep_logits`: also bring the logits to the
  /// host (see host_logits()).
  std::vector<sample_result> run(shard_context& ctx, tensor_view logits, const std::vector<sample_request>& requests,
                                 std::chrono::steady_clock::time_point d, bool keep_logits = false);
  /// The last run's logits [L, vocab] on the host, when it brought them there; else null.
  const float* host_logits() const { return host_logits_; }
  /// Whether `requests` are sampled on the device (no penalty history, no logprobs).
  bool device_can_sample(const std::vector<sample_request>& requests) const;
  /// Pipelined steps: enqueues the device sampling of `logits` [L, vocab] (CUDA;
  /// device_can_sample must hold) and the copy of its tokens to a host buffer of slot `slot`
  /// (0 or 1: one per step in flight), without waiting; device_tokens() holds them until the
  /// next launch.
  void launch(shard_context& ctx, tensor_view logits, const std::vector<sample_request>& requests, int slot);
  /// The tokens launch() copied into slot `slot`, once the step has finished (`n` of them).
  std::vector<sample_result> collect(int slot, size_t n) const;
  /// The last launch's tokens on the device ([L] i32).
  tensor_view device_tokens() const { return last_tokens_; }
  /// Rows a launch takes without growing its buffers (growing drops the host slots, so a
  /// step in flight must not see it).
  int64_t capacity() const { return tokens_.numel(); }

 private:
  sampler_scratch scratch_;
  tensor tokens_;                 // [rows] i32 on the device
  tensor_view last_tokens_;       // [L] of tokens_: the last launch's
  pinned_buffer tokens_host_[2];  // [rows] i32, by slot
  pinned_buffer rows_host_[2];    // [rows] kernels::sample_row, by slot: sample()'s staging (an abandoned
                                  // step's copy out of its slot may still be queued: it samples nothing read)
  pinned_buffer logits_host_;  // [L, vocab] f32
  const float* host_logits_ = nullptr;
};

}  // namespace troupe
