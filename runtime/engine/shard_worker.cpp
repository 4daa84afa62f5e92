#include "runtime/engine/shard_worker.h"

#include <algorithm>
#include <climits>
#include <stdexcept>

#include "parallel/ucx_communicator.h"
#ifdef TROUPE_HAVE_NCCL
#include "parallel/nccl_communicator.h"
#endif

namespace troupe {

namespace {

dtype parse_weight_type(const std::string& t) {
  if (t == "bf16") return dtype::bf16;
  if (t == "f16" || t == "fp16") return dtype::f16;
  if (t == "f32") return dtype::f32;
  throw std::invalid_argument("shard: weight type '" + t + "' is not bf16, f16 or f32");
}

load_options options_for(const shard_spec& s, const device_ref& d) {
  load_options o;
  o.layer_begin = s.layers.begin;
  o.layer_end = s.layers.end;
  o.load_embeddings = true;  // the first stage embeds; the last needs them when tied
  o.load_head = s.stage == s.n_stages - 1;
  o.tp_rank = s.tp_rank;
  o.tp_size = s.tp_size;
  o.allow_uneven_heads = s.allow_uneven_heads;
  o.device = d;
  o.weight_type = d.backend == backend_kind::cpu ? dtype::f32 : parse_weight_type(s.weight_type);
  o.random_weights = s.random_weights;
  return o;
}

}  // namespace

shard_worker::shard_worker(const shard_spec& spec, const std::function<void(const std::string&)>& progress)
    : spec_(spec), device_(device_ref::parse(spec.device)) {
  if (progress) progress("loading");
  load_options opt = options_for(spec, device_);
  opt.progress = progress;
  model_ = model::load(spec.model_path, opt);
#ifdef TROUPE_HAVE_NCCL
  if (device_.backend == backend_kind::cuda) stream_ = device_stream(device_);
#endif
  make_endpoints();
  if (progress) progress("loaded");
}

void shard_worker::make_endpoints() {
  const auto& spec = spec_;
  if (device_.backend == backend_kind::cuda) {
#ifdef TROUPE_HAVE_NCCL
    if (spec.tp_size > 1) tensor_id_ = parallel::nccl_communicator::nccl_unique_id();
    if (spec.stage + 1 < spec.n_stages) next_id_ = parallel::nccl_communicator::nccl_unique_id();
#else
    throw std::runtime_error("shard on " + device_.str() + ": this build has no NCCL");
#endif
  } else {
    if (spec.tp_size > 1) tensor_ = std::make_unique<parallel::ucx_communicator>(spec.tp_rank, spec.tp_size);
    if (spec.stage > 0) prev_ = std::make_unique<parallel::ucx_communicator>(1, 2);
    if (spec.stage + 1 < spec.n_stages) next_ = std::make_unique<parallel::ucx_communicator>(0, 2);
  }
}

shard_addresses shard_worker::relink(bool drop_context) {
  abort();  // nothing may still wait on the old links
  abandon();  // a step begun on them is not completed
  if (drop_context) ctx_.reset();  // before the communicators it points at are retired
  for (auto* c : {&tensor_dev_, &prev_dev_, &next_dev_})
    if (*c) retired_.push_back(std::move(*c));
  for (auto* c : {&tensor_, &prev_, &next_})
    if (*c) retired_.push_back(std::unique_ptr<parallel::communicator>(c->release()));
  make_endpoints();
  auto a = addresses();
  if (ctx_) a.kv_rows = ctx_->kv_rows_written();
  return a;
}

shard_worker::~shard_worker() {
  abort();
  ctx_.reset();  // the context points at the communicators: destroy it first
}

shard_addresses shard_worker::addresses() const {
  shard_addresses a;
  if (tensor_) a.tensor = tensor_->local_address();
  if (prev_) a.prev = prev_->local_address();
  if (next_) a.next = next_->local_address();
  if (!tensor_id_.empty()) a.tensor = tensor_id_;
  if (!next_id_.empty()) a.next = next_id_;
  if (device_.backend == backend_kind::cuda) {
    if (spec_.stage > 0) a.prev = {'n', 'c', 'c', 'l'};  // the upstream end makes the link's id
    a.kv_blocks = kv_capacity_blocks(spec_.kv_fraction);
  }
  return a;
}

void shard_worker::connect_device(const std::vector<std::vector<char>>& tensor_group, const std::vector<char>& prev,
                                  std::chrono::steady_clock::time_point deadline) {
#ifdef TROUPE_HAVE_NCCL
  use_device(device_);
  auto* stream = static_cast<cudaStream_t>(stream_.get());
  if (spec_.tp_size > 1) {
    if (tensor_group.size() != static_cast<size_t>(spec_.tp_size))
      throw std::invalid_argument("shard: the tensor group has " + std::to_string(tensor_group.size()) +
                                  " addresses for " + std::to_string(spec_.tp_size) + " ranks");
    tensor_dev_ = std::make_unique<parallel::nccl_communicator>(spec_.tp_rank, spec_.tp_size, tensor_group[0],
                                                                device_.ordinal, stream, deadline);
  }
  // A link's rank 0 is the upstream end, which made the link's id.
  if (spec_.stage > 0)
    prev_dev_ = std::make_unique<parallel::nccl_communicator>(1, 2, prev, device_.ordinal, stream, deadline);
  if (spec_.stage + 1 < spec_.n_stages)
    next_dev_ = std::make_unique<parallel::nccl_communicator>(0, 2, next_id_, device_.ordinal, stream, deadline);
#else
  (void)tensor_group;
  (void)prev;
  (void)deadline;
  throw std::runtime_error("shard on " + device_.str() + ": this build has no NCCL");
#endif
}

void shard_worker::connect(const std::vector<std::vector<char>>& tensor_group, const std::vector<char>& prev,
                           const std::vector<char>& next, std::chrono::steady_clock::time_point deadline,
                           bool keep_kv) {
  parallel_env env;
  if (device_.backend == backend_kind::cuda) {
    connect_device(tensor_group, prev, deadline);
    env.tensor_group = tensor_dev_.get();
    env.prev_stage = prev_dev_.get();
    env.next_stage = next_dev_.get();
  } else {
    if (tensor_) tensor_->connect(tensor_group, deadline);
    // A link's rank 0 is the upstream end: prev links hold {peer, self}, next links {self, peer}.
    if (prev_) prev_->connect({prev, prev_->local_address()}, deadline);
    if (next_) next_->connect({next_->local_address(), next}, deadline);
    env.tensor_group = tensor_.get();
    env.prev_stage = prev_.get();
    env.next_stage = next_.get();
  }
  env.timeout = std::chrono::milliseconds(spec_.timeout_ms);
  env.stage_timeout = std::chrono::milliseconds(spec_.stage_timeout_ms);
  last_step_ = 0;  // ahead rows never reach across a (re)connect
  flight_.clear();
  if (keep_kv && ctx_) {
    ctx_->set_env(env);
  } else {
    ctx_.reset();  // before the communicators it may point at
    ctx_ = std::make_unique<shard_context>(*model_, spec_.context,
                                           kernels::op_context{device_.backend, spec_.threads, stream_.get()}, env);
    // Its own deadline: capturing every bucket takes seconds, the connect deadline is one
    // collective's.
    ctx_->warm_up(std::chrono::steady_clock::now() + std::chrono::seconds(120));
  }
  retired_.clear();
}

int shard_worker::kv_capacity_blocks(double fraction) const {
  if (device_.backend == backend_kind::cpu) return spec_.context.n_blocks;
  const auto& c = model_->config();
  const auto& sl = model_->slice();
  const size_t el = dtype_size(model_->weight_type());
  const int layers = model_->layer_end() - model_->layer_begin();
  size_t block_bytes = 2 * static_cast<size_t>(layers) * spec_.context.block_size * sl.n_kv_heads * c.head_dim * el;
  if (spec_.context.keep_stage_inputs && spec_.stage + 1 < spec_.n_stages)
    block_bytes += static_cast<size_t>(spec_.context.block_size) * c.hidden * el;  // the kept stage inputs (sent_)
  const size_t t = static_cast<size_t>(spec_.context.max_batch_tokens);
  const size_t q = static_cast<size_t>(sl.n_heads) * c.head_dim, kv = static_cast<size_t>(sl.n_kv_heads) * c.head_dim;
  const size_t scratch = t * (3 * static_cast<size_t>(c.hidden) + 2 * q + 2 * kv + 2 * sl.ffn_size) * el +
                         static_cast<size_t>(spec_.context.max_logit_rows) * (2 * c.hidden * el + 4 * c.vocab) +
                         (size_t{256} << 20);  // cuBLASLt workspaces, graphs, sampling buffers
  use_device(device_);  // the workspace's split choice reads this device's multiprocessor count
  context_params unbounded = spec_.context;  // the cache's span is what this sizes
  unbounded.n_blocks = INT32_MAX / std::max(unbounded.block_size, 1);
  const size_t attention = static_cast<size_t>(attention_workspace_floats(
                               kernels::op_context{backend_kind::cuda}, unbounded, sl.n_heads, sl.n_kv_heads, c.head_dim)) *
                           sizeof(float);
  const double usable =
      static_cast<double>(free_device_memory(device_)) * fraction - static_cast<double>(scratch + attention);
  if (usable < static_cast<double>(block_bytes))
    throw std::runtime_error("shard on " + device_.str() + ": no device memory left for the KV cache after the weights");
  return static_cast<int>(usable / static_cast<double>(block_bytes));
}

size_t shard_worker::weight_bytes() const {
  const auto& w = model_->weights();
  size_t n = w.out_norm.bytes() + w.output.bytes();
  if (samples() && w.output.empty()) n += w.tok_embd.bytes();  // tied: the embeddings are the output
  for (const auto& l : w.layers)
    for (const tensor* t : {&l.attn_norm, &l.wq, &l.wk, &l.wv, &l.bq, &l.bk, &l.bv, &l.wo, &l.ffn_norm, &l.w_gate,
                            &l.w_up, &l.w_down, &l.wqkv, &l.bqkv, &l.w_gate_up})
      n += t->bytes();
  return n;
}

bool shard_worker::samples() const { return spec_.stage == spec_.n_stages - 1 && spec_.tp_rank == 0; }

step_output shard_worker::run(const step_request& r) {
  if (r.replay_stage < 0 && !r.ahead_rows.empty()) {
    step_request copy = r;
    return run(copy);
  }
  return execute(r);
}

step_output shard_worker::run(step_request& r) {
  if (!flight_.empty()) throw std::logic_error("shard_worker: run() with begun steps not completed");
  if (r.replay_stage < 0 && !r.ahead_rows.empty()) fill_ahead(r, last_step_);
  return execute(r);
}

std::vector<shard_context::token_run> shard_worker::ahead_runs(const step_request& r) const {
  std::vector<shard_context::token_run> runs;
  const int n = r.batch.n_tokens(), from_n = static_cast<int>(flight_.back().n_samples);
  if (r.ahead_rows.size() != r.ahead_from.size()) return {};
  for (size_t i = 0; i < r.ahead_rows.size(); ++i) {
    const int row = r.ahead_rows[i], from = r.ahead_from[i];
    if (row < 0 || row >= n || from < 0 || from >= from_n) return {};
    if (!runs.empty() && runs.back().dst + runs.back().count == row && runs.back().src + runs.back().count == from)
      ++runs.back().count;
    else
      runs.push_back({row, from, 1});
  }
  if (runs.size() > 16) return {};
  return runs;
}

bool shard_worker::can_begin(const step_request& r) const {
  if (device_.backend != backend_kind::cuda || spec_.n_stages != 1 || spec_.tp_size != 1 || !ctx_) return false;
  if (r.replay_stage >= 0 || flight_.size() >= 2 || !sampler_.device_can_sample(r.samples)) return false;
  if (flight_.empty()) return r.ahead_rows.empty() || (r.ahead_of != 0 && r.ahead_of == last_step_);
  // The sampler's buffers must not grow under the step in flight (its host slot would go).
  if (static_cast<int64_t>(r.samples.size()) > sampler_.capacity()) return false;
  if (r.ahead_rows.empty()) return true;
  if (flight_.size() != 1 || r.ahead_of != flight_.back().step_id || ahead_runs(r).empty()) return false;
  // An ahead row whose sampling reads a history would need its token on the host.
  for (size_t j = 0; j < r.batch.logit_rows.size() && j < r.samples.size(); ++j)
    if (!r.samples[j].history.empty() &&
        std::find(r.ahead_rows.begin(), r.ahead_rows.end(), r.batch.logit_rows[j]) != r.ahead_rows.end())
      return false;
  return true;
}

void shard_worker::begin(step_request& r) {
  if (!can_begin(r)) throw std::logic_error("shard_worker: begin() of step " + std::to_string(r.step_id) +
                                            ", which cannot be pipelined now (can_begin)");
  use_device(device_);
  begun_step b;
  b.t0 = std::chrono::steady_clock::now();
  b.step_id = r.step_id;
  b.n_samples = r.samples.size();
  shard_context::token_feed feed;
  if (!r.ahead_rows.empty()) {
    if (flight_.empty()) {
      fill_ahead(r, last_step_);
    } else {
      feed.source = sampler_.device_tokens();
      feed.runs = ahead_runs(r);
      for (int32_t row : r.ahead_rows) r.batch.tokens[static_cast<size_t>(row)] = 0;  // the feed's rows
      r.ahead_rows.clear();
      r.ahead_from.clear();
    }
  }
  tensor_view logits = feed.runs.empty() ? ctx_->forward(r.batch) : ctx_->forward(r.batch, feed);
  b.slot = next_slot_;
  if (!r.samples.empty()) sampler_.launch(*ctx_, logits, r.samples, b.slot);
  next_slot_ ^= 1;
  b.mark = ctx_->mark_step();
  b.kv_rows = ctx_->kv_rows_written();
  b.deadline = b.t0 + std::chrono::milliseconds(spec_.stage_timeout_ms);  // reset when it becomes the oldest
  last_step_ = 0;  // until a step completes
  flight_.push_back(b);
}

bool shard_worker::front_done() const {
  if (flight_.empty()) return false;
  return ctx_->mark_done(flight_.front().mark) || std::chrono::steady_clock::now() >= flight_.front().deadline;
}

void shard_worker::abandon() noexcept {
  flight_.clear();
  last_step_ = 0;
}

step_output shard_worker::complete() {
  if (flight_.empty()) throw std::logic_error("shard_worker: complete() without a begun step");
  try {
    const begun_step b = flight_.front();
    ctx_->finish_mark(b.mark, b.deadline);
    step_output out;
    out.step_id = b.step_id;
    out.samples = sampler_.collect(b.slot, b.n_samples);
    last_tokens_.clear();
    for (const auto& s : out.samples) last_tokens_.push_back(s.token);
    flight_.erase(flight_.begin());
    const auto now = std::chrono::steady_clock::now();
    if (!flight_.empty()) {  // the next one runs from now on (it was queued behind this one)
      flight_.front().t0 = now;
      flight_.front().deadline = now + std::chrono::milliseconds(spec_.stage_timeout_ms);
    }
    last_step_ = b.step_id;
    out.kv_rows = b.kv_rows;
    out.busy_us = std::chrono::duration_cast<std::chrono::microseconds>(now - b.t0).count();
    return out;
  } catch (...) {
    abandon();
    throw;
  }
}

step_output shard_worker::execute(const step_request& r) {
  if (!ctx_) throw std::logic_error("shard_worker: run() before connect()");
  use_device(device_);  // the thread that runs steps need not be the one that loaded
  const auto t0 = std::chrono::steady_clock::now();
  const auto comm0 = comm_time();
  step_output out;
  out.step_id = r.step_id;
  const auto deadline = t0 + std::chrono::milliseconds(spec_.stage_timeout_ms);
  last_step_ = 0;  // until this step has run to its end
  if (r.replay_stage >= 0) {
    replay(r);
    ctx_->finish(deadline);
  } else {
    tensor_view logits = ctx_->forward(r.batch);
    // Overlapped steps: every rank of one stage has the same logits (its all-reduces give
    // each rank the same sums), so each samples the same tokens for the next step's ahead rows.
    if (samples() || (r.keep_tokens && spec_.n_stages == 1))
      out.samples = sampler_.run(*ctx_, logits, r.samples, deadline);
    else
      ctx_->finish(deadline);
    last_tokens_.clear();
    for (const auto& s : out.samples) last_tokens_.push_back(s.token);
    last_step_ = r.step_id;
  }
  out.kv_rows = ctx_->kv_rows_written();
  const auto us = [](auto d) { return std::chrono::duration_cast<std::chrono::microseconds>(d).count(); };
  out.busy_us = us(std::chrono::steady_clock::now() - t0);
  out.comm_us = us(comm_time() - comm0);
  return out;
}

void shard_worker::fill_ahead(step_request& f, uint64_t last) const {
  const std::string step = "shard: step " + std::to_string(f.step_id);
  if (spec_.n_stages != 1)
    throw std::invalid_argument(step + " has ahead rows, which only a replica of one stage can fill (this one has " +
                                std::to_string(spec_.n_stages) + " stages)");
  if (f.ahead_rows.size() != f.ahead_from.size())
    throw std::invalid_argument(step + ": " + std::to_string(f.ahead_rows.size()) + " ahead rows but " +
                                std::to_string(f.ahead_from.size()) + " sample indices");
  if (f.ahead_of == 0 || f.ahead_of != last)
    throw std::runtime_error(step + " takes its ahead tokens from step " + std::to_string(f.ahead_of) +
                             ", but the last step this shard ran to its end is " +
                             (last ? std::to_string(last) : std::string("none")));
  const int n = f.batch.n_tokens();
  for (size_t i = 0; i < f.ahead_rows.size(); ++i) {  // checked whole before `f` changes
    const int row = f.ahead_rows[i], from = f.ahead_from[i];
    if (row < 0 || row >= n || from < 0 || from >= static_cast<int>(last_tokens_.size()))
      throw std::invalid_argument(step + ": ahead row " + std::to_string(row) + " from sample " + std::to_string(from) +
                                  " is outside the step's " + std::to_string(n) + " rows or step " +
                                  std::to_string(last) + "'s " + std::to_string(last_tokens_.size()) + " samples");
  }
  std::vector<int> sample_of(static_cast<size_t>(n), -1);  // row -> its sample request
  for (size_t j = 0; j < f.batch.logit_rows.size() && j < f.samples.size(); ++j) {
    const int row = f.batch.logit_rows[j];
    if (row >= 0 && row < n) sample_of[static_cast<size_t>(row)] = static_cast<int>(j);
  }
  for (size_t i = 0; i < f.ahead_rows.size(); ++i) {
    const auto row = static_cast<size_t>(f.ahead_rows[i]);
    const int32_t token = last_tokens_[static_cast<size_t>(f.ahead_from[i])];
    f.batch.tokens[row] = token;
    const int j = sample_of[row];
    if (j >= 0 && !f.samples[static_cast<size_t>(j)].history.empty())
      f.samples[static_cast<size_t>(j)].history.push_back(token);
  }
  f.ahead_rows.clear();  // filled: running `f` again must not fill (or append to a history) twice
  f.ahead_from.clear();
}

void shard_worker::replay(const step_request& r) {
  if (r.replay_stage >= spec_.n_stages)
    throw std::invalid_argument("shard: replay of stage " + std::to_string(r.replay_stage) + " in a pipeline of " +
                                std::to_string(spec_.n_stages));
  if (spec_.stage == r.replay_stage)
    ctx_->replay_compute(r.batch);
  else if (spec_.stage + 1 == r.replay_stage)
    ctx_->replay_send(r.batch);
}

std::chrono::nanoseconds shard_worker::comm_time() const {
  std::chrono::nanoseconds t{0};
  for (const auto* c : {tensor_.get(), prev_.get(), next_.get()})
    if (c) t += c->busy_time();
  return t;
}

void shard_worker::abort() noexcept {
  for (auto* c : {static_cast<parallel::communicator*>(tensor_.get()), static_cast<parallel::communicator*>(prev_.get()),
                  static_cast<parallel::communicator*>(next_.get()), tensor_dev_.get(), prev_dev_.get(),
                  next_dev_.get()})
    if (c) c->abort();
}

}  // namespace troupe
