#include "runtime/engine/scheduler.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace troupe {

const char* finish_reason_name(finish_reason r) {
  switch (r) {
    case finish_reason::none: return "";
    case finish_reason::stop: return "stop";
    case finish_reason::length: return "length";
    case finish_reason::cancelled: return "cancelled";
  }
  return "";
}

scheduler::scheduler(block_manager& blocks, scheduler_config cfg) : blocks_(blocks), cfg_(cfg) {
  if (cfg_.max_batch_tokens <= 0 || cfg_.max_seqs <= 0 || cfg_.max_context <= 0)
    throw std::invalid_argument("scheduler: max_batch_tokens, max_seqs and max_context must be positive");
  if (cfg_.prefill_per_decode < 0)
    throw std::invalid_argument("scheduler: prefill_per_decode must be >= 0 (0: off), got " +
                                std::to_string(cfg_.prefill_per_decode));
  if (cfg_.max_prefill_tokens < 0)
    throw std::invalid_argument("scheduler: max_prefill_tokens must be >= 0 (0: no limit of its own), got " +
                                std::to_string(cfg_.max_prefill_tokens));
}

void scheduler::add(std::unique_ptr<sequence> s) {
  if (!s || s->tokens.empty()) throw std::invalid_argument("scheduler: a sequence needs at least one token");
  if (find(s->id)) throw std::invalid_argument("scheduler: duplicate sequence id " + std::to_string(s->id));
  waiting_.push_back(std::move(s));
}

sequence* scheduler::find(seq_id id) {
  for (auto& s : running_)
    if (s->id == id) return s.get();
  for (auto& s : waiting_)
    if (s->id == id) return s.get();
  return nullptr;
}

bool scheduler::cancel(seq_id id) {
  if (!find(id)) return false;
  cancel_requests_.push_back(id);
  return true;
}

void scheduler::drop_cancelled() {
  std::vector<seq_id> later;  // in-flight sequences are released when their step completes
  for (seq_id id : cancel_requests_) {
    sequence* s = find(id);
    if (s && s->in_flight) later.push_back(id);
    else if (s) finish(id, finish_reason::cancelled);
  }
  cancel_requests_.swap(later);
}

void scheduler::release(sequence* s) {
  if (blocks_.has_sequence(s->id)) blocks_.end_sequence(s->id);
  s->n_computed = 0;
}

void scheduler::finish(seq_id id, finish_reason why) {
  auto take = [&](auto& list) -> bool {
    auto it = std::find_if(list.begin(), list.end(), [&](const auto& p) { return p->id == id; });
    if (it == list.end()) return false;
    release(it->get());
    (*it)->finish = why;
    finished_.push_back(std::move(*it));
    list.erase(it);
    return true;
  };
  if (!take(running_)) take(waiting_);
}

void scheduler::preempt(sequence* s, step_plan& plan) {
  auto it = std::find_if(running_.begin(), running_.end(), [&](const auto& p) { return p.get() == s; });
  release(s);
  s->n_preemptions++;
  plan.preempted.push_back(s->id);
  waiting_.push_front(std::move(*it));
  running_.erase(it);
}

bool scheduler::schedule_running(step_plan& plan, int& budget, bool decodes) {
  for (size_t i = 0; i < running_.size() && budget > 0;) {
    sequence* s = running_[i].get();
    const int remaining = static_cast<int>(s->tokens.size()) - s->n_computed;
    if (s->in_flight || (remaining <= 1) != decodes) {
      ++i;
      continue;
    }
    const int len = std::min(remaining, budget);
    bool self_preempted = false;
    while (!blocks_.reserve(s->id, s->n_computed + len)) {
      sequence* victim = newest_idle();
      if (victim == nullptr) return false;  // everyone else is in flight: wait for them
      if (victim == s && running_.size() == 1) {
        // Alone and still out of blocks: the cache cannot hold this sequence.
        finish(s->id, finish_reason::length);
        return false;
      }
      preempt(victim, plan);
      if (victim == s) {
        self_preempted = true;
        break;
      }
    }
    if (self_preempted) continue;
    add_chunk(plan, s, len, budget);
    ++i;
  }
  return true;
}

sequence* scheduler::newest_idle() {
  for (auto it = running_.rbegin(); it != running_.rend(); ++it)
    if (!(*it)->in_flight) return it->get();
  return nullptr;
}

void scheduler::add_chunk(step_plan& plan, sequence* s, int len, int& budget) {
  plan.chunks.push_back({s, s->n_computed, len, s->n_computed + len == static_cast<int>(s->tokens.size())});
  plan.n_tokens += len;
  budget -= len;
  s->in_flight = true;
}

void scheduler::admit_waiting(step_plan& plan, int& budget) {
  while (!waiting_.empty() && budget > 0 && static_cast<int>(running_.size()) < cfg_.max_seqs) {
    sequence* s = waiting_.front().get();
    if (!blocks_.has_sequence(s->id)) s->n_computed = blocks_.begin_sequence(s->id, s->tokens);
    const int remaining = static_cast<int>(s->tokens.size()) - s->n_computed;
    const int len = std::min(remaining, budget);
    if (!blocks_.reserve(s->id, s->n_computed + len)) {
      release(s);
      break;
    }
    add_chunk(plan, s, len, budget);
    running_.push_back(std::move(waiting_.front()));
    waiting_.pop_front();
  }
}

int scheduler::prefill_cap(const step_plan& plan) const {
  if (cfg_.prefill_per_decode <= 0) return cfg_.max_prefill_tokens;
  const int64_t scaled = static_cast<int64_t>(cfg_.prefill_per_decode) * static_cast<int64_t>(plan.chunks.size());
  return static_cast<int>(std::min<int64_t>(cfg_.max_prefill_tokens,
                                            std::max<int64_t>(cfg_.max_prefill_tokens / 4, scaled)));
}

step_plan scheduler::schedule(int budget) {
  drop_cancelled();
  step_plan plan;
  if (budget <= 0 || budget > cfg_.max_batch_tokens) budget = cfg_.max_batch_tokens;
  // Decodes first: a prefill chunk never takes a decode's place in the step.
  if (!schedule_running(plan, budget, true)) return plan;
  int prefill_budget = budget;
  if (!plan.chunks.empty() && cfg_.max_prefill_tokens > 0) prefill_budget = std::min(budget, prefill_cap(plan));
  if (!schedule_running(plan, prefill_budget, false)) return plan;
  // Preempted sequences wait until the running ones have room again.
  if (plan.preempted.empty()) admit_waiting(plan, prefill_budget);
  return plan;
}

void scheduler::complete(const step_plan& plan, const std::vector<int32_t>& sampled) {
  size_t j = 0;
  for (const auto& c : plan.chunks) {
    sequence* s = c.seq;
    s->in_flight = false;
    s->n_computed = c.start + c.len;
    blocks_.commit(s->id, s->tokens, s->n_computed);
    if (c.wants_logits) {
      if (j >= sampled.size()) throw std::logic_error("scheduler: fewer sampled tokens than chunks wanting logits");
      s->tokens.push_back(sampled[j++]);
    }
  }
}

void scheduler::abandon(const step_plan& plan) {
  for (const auto& c : plan.chunks) {
    sequence* s = c.seq;
    s->in_flight = false;
    auto it = std::find_if(running_.begin(), running_.end(), [&](const auto& p) { return p.get() == s; });
    if (it == running_.end()) continue;
    release(s);
    waiting_.push_front(std::move(*it));
    running_.erase(it);
  }
}

void scheduler::rollback(const step_plan& plan) {
  for (const auto& c : plan.chunks) c.seq->in_flight = false;  // n_computed moves only in complete()
}

void scheduler::reset() {
  while (!running_.empty()) {
    sequence* s = running_.back().get();
    release(s);
    s->in_flight = false;
    s->n_preemptions++;
    waiting_.push_front(std::move(running_.back()));
    running_.pop_back();
  }
  blocks_.forget_cached();
}

std::vector<std::unique_ptr<sequence>> scheduler::take_finished() {
  std::vector<std::unique_ptr<sequence>> out;
  out.swap(finished_);
  return out;
}

}  // namespace troupe
