#include "runtime/shard_worker.h"

#include "parallel/ucx_communicator.h"

namespace troupe {

namespace {

load_options options_for(const shard_spec& s) {
  load_options o;
  o.layer_begin = s.layers.begin;
  o.layer_end = s.layers.end;
  o.load_embeddings = true;  // the first stage embeds; the last needs them when tied
  o.load_head = s.stage == s.n_stages - 1;
  o.tp_rank = s.tp_rank;
  o.tp_size = s.tp_size;
  o.allow_uneven_heads = s.allow_uneven_heads;
  return o;
}

}  // namespace

shard_worker::shard_worker(const shard_spec& spec, const std::function<void(const std::string&)>& progress)
    : spec_(spec) {
  if (progress) progress("loading");
  model_ = model::load(spec.model_path, options_for(spec));
  if (spec.tp_size > 1) tensor_ = std::make_unique<parallel::ucx_communicator>(spec.tp_rank, spec.tp_size);
  if (spec.stage > 0) prev_ = std::make_unique<parallel::ucx_communicator>(1, 2);
  if (spec.stage + 1 < spec.n_stages) next_ = std::make_unique<parallel::ucx_communicator>(0, 2);
  if (progress) progress("loaded");
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
  return a;
}

void shard_worker::connect(const std::vector<std::vector<char>>& tensor_group, const std::vector<char>& prev,
                           const std::vector<char>& next, std::chrono::steady_clock::time_point deadline) {
  if (tensor_) tensor_->connect(tensor_group, deadline);
  // A link's rank 0 is the upstream end: prev links hold {peer, self}, next links {self, peer}.
  if (prev_) prev_->connect({prev, prev_->local_address()}, deadline);
  if (next_) next_->connect({next_->local_address(), next}, deadline);
  parallel_env env;
  env.tensor_group = tensor_.get();
  env.prev_stage = prev_.get();
  env.next_stage = next_.get();
  env.timeout = std::chrono::milliseconds(spec_.timeout_ms);
  env.stage_timeout = std::chrono::milliseconds(spec_.stage_timeout_ms);
  ctx_ = std::make_unique<shard_context>(*model_, spec_.context,
                                         kernels::op_context{backend_kind::cpu, spec_.threads, nullptr}, env);
}

bool shard_worker::samples() const { return spec_.stage == spec_.n_stages - 1 && spec_.tp_rank == 0; }

step_output shard_worker::run(const step_request& r) {
  if (!ctx_) throw std::logic_error("shard_worker: run() before connect()");
  const auto t0 = std::chrono::steady_clock::now();
  const auto comm0 = comm_time();
  step_output out;
  out.step_id = r.step_id;
  tensor_view logits = ctx_->forward(r.batch);
  if (samples()) out.samples = sample_rows(logits, r.samples, scratch_);
  const auto us = [](auto d) { return std::chrono::duration_cast<std::chrono::microseconds>(d).count(); };
  out.busy_us = us(std::chrono::steady_clock::now() - t0);
  out.comm_us = us(comm_time() - comm0);
  return out;
}

std::chrono::nanoseconds shard_worker::comm_time() const {
  std::chrono::nanoseconds t{0};
  for (const auto* c : {tensor_.get(), prev_.get(), next_.get()})
    if (c) t += c->busy_time();
  return t;
}

void shard_worker::abort() noexcept {
  if (tensor_) tensor_->abort();
  if (prev_) prev_->abort();
  if (next_) next_->abort();
}

}  // namespace troupe
