#include "runtime/engine/forward.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>

#include "kernels/add.h"
#include "kernels/attention.h"
#include "kernels/base/progress.h"
#include "kernels/embedding.h"
#include "kernels/matmul.h"
#include "kernels/norm_matmul.h"
#include "kernels/rmsnorm.h"
#include "kernels/rope.h"
#include "kernels/rope_kv_write.h"
#include "kernels/scatter_rows.h"
#include "kernels/silu_mul.h"
#include "parallel/communicator.h"

namespace troupe {

namespace k = troupe::kernels;

namespace {

/// A view over host-side i32 data (the CPU backend reads it in place).
tensor_view host_i32(const std::vector<int32_t>& v, shape_t s) {
  tensor_view t;
  t.data = const_cast<int32_t*>(v.data());
  t.type = dtype::i32;
  t.where = backend_kind::cpu;
  t.shape = s;
  return t;
}

/// Padded decode batch sizes that get a graph of their own.
constexpr int graph_rows[] = {1, 2, 4, 8, 16, 32, 48, 64, 96, 128, 192, 256, 384, 512};

}  // namespace

shard_context::shard_context(const model& m, const context_params& p, k::op_context ops,
                             parallel_env env)
    : model_(m), params_(p), ops_(ops), env_(env) {
  const auto& c = m.config();
  if (p.n_blocks <= 0 || p.block_size <= 0 || p.max_batch_tokens <= 0 || p.max_logit_rows <= 0)
    throw std::invalid_argument("shard context: block count, block size and batch sizes must be positive");
  if (m.layer_begin() >= m.layer_end())
    throw std::invalid_argument("shard context: the model holds no layers");
  if (ops.backend != m.device().backend)
    throw std::invalid_argument(std::string("shard context: the ops run on ") + backend_name(ops.backend) +
                                " but the weights are on " + m.device().str());
  on_device_ = ops.backend == backend_kind::cuda;
  ops_.batch_invariant = ops_.batch_invariant || p.batch_invariant;
  if (on_device_) {
    use_device(m.device());
    if (!ops_.stream) {
      own_stream_ = device_stream(m.device());
      ops_.stream = own_stream_.get();
    }
    for (auto& m : marks_) m = device_timer(backend_kind::cuda);
    upload_mark_ = device_timer(backend_kind::cuda);
  }
  act_ = on_device_ ? m.weight_type() : dtype::f32;
  // This shard's share of heads and MLP columns, read off the (possibly sliced) weights.
  const auto& first = m.weights().layers[static_cast<size_t>(m.layer_begin())];
  n_heads_ = first.q_rows / c.head_dim;
  n_kv_heads_ = first.kv_rows / c.head_dim;
  ffn_ = first.ffn_rows;
  bool any_qkv = false, any_gate_up = false, all_qkv = true, all_gate_up = true;
  for (int l = m.layer_begin(); l < m.layer_end(); ++l) {
    const auto& lw = m.weights().layers[static_cast<size_t>(l)];
    any_qkv = any_qkv || !lw.wqkv.empty();
    all_qkv = all_qkv && !lw.wqkv.empty();
    any_gate_up = any_gate_up || !lw.w_gate_up.empty();
    all_gate_up = all_gate_up && !lw.w_gate_up.empty();
  }
  const auto be = ops.backend;
  const int64_t t = p.max_batch_tokens, hd = c.head_dim;
  pad_block_ = on_device_ ? p.n_blocks : -1;
  k_cache_.resize(static_cast<size_t>(c.n_layers));
  v_cache_.resize(static_cast<size_t>(c.n_layers));
  for (int l = m.layer_begin(); l < m.layer_end(); ++l) {
    shape_t kv{p.n_blocks + (on_device_ ? 1 : 0), p.block_size, n_kv_heads_, hd};
    k_cache_[static_cast<size_t>(l)] = tensor(kv, act_, be);
    v_cache_[static_cast<size_t>(l)] = tensor(kv, act_, be);
  }
  make_linears();
  residual_ = tensor({t, c.hidden}, act_, be);
  normed_ = tensor({t, c.hidden}, act_, be);
  delta_ = tensor({t, c.hidden}, act_, be);
  q_ = tensor({t, n_heads_, hd}, act_, be);
  if (!all_qkv) {
    k_ = tensor({t, n_kv_heads_, hd}, act_, be);
    v_ = tensor({t, n_kv_heads_, hd}, act_, be);
  }
  if (any_qkv) qkv_ = tensor({t, (n_heads_ + 2 * n_kv_heads_) * hd}, act_, be);
  attn_ = tensor({t, n_heads_, hd}, act_, be);
  gate_ = tensor({t, ffn_}, act_, be);
  if (!all_gate_up) up_ = tensor({t, ffn_}, act_, be);
  if (any_gate_up) gate_up_ = tensor({t, 2 * int64_t{ffn_}}, act_, be);
  if (is_last_stage()) {
    last_ = tensor({p.max_logit_rows, c.hidden}, act_, be);
    last_normed_ = tensor({p.max_logit_rows, c.hidden}, act_, be);
    logits_ = tensor({p.max_logit_rows, c.vocab}, dtype::f32, be);
  }
  if (p.keep_stage_inputs && !is_last_stage())
    sent_ = tensor({static_cast<int64_t>(p.n_blocks + (on_device_ ? 1 : 0)) * p.block_size, c.hidden}, act_, be);
  bool linked = false;
  if (on_device_)
    for (auto* comm : {env.tensor_group, env.prev_stage, env.next_stage})
      if (comm) {
        linked = true;
        if (!comm->set_deferred(true))
          throw std::invalid_argument("shard context: a CUDA shard needs device communicators (NCCL)");
      }
  const int64_t ws = attention_workspace_floats(ops_, p, n_heads_, n_kv_heads_, c.head_dim);
  if (ws > 0) attn_workspace_ = tensor({ws}, dtype::f32, be);
  if (on_device_) {
    // The fused split merge's counts (kernels::attention_batch::split_counts), all zero: one
    // a (row, kv head) of the largest step.
    const std::vector<int32_t> zeros(static_cast<size_t>(std::max(p.max_batch_tokens, 1)) * n_kv_heads_, 0);
    split_counts_ = tensor({static_cast<int64_t>(zeros.size())}, dtype::i32, be);
    copy_bytes(split_counts_.view().data, zeros.data(), zeros.size() * sizeof(int32_t), be, ops_.stream);
    poll_until([this] { return stream_done(ops_.stream); }, stage_deadline(), "shard context",
               "zeroing the split counts did not finish by the deadline");  // `zeros` is read until then
  }
  // Decode steps that all-reduce or send over NCCL run eagerly: capturing them into graphs
  // hung on the GPU machine (non-blocking NCCL communicators), see docs/benchmarks.md.
  use_graphs_ = on_device_ && p.cuda_graphs && !linked;
}

void shard_context::make_linears() {
  linears_.clear();
  norms_fusable_ = true;
  for (int l = model_.layer_begin(); l < model_.layer_end(); ++l) {
    const auto& lw = model_.weights().layers[static_cast<size_t>(l)];
    linears_.push_back(layer_linears{
        {lw.wq, lw.bq}, {lw.wk, lw.bk}, {lw.wv, lw.bv}, {lw.w_gate, empty_}, {lw.w_up, empty_},
        {lw.wqkv, lw.bqkv}, {lw.w_gate_up, empty_},
        {lw.wo, env_.tensor_group, env_.timeout}, {lw.w_down, env_.tensor_group, env_.timeout},
        !lw.wqkv.empty(), !lw.w_gate_up.empty()});
    const auto& made = linears_.back();
    norms_fusable_ = norms_fusable_ && made.fused_qkv && made.fused_gate_up && made.o.adds_in_store() &&
                     made.down.adds_in_store();
  }
}

void shard_context::set_env(parallel_env env) {
  if (on_device_)
    for (auto* comm : {env.tensor_group, env.prev_stage, env.next_stage})
      if (comm && !comm->set_deferred(true))
        throw std::invalid_argument("shard context: a CUDA shard needs device communicators (NCCL)");
  if (!is_first_stage() && !env.prev_stage) throw std::invalid_argument("shard context: relinked without the stage before");
  if (!is_last_stage() && !env.next_stage) throw std::invalid_argument("shard context: relinked without the stage after");
  env_ = env;
  make_linears();
}

void shard_context::replay_send(const batch_input& b) {
  if (sent_.empty())
    throw std::logic_error("shard context: this stage kept no inputs for the next (context_params.keep_stage_inputs)");
  check(b);
  const int t = b.n_tokens();
  step_views v = on_device_ ? upload(b) : host_views(b);
  k::embedding(ops_, rows(residual_, t), sent_.view(), v.slots);
  env_.next_stage->send(rows(residual_, t), 1 - env_.next_stage->rank(), stage_deadline());
}

void shard_context::replay_compute(const batch_input& b) {
  check(b);
  step_views v = on_device_ ? upload(b) : host_views(b);
  v.meta.n_seqs = b.n_seqs();
  v.meta.max_blocks = b.max_blocks;
  kv_rows_ += b.n_tokens();
  compute(v, b.n_tokens(), 0, false);
}

uint64_t shard_context::kv_checksum(const std::vector<int32_t>& slots) const {
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  std::vector<unsigned char> row;
  for (int l = model_.layer_begin(); l < model_.layer_end(); ++l)
    for (const tensor* cache : {&k_cache_[static_cast<size_t>(l)], &v_cache_[static_cast<size_t>(l)]}) {
      const size_t row_bytes = cache->bytes() / static_cast<size_t>(cache->shape()[0] * cache->shape()[1]);
      row.resize(row_bytes);
      for (int32_t slot : slots) {
        const auto* src = static_cast<const unsigned char*>(cache->view().data) + static_cast<size_t>(slot) * row_bytes;
        copy_bytes(row.data(), src, row_bytes, ops_.backend, ops_.stream);
        for (unsigned char byte : row) h = (h ^ byte) * 1099511628211ull;
      }
    }
  return h;
}

bool shard_context::is_first_stage() const { return model_.layer_begin() == 0; }
bool shard_context::is_last_stage() const { return model_.layer_end() == model_.config().n_layers; }

size_t shard_context::kv_bytes() const {
  size_t n = 0;
  for (size_t l = 0; l < k_cache_.size(); ++l) n += k_cache_[l].bytes() + v_cache_[l].bytes();
  return n;
}

tensor_view shard_context::rows(const tensor& t, int n) const { return t.view().rows(0, n); }

void shard_context::check(const batch_input& b) const {
  const int t = b.n_tokens(), s = b.n_seqs();
  auto fail = [](const std::string& m) { throw std::invalid_argument("forward: " + m); };
  if (t <= 0 || t > params_.max_batch_tokens)
    fail("batch of " + std::to_string(t) + " tokens outside [1, " +
         std::to_string(params_.max_batch_tokens) + "]");
  if (b.positions.size() != static_cast<size_t>(t) || b.slots.size() != static_cast<size_t>(t))
    fail("positions and slots must have one entry per token");
  if (b.query_start.size() != static_cast<size_t>(s + 1) || b.query_start.back() != t)
    fail("query_start must have n_seqs + 1 entries ending at the token count");
  if (b.block_tables.size() != static_cast<size_t>(s) * static_cast<size_t>(b.max_blocks))
    fail("block_tables must be n_seqs x max_blocks");
  if (b.logit_rows.size() > static_cast<size_t>(params_.max_logit_rows))
    fail("too many logit rows: " + std::to_string(b.logit_rows.size()));
  const int vocab = model_.config().vocab;
  const int64_t n_slots = static_cast<int64_t>(params_.n_blocks) * params_.block_size;
  for (int i = 0; i < t; ++i) {
    if (b.tokens[i] < 0 || b.tokens[i] >= vocab)
      fail("token id " + std::to_string(b.tokens[i]) + " outside the vocabulary");
    if (b.slots[i] < 0 || b.slots[i] >= n_slots) fail("KV slot outside the cache");
  }
  for (int32_t r : b.logit_rows)
    if (r < 0 || r >= t) fail("logit row outside the batch");
  for (int32_t blk : b.block_tables)
    if (blk < 0 || blk >= params_.n_blocks) fail("block table entry outside the cache");
}

shard_context::step_views shard_context::host_views(const batch_input& b) const {
  const int t = b.n_tokens();
  step_views v;
  v.tokens = host_i32(b.tokens, {t});
  v.positions = host_i32(b.positions, {t});
  v.slots = host_i32(b.slots, {t});
  v.logit_rows = host_i32(b.logit_rows, {static_cast<int64_t>(b.logit_rows.size())});
  v.meta.query_start = host_i32(b.query_start, {b.n_seqs() + 1});
  v.meta.context_len = host_i32(b.context_len, {b.n_seqs()});
  v.meta.block_tables = host_i32(b.block_tables, {b.n_seqs(), b.max_blocks});
  return v;
}

shard_context::step_views shard_context::upload(const batch_input& b) {
  const std::vector<int32_t>* parts[] = {&b.tokens,      &b.positions,   &b.slots,       &b.logit_rows,
                                         &b.query_start, &b.context_len, &b.block_tables};
  size_t n = 0;
  for (const auto* p : parts) n += (p->size() + 15) / 16 * 16;  // 64-byte aligned parts
  if (meta_.empty() || static_cast<size_t>(meta_.numel()) < n) {
    // Twice what this step needs: every growth drops the captured graphs (they point into
    // the old buffer), so it must happen a few times at most.
    const size_t cap = std::max<size_t>(2 * n, 4096);
    // A pipelined step before this one may still read the old buffers (or copy into them).
    wait(stage_deadline());
    graphs_.clear();
    warmed_.clear();
    meta_ = tensor({static_cast<int64_t>(cap)}, dtype::i32, backend_kind::cuda);
    meta_host_ = pinned_buffer(cap * sizeof(int32_t), backend_kind::cuda);
  }
  // The copy out of the staging buffer enqueued by the step before may not have run yet
  // (a pipelined step is enqueued while the one before it is in flight).
  poll_until([this] { return upload_mark_.stop_done(); }, stage_deadline(), "upload",
             "the step before did not copy its metadata out by the deadline");
  auto* host = static_cast<int32_t*>(meta_host_.data());
  tensor_view views[7];
  size_t off = 0;
  for (int i = 0; i < 7; ++i) {
    const auto& src = *parts[i];
    std::copy(src.begin(), src.end(), host + off);
    views[i].data = meta_.view().i32() + off;
    views[i].type = dtype::i32;
    views[i].where = backend_kind::cuda;
    views[i].shape = shape_t{static_cast<int64_t>(src.size())};
    off += (src.size() + 15) / 16 * 16;
  }
  upload_mark_.start(ops_.stream);
  copy_bytes(meta_.view().data, host, off * sizeof(int32_t), backend_kind::cuda, ops_.stream);
  upload_mark_.stop(ops_.stream);
  if (feed_)
    for (const auto& r : feed_->runs)
      copy_bytes(views[0].i32() + r.dst, feed_->source.i32() + r.src, static_cast<size_t>(r.count) * sizeof(int32_t),
                 backend_kind::cuda, ops_.stream);
  step_views v;
  v.tokens = views[0];
  v.positions = views[1];
  v.slots = views[2];
  v.logit_rows = views[3];
  v.meta.query_start = views[4];
  v.meta.context_len = views[5];
  v.meta.block_tables = views[6];
  v.meta.block_tables.shape = shape_t{b.n_seqs(), b.max_blocks};
  return v;
}

tensor_view shard_context::forward(const batch_input& b) {
  check(b);
  marks_[mark_].start(ops_.stream);
  const int l_rows = static_cast<int>(b.logit_rows.size());
  kv_rows_ += b.n_tokens();
  if (use_graphs_ && graph_eligible(b)) return forward_graph(b);
  run_eager(b);
  if (!is_last_stage()) return {};
  return rows(logits_, l_rows);
}

void shard_context::run_eager(const batch_input& b) {
  step_views v = on_device_ ? upload(b) : host_views(b);
  v.meta.n_seqs = b.n_seqs();
  v.meta.max_blocks = b.max_blocks;
  v.meta.decode_rows = b.leading_singles();
  compute(v, b.n_tokens(), static_cast<int>(b.logit_rows.size()));
}

int64_t attention_workspace_floats(const k::op_context& ops, const context_params& p, int n_heads, int n_kv_heads,
                                   int head_dim) {
  const int cap = std::min({p.max_batch_tokens, p.max_logit_rows, graph_rows[sizeof graph_rows / sizeof graph_rows[0] - 1]});
  // The widest block table a captured graph gives these contexts: graph_key rounds a step's
  // block count up to a power of two (at least 8), so size for that rounded width.
  const int64_t bs = std::max(p.block_size, 1);
  const int64_t span = std::min<int64_t>(int64_t{p.n_blocks} * bs,
                                         p.graph_warmup_context > 0 ? p.graph_warmup_context : 8192);
  int64_t mb = 8;
  while (mb * bs < span) mb *= 2;
  return k::decode_workspace_floats(ops, std::max(cap, 1), n_heads, n_kv_heads, head_dim, static_cast<int>(mb * bs));
}

std::vector<int> shard_context::graph_batch_rows() const {
  const int cap = std::min(params_.max_batch_tokens, params_.max_logit_rows);
  std::vector<int> out;
  for (int r : graph_rows) {
    out.push_back(std::min(r, cap));
    if (r >= cap) break;
  }
  return out;
}

bool shard_context::graph_eligible(const batch_input& b) const {
  const int s = b.n_seqs();
  if (b.n_tokens() != s) return false;  // decode: one new token per sequence
  if (!b.logit_rows.empty() && b.logit_rows.size() != static_cast<size_t>(s)) return false;
  for (int i = 0; i < static_cast<int>(b.logit_rows.size()); ++i)
    if (b.logit_rows[static_cast<size_t>(i)] != i) return false;
  const int cap = std::min(params_.max_batch_tokens, params_.max_logit_rows);
  return s <= cap && s <= graph_rows[sizeof graph_rows / sizeof graph_rows[0] - 1];
}

batch_input shard_context::padded(const batch_input& b, int n, int max_blocks) const {
  const int s = b.n_seqs();
  batch_input p;
  p.tokens = b.tokens;
  p.positions = b.positions;
  p.slots = b.slots;
  p.context_len = b.context_len;
  p.query_start = b.query_start;
  p.max_blocks = max_blocks;
  p.block_tables.assign(static_cast<size_t>(n) * static_cast<size_t>(max_blocks), pad_block_);
  for (int i = 0; i < s; ++i)
    std::copy_n(b.block_tables.begin() + static_cast<ptrdiff_t>(i) * b.max_blocks, b.max_blocks,
                p.block_tables.begin() + static_cast<ptrdiff_t>(i) * max_blocks);
  for (int i = s; i < n; ++i) {  // padding rows: one token at position 0 in the pad block
    p.tokens.push_back(0);
    p.positions.push_back(0);
    p.slots.push_back(pad_block_ * params_.block_size);
    p.context_len.push_back(1);
    p.query_start.push_back(i + 1);
  }
  if (!b.logit_rows.empty())
    for (int i = 0; i < n; ++i) p.logit_rows.push_back(i);
  return p;
}

std::pair<int, int> shard_context::graph_key(int s, int max_blocks) const {
  int n = 0;
  for (int r : graph_rows)
    if (r >= s) {
      n = r;
      break;
    }
  n = std::min(n, std::min(params_.max_batch_tokens, params_.max_logit_rows));
  int mb = 8;
  while (mb < max_blocks) mb *= 2;
  return {n, mb};
}

tensor_view shard_context::forward_graph(const batch_input& b) {
  const auto key = graph_key(b.n_seqs(), b.max_blocks);
  const batch_input p = padded(b, key.first, key.second);
  run_graph(key, p);
  if (!is_last_stage()) return {};
  return rows(logits_, static_cast<int>(b.logit_rows.size()));
}

void shard_context::run_graph(std::pair<int, int> key, const batch_input& p) {
  const auto [n, mb] = key;
  step_views v = upload(p);
  v.meta.n_seqs = n;
  v.meta.max_blocks = mb;
  const int l_rows = static_cast<int>(p.logit_rows.size());
  auto it = graphs_.find(key);
  if (it != graphs_.end()) {
    // Replay: the same kernels over the same buffers; only the metadata just uploaded differs.
    it->second.launch(ops_.stream);
    ++graph_replays_;
  } else if (warmed_.count(key)) {
    device_graph::begin_capture(ops_.stream);
    try {
      compute(v, n, l_rows);
    } catch (...) {
      device_graph::abandon_capture(ops_.stream);
      throw;
    }
    device_graph g = device_graph::end_capture(ops_.stream);
    g.launch(ops_.stream);
    graphs_.emplace(key, std::move(g));
  } else {
    // First sight of this shape: eager, warming up plans and workspaces, and the only step
    // whose GEMMs may be timed (op_context::tune_gemms).
    ops_.tune_gemms = true;
    try {
      compute(v, n, l_rows);
    } catch (...) {
      ops_.tune_gemms = false;
      throw;
    }
    ops_.tune_gemms = false;
    warmed_.insert(key);
  }
}

void shard_context::warm_up(std::chrono::steady_clock::time_point d) {
  if (!on_device_ || params_.graph_warmup_context <= 0) return;
  // A shard with tensor or pipeline peers warms nothing: its steps are collectives, and a
  // shard restarted alone (stage-local recovery) has peers that do not run them with it.
  if (env_.tensor_group || env_.prev_stage || env_.next_stage) return;
  warm_up_plans(d);
  if (use_graphs_) warm_up_graphs(d);
}

void shard_context::warm_up_plans(std::chrono::steady_clock::time_point d) {
  std::set<int> graphed;  // warm_up_graphs runs these row counts
  if (use_graphs_)
    for (int r : graph_batch_rows()) graphed.insert(r);
  std::set<int> counts;
  for (int m = 1; m <= params_.max_batch_tokens; ++m) {
    const int r = static_cast<int>(std::min<int64_t>(k::matmul_plan_rows(m), params_.max_batch_tokens));
    if (!graphed.count(r)) counts.insert(r);
  }
  // The largest first: its metadata sizes the upload buffer.
  for (auto it = counts.rbegin(); it != counts.rend(); ++it) {
    batch_input empty;
    empty.query_start = {0};
    batch_input p = padded(empty, *it, 8);
    const int l_rows = is_last_stage() ? std::min(*it, params_.max_logit_rows) : 0;
    for (int i = 0; i < l_rows; ++i) p.logit_rows.push_back(i);
    run_eager(p);
    wait(d);
  }
}

void shard_context::warm_up_graphs(std::chrono::steady_clock::time_point d) {
  const int bs = params_.block_size;
  std::set<std::pair<int, int>> keys;  // what graph_key gives for every eligible batch
  for (int r : graph_batch_rows())
    for (int mb = 8;; mb *= 2) {
      keys.insert({r, mb});
      if (static_cast<int64_t>(mb) * bs >= params_.graph_warmup_context) break;
    }
  // The largest step first: its metadata sizes the upload buffer once (growing it would
  // drop the graphs captured before).
  for (auto it = keys.rbegin(); it != keys.rend(); ++it) {
    if (graphs_.count(*it)) continue;
    batch_input empty;
    empty.query_start = {0};
    batch_input p = padded(empty, it->first, it->second);
    if (is_last_stage())
      for (int i = 0; i < it->first; ++i) p.logit_rows.push_back(i);
    run_graph(*it, p);  // eager: plans and workspaces
    run_graph(*it, p);  // captured
    wait(d);
  }
}

void shard_context::compute(const step_views& v, int t, int l_rows, bool send) {
  const auto& c = model_.config();
  const auto& w = model_.weights();
  const auto& slice = model_.slice();
  k::attention_batch meta = v.meta;
  meta.block_size = params_.block_size;
  meta.q_head_offset = slice.head_begin;
  meta.kv_group = c.n_heads / c.n_kv_heads;
  meta.kv_head_offset = slice.kv_head_begin;
  meta.workspace = attn_workspace_.view();
  meta.split_counts = split_counts_.view();

  if (is_first_stage()) {
    k::embedding(ops_, rows(residual_, t), w.tok_embd.view(), v.tokens);
  } else {
    env_.prev_stage->recv(rows(residual_, t), 1 - env_.prev_stage->rank(), stage_deadline());
  }
  // At one row the norms and residual adds ride in the projections' kernels (run_layer_fused).
  const bool fuse = norms_fusable_ && k::norm_fusion_applies(ops_, t, c.hidden, act_);
  if (!fuse)
    k::rmsnorm(ops_, rows(normed_, t), rows(residual_, t),
               w.layers[static_cast<size_t>(model_.layer_begin())].attn_norm.view(), c.rms_eps);
  for (int l = model_.layer_begin(); l < model_.layer_end(); ++l) {
    if (fuse)
      run_layer_fused(l, t, meta, v.positions, v.slots);
    else
      run_layer(l, t, meta, v.positions, v.slots);
    progress_beats::beat();  // a long prefill advances layer by layer (the shard's stall watchdog)
  }
  if (!fuse) k::add_inplace(ops_, rows(residual_, t), rows(delta_, t));
  if (!is_last_stage()) {
    if (!sent_.empty()) k::scatter_rows(ops_, sent_.view(), rows(residual_, t), v.slots);
    if (send) env_.next_stage->send(rows(residual_, t), 1 - env_.next_stage->rank(), stage_deadline());
    return;
  }
  if (!send) return;
  if (l_rows == 0) return;
  k::embedding(ops_, rows(last_, l_rows), rows(residual_, t), v.logit_rows);
  // The final norm inside the output projection where one row's norm fuses (else the two ops).
  k::norm_matmul(ops_, rows(logits_, l_rows), rows(last_, l_rows), w.out_norm.view(), c.rms_eps,
                 model_.output_weight().view(), {}, rows(last_normed_, l_rows));
}

void shard_context::finish(std::chrono::steady_clock::time_point d) {
  if (!on_device_) return;
  marks_[mark_].stop(ops_.stream);
  wait(d);
  if (params_.time_steps) last_step_device_ms_ = marks_[mark_].elapsed_ms();
}

void shard_context::wait(std::chrono::steady_clock::time_point d) {
  bool synced = false;
  for (auto* comm : {env_.tensor_group, env_.prev_stage, env_.next_stage})
    if (comm) {
      comm->synchronize(d);  // polls the shared stream, the peers' errors, abort and the deadline
      synced = true;
    }
  if (synced) return;
  poll_until([this] { return stream_done(ops_.stream); }, d, "finish", "the step did not finish by its deadline");
}

void shard_context::poll_until(const std::function<bool()>& done, std::chrono::steady_clock::time_point d,
                               const char* op, const char* what) {
  while (!done()) {
    if (std::chrono::steady_clock::now() >= d) throw parallel::comm_error(parallel::comm_errc::timeout, op, -1, what);
    std::this_thread::yield();
  }
}

std::chrono::steady_clock::time_point shard_context::stage_deadline() const {
  return std::chrono::steady_clock::now() + env_.stage_timeout;
}

}  // namespace troupe
