#include "runtime/engine/step.h"

#include <algorithm>
#include <stdexcept>

#include "kernels/sample.h"

namespace troupe {

bool needs_history(const sampling_params& p) {
  return p.repetition_penalty != 1.0f || p.frequency_penalty != 0.0f || p.presence_penalty != 0.0f;
}

std::vector<sample_result> sample_rows(tensor_view logits, const std::vector<sample_request>& requests,
                                       sampler_scratch& scratch) {
  if (logits.shape.rank != 2 || logits.shape[0] != static_cast<int64_t>(requests.size()))
    throw std::invalid_argument("sample_rows: logits " + logits.shape.str() + " for " +
                                std::to_string(requests.size()) + " requests");
  const int vocab = static_cast<int>(logits.shape[1]);
  std::vector<sample_result> out;
  out.reserve(requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    const auto& r = requests[i];
    out.push_back(sample(logits.f32() + i * static_cast<size_t>(vocab), vocab, r.params, r.history,
                         r.n_prompt, r.token_index, scratch));
  }
  return out;
}

bool step_sampler::device_can_sample(const std::vector<sample_request>& requests) const {
  for (const auto& r : requests)
    if (needs_history(r.params) || r.params.logprobs > 0) return false;
  return true;
}

std::vector<sample_result> step_sampler::run(shard_context& ctx, tensor_view logits,
                                             const std::vector<sample_request>& requests,
                                             std::chrono::steady_clock::time_point d, bool keep_logits) {
  host_logits_ = nullptr;
  if (logits.where == backend_kind::cpu) {
    ctx.finish(d);
    host_logits_ = logits.f32();
    return sample_rows(logits, requests, scratch_);
  }
  const kernels::op_context& ops = ctx.ops();
  const size_t l = requests.size();
  if (logits.shape.rank != 2 || logits.shape[0] != static_cast<int64_t>(l))
    throw std::invalid_argument("step_sampler: logits " + logits.shape.str() + " for " + std::to_string(l) +
                                " requests");
  if (!keep_logits && device_can_sample(requests)) {
    launch(ctx, logits, requests, 0);
    ctx.finish(d);
    return collect(0, l);
  }
  const size_t bytes = static_cast<size_t>(logits.numel()) * sizeof(float);
  if (logits_host_.bytes() < bytes) logits_host_ = pinned_buffer(bytes, logits.where);
  copy_bytes(logits_host_.data(), logits.data, bytes, logits.where, ops.stream);
  ctx.finish(d);
  tensor_view host = logits;
  host.data = logits_host_.data();
  host.where = backend_kind::cpu;
  host_logits_ = host.f32();
  return sample_rows(host, requests, scratch_);
}

void step_sampler::launch(shard_context& ctx, tensor_view logits, const std::vector<sample_request>& requests,
                          int slot) {
  const kernels::op_context& ops = ctx.ops();
  const size_t l = requests.size();
  if (logits.where != backend_kind::cuda || logits.shape.rank != 2 || logits.shape[0] != static_cast<int64_t>(l))
    throw std::invalid_argument("step_sampler: device sampling of logits " + logits.shape.str() + " for " +
                                std::to_string(l) + " requests");
  host_logits_ = nullptr;
  if (tokens_.empty() || tokens_.numel() < static_cast<int64_t>(l)) {
    tokens_ = tensor({static_cast<int64_t>(std::max<size_t>(l, 64))}, dtype::i32, logits.where);
    const auto n = static_cast<size_t>(tokens_.numel());
    for (auto& h : tokens_host_) h = pinned_buffer(n * sizeof(int32_t), logits.where);
    for (auto& h : rows_host_) h = pinned_buffer(n * sizeof(kernels::sample_row), logits.where);
  }
  last_tokens_ = tokens_.view().rows(0, static_cast<int64_t>(l));
  bool greedy = true;
  std::vector<kernels::sample_row> rows(l);
  for (size_t i = 0; i < l; ++i) {
    const auto& p = requests[i].params;
    greedy = greedy && p.temperature < greedy_temperature;
    rows[i] = kernels::sample_row{p.temperature, p.top_p, p.top_k, p.min_p, p.seed, requests[i].token_index};
  }
  if (greedy)
    kernels::argmax(ops, last_tokens_, logits);
  else
    kernels::sample(ops, last_tokens_, logits, rows, rows_host_[slot & 1].data());
  copy_bytes(tokens_host_[slot & 1].data(), last_tokens_.data, l * sizeof(int32_t), logits.where, ops.stream);
}

std::vector<sample_result> step_sampler::collect(int slot, size_t n) const {
  std::vector<sample_result> out(n);
  const auto* ids = static_cast<const int32_t*>(tokens_host_[slot & 1].data());
  for (size_t i = 0; i < n; ++i) out[i] = sample_result{ids[i], 0.0f, {}};
  return out;
}

}  // namespace troupe
