#include "runtime/forward.h"

#include <cmath>
#include <stdexcept>
#include <string>

#include "kernels/add.h"
#include "kernels/attention.h"
#include "kernels/embedding.h"
#include "kernels/matmul.h"
#include "kernels/rmsnorm.h"
#include "kernels/rope.h"
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

/// The same data seen as a [rows, cols] matrix.
tensor_view as_2d(tensor_view t, int64_t rows, int64_t cols) {
  t.shape = shape_t{rows, cols};
  return t;
}

}  // namespace

shard_context::shard_context(const model& m, const context_params& p, k::op_context ops,
                             parallel_env env)
    : model_(m), params_(p), ops_(ops), env_(env) {
  const auto& c = m.config();
  if (p.n_blocks <= 0 || p.block_size <= 0 || p.max_batch_tokens <= 0 || p.max_logit_rows <= 0)
    throw std::invalid_argument("shard context: block count, block size and batch sizes must be positive");
  if (m.layer_begin() >= m.layer_end())
    throw std::invalid_argument("shard context: the model holds no layers");
  // This shard's share of heads and MLP columns, read off the (possibly sliced) weights.
  const auto& first = m.weights().layers[static_cast<size_t>(m.layer_begin())];
  n_heads_ = static_cast<int>(first.wq.shape()[0] / c.head_dim);
  n_kv_heads_ = static_cast<int>(first.wk.shape()[0] / c.head_dim);
  ffn_ = static_cast<int>(first.w_gate.shape()[0]);
  const auto be = ops.backend;
  const int64_t t = p.max_batch_tokens, hd = c.head_dim;
  k_cache_.resize(static_cast<size_t>(c.n_layers));
  v_cache_.resize(static_cast<size_t>(c.n_layers));
  for (int l = m.layer_begin(); l < m.layer_end(); ++l) {
    const auto& lw = m.weights().layers[static_cast<size_t>(l)];
    shape_t kv{p.n_blocks, p.block_size, n_kv_heads_, hd};
    k_cache_[static_cast<size_t>(l)] = tensor(kv, dtype::f32, be);
    v_cache_[static_cast<size_t>(l)] = tensor(kv, dtype::f32, be);
    linears_.push_back(layer_linears{
        {lw.wq, lw.bq}, {lw.wk, lw.bk}, {lw.wv, lw.bv}, {lw.w_gate, empty_}, {lw.w_up, empty_},
        {lw.wo, env.tensor_group, env.timeout}, {lw.w_down, env.tensor_group, env.timeout}});
  }
  residual_ = tensor({t, c.hidden}, dtype::f32, be);
  normed_ = tensor({t, c.hidden}, dtype::f32, be);
  delta_ = tensor({t, c.hidden}, dtype::f32, be);
  q_ = tensor({t, n_heads_, hd}, dtype::f32, be);
  k_ = tensor({t, n_kv_heads_, hd}, dtype::f32, be);
  v_ = tensor({t, n_kv_heads_, hd}, dtype::f32, be);
  attn_ = tensor({t, n_heads_, hd}, dtype::f32, be);
  gate_ = tensor({t, ffn_}, dtype::f32, be);
  up_ = tensor({t, ffn_}, dtype::f32, be);
  if (is_last_stage()) {
    last_ = tensor({p.max_logit_rows, c.hidden}, dtype::f32, be);
    last_normed_ = tensor({p.max_logit_rows, c.hidden}, dtype::f32, be);
    logits_ = tensor({p.max_logit_rows, c.vocab}, dtype::f32, be);
  }
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
}

tensor_view shard_context::forward(const batch_input& b) {
  check(b);
  const auto& c = model_.config();
  const auto& w = model_.weights();
  const int t = b.n_tokens();
  const auto& slice = model_.slice();

  k::attention_batch meta;
  meta.n_seqs = b.n_seqs();
  meta.max_blocks = b.max_blocks;
  meta.block_size = params_.block_size;
  meta.query_start = host_i32(b.query_start, {b.n_seqs() + 1});
  meta.context_len = host_i32(b.context_len, {b.n_seqs()});
  meta.block_tables = host_i32(b.block_tables, {b.n_seqs(), b.max_blocks});
  meta.q_head_offset = slice.head_begin;
  meta.kv_group = c.n_heads / c.n_kv_heads;
  meta.kv_head_offset = slice.kv_head_begin;
  tensor_view positions = host_i32(b.positions, {t});
  tensor_view slots = host_i32(b.slots, {t});

  if (is_first_stage()) {
    k::embedding(ops_, rows(residual_, t), w.tok_embd.view(), host_i32(b.tokens, {t}));
  } else {
    env_.prev_stage->recv(rows(residual_, t), 1 - env_.prev_stage->rank(), stage_deadline());
  }
  k::rmsnorm(ops_, rows(normed_, t), rows(residual_, t),
             w.layers[static_cast<size_t>(model_.layer_begin())].attn_norm.view(), c.rms_eps);
  for (int l = model_.layer_begin(); l < model_.layer_end(); ++l) run_layer(l, t, meta, positions, slots);
  k::add_inplace(ops_, rows(residual_, t), rows(delta_, t));
  if (!is_last_stage()) {
    env_.next_stage->send(rows(residual_, t), 1 - env_.next_stage->rank(), stage_deadline());
    return {};
  }

  const int l_rows = static_cast<int>(b.logit_rows.size());
  if (l_rows == 0) return rows(logits_, 0);
  k::embedding(ops_, rows(last_, l_rows), rows(residual_, t), host_i32(b.logit_rows, {l_rows}));
  k::rmsnorm(ops_, rows(last_normed_, l_rows), rows(last_, l_rows), w.out_norm.view(), c.rms_eps);
  k::matmul(ops_, rows(logits_, l_rows), rows(last_normed_, l_rows), model_.output_weight().view(), {});
  return rows(logits_, l_rows);
}

std::chrono::steady_clock::time_point shard_context::stage_deadline() const {
  return std::chrono::steady_clock::now() + env_.stage_timeout;
}

void shard_context::run_layer(int l, int t, const k::attention_batch& meta, tensor_view positions,
                              tensor_view slots) {
  const auto& c = model_.config();
  const size_t li = static_cast<size_t>(l);
  const auto& lin = linears_[static_cast<size_t>(l - model_.layer_begin())];
  tensor_view q = rows(q_, t), kk = rows(k_, t), v = rows(v_, t), attn = rows(attn_, t);
  tensor_view x = rows(normed_, t);
  lin.q.forward(ops_, as_2d(q, t, n_heads_ * c.head_dim), x);
  lin.k.forward(ops_, as_2d(kk, t, n_kv_heads_ * c.head_dim), x);
  lin.v.forward(ops_, as_2d(v, t, n_kv_heads_ * c.head_dim), x);
  k::rope(ops_, q, positions, model_.rope_inv_freq().view());
  k::rope(ops_, kk, positions, model_.rope_inv_freq().view());
  k::kv_write(ops_, k_cache_[li].view(), v_cache_[li].view(), kk, v, slots);
  k::paged_attention(ops_, attn, q, k_cache_[li].view(), v_cache_[li].view(), meta,
                     1.0f / std::sqrt(static_cast<float>(c.head_dim)));
  lin.o.forward(ops_, rows(delta_, t), as_2d(attn, t, n_heads_ * c.head_dim));
  k::add_rmsnorm(ops_, rows(normed_, t), rows(residual_, t), rows(delta_, t),
                 model_.weights().layers[li].ffn_norm.view(), c.rms_eps);

  lin.gate.forward(ops_, rows(gate_, t), rows(normed_, t));
  lin.up.forward(ops_, rows(up_, t), rows(normed_, t));
  k::silu_mul(ops_, rows(gate_, t), rows(gate_, t), rows(up_, t));
  lin.down.forward(ops_, rows(delta_, t), rows(gate_, t));
  if (l + 1 < model_.layer_end())
    k::add_rmsnorm(ops_, rows(normed_, t), rows(residual_, t), rows(delta_, t),
                   model_.weights().layers[li + 1].attn_norm.view(), c.rms_eps);
}

}  // namespace troupe
