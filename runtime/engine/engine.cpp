#include "runtime/engine/engine.h"

#include <algorithm>
#include <stdexcept>
#include <string>
#include <thread>

namespace troupe {

namespace {

int resolve_threads(int n) {
  if (n > 0) return n;
  unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : static_cast<int>(hw);
}

context_params make_context_params(const engine_config& c) {
  if (c.block_size <= 0 || c.kv_tokens <= 0 || c.max_batch_tokens <= 0 || c.max_seqs <= 0)
    throw std::invalid_argument("engine: block_size, kv_tokens, max_batch_tokens and max_seqs must be positive");
  context_params p;
  p.block_size = c.block_size;
  p.n_blocks = (c.kv_tokens + c.block_size - 1) / c.block_size;
  p.max_batch_tokens = c.max_batch_tokens;
  p.max_logit_rows = c.max_seqs;
  p.cuda_graphs = c.cuda_graphs;
  p.batch_invariant = c.batch_invariant;
  p.graph_warmup_context = c.graph_warmup_context;
  return p;
}

int resolve_context(const engine_config& c, const model& m) {
  const int capacity = ((c.kv_tokens + c.block_size - 1) / c.block_size) * c.block_size;
  int ctx = c.max_context > 0 ? c.max_context : m.config().max_context;
  return std::min(ctx, capacity);
}

}  // namespace

engine::engine(std::shared_ptr<const model> m, engine_config cfg)
    : model_(std::move(m)),
      cfg_([&] {
        cfg.n_threads = resolve_threads(cfg.n_threads);
        return cfg;
      }()),
      max_context_(resolve_context(cfg_, *model_)),
      ctx_(cfg_.local_execution
               ? std::make_unique<shard_context>(*model_, make_context_params(cfg_),
                                                 kernels::op_context{model_->device().backend, cfg_.n_threads, nullptr})
               : nullptr),
      blocks_(make_context_params(cfg_).n_blocks, cfg_.block_size, cfg_.prefix_caching),
      sched_(blocks_, scheduler_config{cfg_.max_batch_tokens, cfg_.max_seqs, max_context_, cfg_.max_prefill_tokens,
                                        cfg_.prefill_per_decode}) {
  if (ctx_) ctx_->warm_up(std::chrono::steady_clock::now() + std::chrono::seconds(120));
}

seq_id engine::submit(std::vector<int32_t> prompt, const sampling_params& p) {
  return submit(std::move(prompt), p, resume_point{});
}

seq_id engine::submit(std::vector<int32_t> prompt, const sampling_params& p, const resume_point& from) {
  validate(p);
  if (prompt.empty()) throw std::invalid_argument("prompt is empty: at least one token is needed");
  const int vocab = model_->config().vocab;
  for (size_t i = 0; i < prompt.size(); ++i)
    if (prompt[i] < 0 || prompt[i] >= vocab)
      throw std::invalid_argument("prompt token " + std::to_string(i) + " has id " +
                                  std::to_string(prompt[i]) + ", outside the vocabulary [0, " +
                                  std::to_string(vocab) + ")");
  for (size_t i = 0; i < from.emitted.size(); ++i)
    if (from.emitted[i] < 0 || from.emitted[i] >= vocab)
      throw std::invalid_argument("resumed request: emitted token " + std::to_string(i) + " has id " +
                                  std::to_string(from.emitted[i]) + ", outside the vocabulary [0, " +
                                  std::to_string(vocab) + ")");
  if (static_cast<int64_t>(from.emitted.size()) >= p.max_tokens)
    throw std::invalid_argument("resumed request: " + std::to_string(from.emitted.size()) +
                                " tokens were already emitted, max_tokens is " + std::to_string(p.max_tokens) +
                                ": nothing is left to generate");
  const int64_t need = static_cast<int64_t>(prompt.size()) + p.max_tokens;
  if (need > max_context_)
    throw std::invalid_argument("the context holds " + std::to_string(max_context_) +
                                " tokens, but the prompt has " + std::to_string(prompt.size()) +
                                " and max_tokens asks for " + std::to_string(p.max_tokens) +
                                " more: shorten the prompt or lower max_tokens");
  auto s = std::make_unique<sequence>();
  s->id = next_id_++;
  s->n_prompt = static_cast<int>(prompt.size());
  s->tokens = std::move(prompt);
  s->tokens.insert(s->tokens.end(), from.emitted.begin(), from.emitted.end());
  s->params = p;
  request_state st;
  st.decoder = std::make_unique<incremental_decoder>(model_->tokenizer());
  st.stops = std::make_unique<stop_matcher>(p.stop);
  // Replaying the emitted tokens leaves the decoder (incomplete characters) and the stop
  // matcher (a held-back partial stop string) as they were; the text they release now
  // was sent already.
  for (int32_t t : from.emitted) st.stops->push(st.decoder->push(t));
  states_.emplace(s->id, std::move(st));
  const seq_id id = s->id;
  sched_.add(std::move(s));
  return id;
}

bool engine::cancel(seq_id id) { return sched_.cancel(id); }

batch_input engine::build_batch(const step_plan& plan) const {
  batch_input b;
  const int bs = cfg_.block_size;
  int max_blocks = 1;
  for (const auto& c : plan.chunks)
    max_blocks = std::max(max_blocks, static_cast<int>(blocks_.block_table(c.seq->id).size()));
  b.max_blocks = max_blocks;
  b.query_start.push_back(0);
  for (const auto& c : plan.chunks) {
    const auto& table = blocks_.block_table(c.seq->id);
    for (int i = 0; i < c.len; ++i) {
      const int pos = c.start + i;
      // An ahead row's token is not known yet (0 here; the shard fills it in).
      b.tokens.push_back(c.ahead ? 0 : c.seq->tokens[static_cast<size_t>(pos)]);
      b.positions.push_back(pos);
      b.slots.push_back(table[static_cast<size_t>(pos / bs)] * bs + pos % bs);
    }
    b.query_start.push_back(b.n_tokens());
    b.context_len.push_back(c.start + c.len);
    b.block_tables.insert(b.block_tables.end(), table.begin(), table.end());
    b.block_tables.resize(b.block_tables.size() + static_cast<size_t>(max_blocks) - table.size(), 0);
    if (c.wants_logits) b.logit_rows.push_back(b.n_tokens() - 1);
  }
  return b;
}

std::vector<step_request> engine::replay_steps(int64_t& tokens) {
  blocks_.forget_cached();
  tokens = 0;
  std::vector<step_request> out;
  step_plan plan;
  const auto flush = [&] {
    if (plan.chunks.empty()) return;
    step_request r;
    r.step_id = next_step_++;
    r.batch = build_batch(plan);
    out.push_back(std::move(r));
    plan = step_plan{};
  };
  for (const auto& s : sched_.running()) {
    int start = 0;
    while (start < s->n_computed) {
      if (plan.n_tokens == cfg_.max_batch_tokens) flush();
      const int len = std::min(s->n_computed - start, cfg_.max_batch_tokens - plan.n_tokens);
      plan.chunks.push_back({s.get(), start, len, false});
      plan.n_tokens += len;
      tokens += len;
      start += len;
    }
  }
  flush();
  return out;
}

/// Text still held back by the decoder and the stop matcher when a request ends.
std::string engine::final_text(request_state& st) {
  std::string t = st.stops->push(st.decoder->flush());
  if (!st.stops->stopped()) t += st.stops->flush();
  return t;
}

std::optional<finish_reason> engine::check_stop(const sequence& s, int32_t tok, token_event& ev) {
  auto& st = states_.at(s.id);
  const auto& p = s.params;
  const auto& tk = model_->tokenizer();
  const bool eog = !p.ignore_eos && tk.is_eog(tok);
  const bool stop_tok = std::find(p.stop_token_ids.begin(), p.stop_token_ids.end(), tok) != p.stop_token_ids.end();
  if (eog || stop_tok) {
    ev.text += final_text(st);
    return finish_reason::stop;
  }
  ev.text += st.stops->push(st.decoder->push(tok));
  if (st.stops->stopped()) return finish_reason::stop;
  const bool at_max = s.n_generated() >= p.max_tokens;
  const bool at_context = static_cast<int>(s.tokens.size()) >= max_context_;
  if (at_max || at_context) {
    ev.text += final_text(st);
    return finish_reason::length;
  }
  return std::nullopt;
}

void engine::emit(sequence& s, const sample_result& r, token_event& ev) {
  ev.id = s.id;
  ev.token = r.token;
  ev.logprob = r.logprob;
  ev.top = r.top;
  if (auto why = check_stop(s, r.token, ev)) {
    ev.finished = true;
    ev.reason = *why;
    sched_.finish(s.id, *why);
  }
}

std::optional<pending_step> engine::begin_step(int budget) {
  step_plan plan = sched_.schedule(budget, cfg_.overlap && steps_in_flight_ == 1);
  if (plan.empty()) return std::nullopt;
  pending_step p;
  p.request.step_id = next_step_++;
  p.request.batch = build_batch(plan);
  p.request.keep_tokens = cfg_.overlap;
  link_ahead_rows(plan, p.request);
  last_sample_rows_.clear();
  for (const auto& c : plan.chunks) {
    if (!c.wants_logits) continue;
    const sequence& s = *c.seq;
    if (cfg_.overlap) last_sample_rows_[s.id] = static_cast<int32_t>(p.request.samples.size());
    sample_request r;
    r.id = s.id;
    r.params = s.params;
    // An ahead row samples the token after the one its sequence's step in flight samples.
    r.token_index = static_cast<uint64_t>(s.n_generated() + (c.ahead ? 1 : 0));
    if (needs_history(s.params)) {
      r.history = s.tokens;  // an ahead row's shard appends the token it fills in
      r.n_prompt = s.n_prompt;
    }
    p.request.samples.push_back(std::move(r));
  }
  last_step_ = p.request.step_id;
  steps_in_flight_++;
  p.plan = std::move(plan);
  return p;
}

void engine::link_ahead_rows(const step_plan& plan, step_request& r) const {
  for (size_t i = 0; i < plan.chunks.size(); ++i) {
    const auto& c = plan.chunks[i];
    if (!c.ahead) continue;
    auto from = last_sample_rows_.find(c.seq->id);
    if (from == last_sample_rows_.end())
      throw std::logic_error("engine: sequence " + std::to_string(c.seq->id) + " was planned ahead of step " +
                             std::to_string(last_step_) + ", which samples nothing for it");
    r.ahead_of = last_step_;
    r.ahead_rows.push_back(r.batch.query_start[i]);
    r.ahead_from.push_back(from->second);
  }
}

void engine::step_landed() {
  if (steps_in_flight_ > 0) steps_in_flight_--;
}

std::vector<token_event> engine::end_step(pending_step& p, const std::vector<sample_result>& samples,
                                          const float* logits) {
  if (samples.size() != p.request.samples.size())
    throw std::logic_error("engine: step " + std::to_string(p.request.step_id) + " wants " +
                           std::to_string(p.request.samples.size()) + " samples, got " +
                           std::to_string(samples.size()));
  step_landed();
  std::vector<int32_t> sampled;
  std::vector<sequence*> owners;
  std::vector<bool> dropped;  // ended while the step ran (it was an ahead step): no event
  for (const auto& c : p.plan.chunks)
    if (c.wants_logits) {
      owners.push_back(c.seq);
      dropped.push_back(c.seq->finish != finish_reason::none);
    }
  for (const auto& r : samples) sampled.push_back(r.token);
  sched_.complete(p.plan, sampled);
  std::vector<token_event> events;
  const size_t vocab = static_cast<size_t>(model_->config().vocab);
  for (size_t i = 0; i < owners.size(); ++i) {
    if (dropped[i]) continue;
    token_event ev;
    if (cfg_.record_logits && logits) ev.logits.assign(logits + i * vocab, logits + (i + 1) * vocab);
    emit(*owners[i], samples[i], ev);
    events.push_back(std::move(ev));
  }
  auto ended = take_ended();
  events.insert(events.end(), std::make_move_iterator(ended.begin()), std::make_move_iterator(ended.end()));
  return events;
}

void engine::abandon_step(pending_step& p) {
  step_landed();
  sched_.abandon(p.plan);
}

std::vector<token_event> engine::take_ended() {
  std::vector<token_event> events;
  for (auto& s : sched_.take_finished()) {
    if (s->finish == finish_reason::cancelled) {
      token_event ev;
      ev.id = s->id;
      ev.finished = true;
      ev.reason = finish_reason::cancelled;
      events.push_back(std::move(ev));
    }
    states_.erase(s->id);
  }
  return events;
}

std::vector<token_event> engine::step() {
  if (!ctx_) throw std::logic_error("engine: step() needs local_execution; use begin_step/end_step");
  auto p = begin_step();
  if (!p) return take_ended();
  tensor_view logits = ctx_->forward(p->request.batch);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(10);
  auto samples = sampler_.run(*ctx_, logits, p->request.samples, deadline, cfg_.record_logits);
  return end_step(*p, samples, sampler_.host_logits());
}

std::vector<generation_result> engine::generate(const std::vector<std::vector<int32_t>>& prompts,
                                                const sampling_params& p) {
  std::vector<generation_result> out(prompts.size());
  std::unordered_map<seq_id, size_t> index;
  for (size_t i = 0; i < prompts.size(); ++i) {
    out[i].prompt_tokens = prompts[i];
    index[submit(prompts[i], p)] = i;
  }
  while (has_work()) {
    for (auto& ev : step()) {
      auto& r = out[index.at(ev.id)];
      if (ev.token >= 0) {
        r.tokens.push_back(ev.token);
        r.logprobs.push_back(ev.logprob);
        if (cfg_.record_logits) r.logits.push_back(std::move(ev.logits));
      }
      r.text += ev.text;
      if (ev.finished) r.reason = ev.reason;
    }
  }
  return out;
}

}  // namespace troupe
