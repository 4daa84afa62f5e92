#pragma once
/// The model forward, written once against the op interface (kernels/*.h), and the
/// per-shard context that owns everything mutable it touches: KV cache, scratch
/// activations, the op context (threads or stream).
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <utility>
#include <vector>

#include "kernels/attention.h"
#include "kernels/op_context.h"
#include "parallel/linear.h"
#include "kernels/base/device.h"
#include "runtime/model/model.h"

namespace troupe {

/// One engine step's flattened batch, as the scheduler describes it (host memory).
struct batch_input {
  std::vector<int32_t> tokens;        ///< [T] token ids of every scheduled row
  std::vector<int32_t> positions;     ///< [T] absolute position of each row
  std::vector<int32_t> slots;         ///< [T] KV slot (block * block_size + offset) of each row
  std::vector<int32_t> query_start;   ///< [S + 1] first row of each sequence
  std::vector<int32_t> context_len;   ///< [S] KV length of each sequence after this step
  std::vector<int32_t> block_tables;  ///< [S, max_blocks]
  int max_blocks = 0;
  std::vector<int32_t> logit_rows;    ///< [L] rows whose logits are wanted

  int n_tokens() const { return static_cast<int>(tokens.size()); }
  int n_seqs() const { return static_cast<int>(context_len.size()); }
  /// Sequences at the front with one row each (the scheduler puts decodes first).
  int leading_singles() const {
    int n = 0;
    while (n + 1 < static_cast<int>(query_start.size()) && query_start[n + 1] - query_start[n] == 1) ++n;
    return n;
  }
  /// "decode" (one new token per sequence), "mixed" (decodes beside prefill chunks) or
  /// "prefill" (no sequence with a single row); a one-token prefill chunk counts as a decode.
  const char* kind() const {
    int singles = 0;
    for (size_t i = 0; i + 1 < query_start.size(); ++i) singles += query_start[i + 1] - query_start[i] == 1;
    return singles == n_seqs() ? "decode" : singles > 0 ? "mixed" : "prefill";
  }
};

/// Sizes of a shard context.
struct context_params {
  int n_blocks = 256;         ///< KV blocks per layer
  int block_size = 16;        ///< tokens per block
  int max_batch_tokens = 512; ///< rows one step may carry
  int max_logit_rows = 64;    ///< rows one step may want logits for
  /// CUDA: replay decode steps (one token per sequence) from CUDA graphs captured per
  /// padded batch size and context bucket.
  bool cuda_graphs = true;
  /// CUDA: warm_up() runs a step at every matmul algorithm's row count and (with graphs)
  /// captures every decode batch bucket for contexts up to this many tokens, so no serving
  /// step pays a heuristic query, a kernel's loading, an eager run or a capture (0: none).
  int graph_warmup_context = 0;
  /// Stage-local recovery: a stage with a next stage keeps every residual row it sends,
  /// by KV slot, so a restarted next stage can rebuild its KV cache (replay_send).
  bool keep_stage_inputs = false;
  /// CUDA: time each step on the device (events at the start of forward() and in
  /// finish()); see last_step_device_ms. Benchmarks only.
  bool time_steps = false;
  /// Every kernel computes a row in an order independent of the batch (see
  /// kernels::op_context::batch_invariant): a sequence's logits are bitwise the same alone
  /// or in any batch, and a resumed request repeats the fault-free tokens.
  bool batch_invariant = false;
};

/// Floats of the decode attention workspace (kernels::attention_batch::workspace) a shard
/// context of `p` keeps on `ops`' backend for n_heads query and n_kv_heads kv heads of
/// head_dim: decode steps up to its largest graph's rows over contexts up to
/// graph_warmup_context (8192 when 0) and the cache's span, each rounded up as a graph's
/// block table is (a power of two, at least 8 blocks). Larger steps allocate their own.
int64_t attention_workspace_floats(const kernels::op_context& ops, const context_params& p, int n_heads, int n_kv_heads,
                                   int head_dim);

/// How a shard talks to the rest of its replica. All null: the whole model is here.
struct parallel_env {
  parallel::communicator* tensor_group = nullptr;  ///< the tensor-parallel ranks of this stage
  parallel::communicator* prev_stage = nullptr;    ///< link to the same TP rank of the stage before
  parallel::communicator* next_stage = nullptr;    ///< link to the same TP rank of the stage after
  std::chrono::milliseconds timeout{5000};         ///< deadline of each tensor-parallel collective
  /// Deadline of each send/recv between stages: a wait that includes the other stage's
  /// compute of the whole step, so much longer than `timeout`.
  std::chrono::milliseconds stage_timeout{120000};
};

/// Mutable per-shard state. Owns KV storage, scratch, the device-side step metadata and
/// (unless given one) its stream; never shared between threads. On CUDA the activations and
/// the KV cache have the weights' type (bf16 or f16), logits are f32, and the forward only
/// enqueues: finish() waits for it.
class shard_context {
 public:
  /// A shard over `m`'s loaded layers and tensor slice; `env` links it to its peers. On CUDA
  /// `ops.stream` is the stream to enqueue on (the communicators' too); null: the context
  /// makes its own on the model's device.
  shard_context(const model& m, const context_params& p, kernels::op_context ops,
                parallel_env env = {});
  shard_context(const shard_context&) = delete;
  shard_context& operator=(const shard_context&) = delete;

  const context_params& params() const { return params_; }
  const kernels::op_context& ops() const { return ops_; }
  /// Bytes of KV storage (all layers, K and V).
  size_t kv_bytes() const;

  /// Runs this shard's layers over `b`. The first stage embeds the tokens, later stages
  /// receive the residual stream from the stage before; the last stage returns logits
  /// [L, vocab] f32 for b.logit_rows on the context's device (valid until the next call),
  /// other stages send the residual on and return an empty view. Throws
  /// std::invalid_argument when `b` exceeds the context's sizes, parallel::comm_error when a
  /// peer fails. On CUDA the work is only enqueued: call finish() before reading the logits.
  tensor_view forward(const batch_input& b);
  /// Rows [dst, dst + count) of a step's tokens taken from a device array (token_feed).
  struct token_run {
    int dst = 0, src = 0, count = 0;
  };
  /// Token ids a CUDA step copies on the device, after its upload, from `source` (i32, e.g.
  /// the step before it's samples) into its rows: a pipelined step needs no host copy of them.
  struct token_feed {
    tensor_view source;
    std::vector<token_run> runs;
  };
  /// forward() with `feed`'s token ids in place of b.tokens at its rows (CUDA).
  tensor_view forward(const batch_input& b, const token_feed& feed);
  /// Waits until the enqueued work is done (no-op on the CPU). Throws parallel::comm_error
  /// (the communicators are aborted) when it is not done by `d` or a peer failed.
  void finish(std::chrono::steady_clock::time_point d);
  /// Pipelined steps (CUDA, no peers): marks the end of the work enqueued so far as the end
  /// of the last forward()'s step, without waiting; returns the mark for finish_mark. Two
  /// marks alternate: at most two steps may be in flight.
  int mark_step();
  /// Whether the step of `mark` has finished on the device.
  bool mark_done(int mark) const;
  /// Waits for the step of `mark` (polling, until `d`: else parallel::comm_error, timeout);
  /// sets last_step_device_ms with params.time_steps.
  void finish_mark(int mark, std::chrono::steady_clock::time_point d);
  bool is_first_stage() const;
  bool is_last_stage() const;
  /// Decode steps replayed from a captured graph so far.
  int64_t graph_replays() const { return graph_replays_; }
  /// Whether one-row steps run their norms and residual adds inside the projections.
  bool fuses_norms() const { return norms_fusable_; }
  /// On CUDA with context_params.graph_warmup_context > 0, for a shard without tensor or
  /// pipeline peers (their steps are collectives that a restarted shard's peers would not
  /// join): runs one step of padding rows at every kernels::matmul_plan_rows count up to
  /// max_batch_tokens that no decode graph has (so a mixed step's row count costs no
  /// cuBLASLt heuristic query nor a kernel module's loading), then with graphs captures the
  /// decode graph of every padded batch size and context bucket up to graph_warmup_context
  /// (each run eagerly once, then captured), largest first; waits for the device by `d`.
  /// Decode steps afterwards only replay.
  void warm_up(std::chrono::steady_clock::time_point d);
  /// Decode graphs captured so far.
  size_t graph_count() const { return graphs_.size(); }
  /// With context_params.time_steps: the device time from the start of the last forward()
  /// to the end of the work enqueued when finish() was called (ms); else 0.
  double last_step_device_ms() const { return last_step_device_ms_; }

  // -- stage-local recovery --------------------------------------------------------------
  /// Relinks the context to new communicators (its peers were replaced); the KV cache and
  /// the kept stage inputs stay. The old communicators may be destroyed afterwards.
  void set_env(parallel_env env);
  /// Replay, stage before the restarted one: sends the residual rows it kept for `b`'s
  /// slots to the next stage, computing nothing. Throws std::logic_error when this stage
  /// keeps no inputs (context_params.keep_stage_inputs) or has no next stage.
  void replay_send(const batch_input& b);
  /// Replay, restarted stage: runs its layers over `b` (receiving the residual from the
  /// stage before, or embedding the tokens on the first stage) to rebuild its KV cache;
  /// keeps its own outputs for the stage after but sends nothing and computes no logits.
  void replay_compute(const batch_input& b);
  /// KV rows written since the context was made (one per batch row: every layer's K and V).
  int64_t kv_rows_written() const { return kv_rows_; }
  /// A hash of the K and V rows at `slots` in every layer (tests: a kept cache is untouched).
  uint64_t kv_checksum(const std::vector<int32_t>& slots) const;

 private:
  /// Where one step's index arrays are (host vectors on the CPU, the device copy on CUDA).
  struct step_views {
    tensor_view tokens, positions, slots, logit_rows;  // i32 [T], [T], [T], [L]
    kernels::attention_batch meta;
  };
  void check(const batch_input& b) const;
  step_views host_views(const batch_input& b) const;
  step_views upload(const batch_input& b);
  void compute(const step_views& v, int n_tokens, int n_logits, bool send = true);
  /// Uploads `b` (or views it on the host) and computes it, with no graph.
  void run_eager(const batch_input& b);
  /// The padded row counts decode graphs are captured at (graph_rows up to the step's cap).
  std::vector<int> graph_batch_rows() const;
  void make_linears();
  tensor_view forward_graph(const batch_input& b);
  /// (padded rows, padded max_blocks) of a decode batch of `s` sequences.
  std::pair<int, int> graph_key(int s, int max_blocks) const;
  /// Runs padded batch `p` of graph `key`: replays it, captures it (second sight) or runs
  /// it eagerly (first sight).
  void run_graph(std::pair<int, int> key, const batch_input& p);
  /// warm_up's two parts: the matmul row counts no graph has, eagerly; the decode graphs.
  void warm_up_plans(std::chrono::steady_clock::time_point d);
  void warm_up_graphs(std::chrono::steady_clock::time_point d);
  bool graph_eligible(const batch_input& b) const;
  batch_input padded(const batch_input& b, int rows, int max_blocks) const;
  void run_layer(int layer, int n_tokens, const kernels::attention_batch& meta,
                 tensor_view positions, tensor_view slots);
  /// run_layer with each norm in the projection after it, RoPE and the KV write in the q/k/v
  /// projection's store and each residual add in the store of the projection before it
  /// (kernels/norm_matmul.h): one row, every layer's q/k/v and gate/up fused, no all-reduce in
  /// the row-parallel projections. Leaves residual_ complete (no delta_ pending).
  void run_layer_fused(int l, int t, const kernels::attention_batch& meta, tensor_view positions, tensor_view slots);
  tensor_view rows(const tensor& t, int n) const;
  /// finish()'s wait: the communicators' synchronize, or polling the stream, until `d`.
  void wait(std::chrono::steady_clock::time_point d);
  /// Polls `done` (yielding between polls) until it holds; past `d` throws a timeout of `op`
  /// that says `what`.
  static void poll_until(const std::function<bool()>& done, std::chrono::steady_clock::time_point d, const char* op,
                         const char* what);
  std::chrono::steady_clock::time_point stage_deadline() const;

  /// One transformer block's projections, split as this shard's tensor slice says.
  struct layer_linears {
    parallel::column_parallel_linear q, k, v, gate, up;
    parallel::column_parallel_linear qkv, gate_up;  ///< the fused weights (GPU), else over empty tensors
    parallel::row_parallel_linear o, down;
    bool fused_qkv = false, fused_gate_up = false;
  };

  const model& model_;
  context_params params_;
  device_stream own_stream_;  ///< the stream when the caller gave none (CUDA)
  kernels::op_context ops_;
  parallel_env env_;
  bool on_device_ = false;  ///< CUDA backend: metadata uploaded, work enqueued
  bool use_graphs_ = false;  ///< decode steps replay CUDA graphs
  bool norms_fusable_ = false;  ///< run_layer_fused can serve one-row steps (make_linears)
  dtype act_ = dtype::f32;  ///< activation and KV type (the weights')
  int n_heads_ = 0;     ///< query heads on this shard
  int n_kv_heads_ = 0;  ///< kv heads on this shard
  int ffn_ = 0;         ///< MLP columns on this shard
  int pad_block_ = -1;  ///< CUDA: the extra KV block padding rows of a graph batch write to
  std::vector<layer_linears> linears_;  ///< per loaded layer, from layer_begin
  tensor empty_;                        ///< "no bias" for the gate and up projections
  std::vector<tensor> k_cache_;  // per layer [n_blocks (+1 pad on CUDA), block_size, n_kv_heads_, head_dim]
  std::vector<tensor> v_cache_;  // per layer [n_blocks (+1 pad on CUDA), block_size, n_kv_heads_, head_dim]
  tensor residual_;              // [max_batch_tokens, hidden]
  tensor normed_;                // [max_batch_tokens, hidden]
  tensor delta_;                 // [max_batch_tokens, hidden]
  tensor q_;                     // [max_batch_tokens, n_heads_, head_dim]
  tensor k_;                     // [max_batch_tokens, n_kv_heads_, head_dim]
  tensor v_;                     // [max_batch_tokens, n_kv_heads_, head_dim]
  tensor attn_;                  // [max_batch_tokens, n_heads_, head_dim]
  tensor gate_;                  // [max_batch_tokens, ffn_]
  tensor up_;                    // [max_batch_tokens, ffn_] (layers without a fused gate/up)
  tensor qkv_;                   // [max_batch_tokens, (n_heads_ + 2 n_kv_heads_) * head_dim] (fused q/k/v)
  tensor gate_up_;               // [max_batch_tokens, 2 ffn_] (fused gate/up)
  tensor last_;                  // [max_logit_rows, hidden]
  tensor last_normed_;           // [max_logit_rows, hidden]
  tensor logits_;                // [max_logit_rows, vocab] f32
  tensor attn_workspace_;        // [attention_workspace_floats] f32 (CUDA): decode split partials
  tensor split_counts_;          // [max_batch_tokens * n_kv_heads] i32 (CUDA), zero between ops: the fused split merge's
  tensor sent_;                  // [kv slots (n_blocks (+1 pad on CUDA) * block_size), hidden]: rows sent on, by slot
  tensor meta_;                  // [meta capacity] i32 on the device: one step's index arrays
  pinned_buffer meta_host_;      // staging of meta_ (same size)
  device_timer upload_mark_;     ///< CUDA: around the last upload's copy (meta_host_ is rewritten after it)
  const token_feed* feed_ = nullptr;  ///< during forward(b, feed): applied by upload()
  std::map<std::pair<int, int>, device_graph> graphs_;  ///< (rows, max_blocks) -> decode graph
  std::set<std::pair<int, int>> warmed_;                ///< shapes run once eagerly (then captured)
  int64_t graph_replays_ = 0;
  int64_t kv_rows_ = 0;
  device_timer marks_[2];            ///< CUDA: each from a forward() to its step's end (mark_step or finish)
  int mark_ = 0;                     ///< the mark the next forward() starts
  double last_step_device_ms_ = 0;
};

}  // namespace troupe
