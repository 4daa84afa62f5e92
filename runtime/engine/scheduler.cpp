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
  if (sequence* s = find(id); s && s->in_flight > 0) {
    if (s->finish == finish_reason::none) s->finish = why;  // ends when its step lands
    return;
  }
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

bool scheduler::retire_if_ended(sequence* s) {
  if (s->in_flight > 0 || s->finish == finish_reason::none) return false;
  finish(s->id, s->finish);
  return true;
}

void scheduler::land(sequence* s, const scheduled_chunk& c) {
  s->in_flight--;
  if (c.wants_logits) s->pending_tokens--;
}

bool scheduler::one_step_holds(const sequence& s) const {
  return s.in_flight == 1 && s.finish == finish_reason::none &&
         std::find(cancel_requests_.begin(), cancel_requests_.end(), s.id) == cancel_requests_.end();
}

bool scheduler::may_chunk_ahead(const sequence& s) const {
  return one_step_holds(s) && s.pending_tokens == 0 && s.flight_end < static_cast<int>(s.tokens.size());
}

bool scheduler::may_go_ahead(const sequence& s) const {
  if (!one_step_holds(s) || s.pending_tokens != 1) return false;
  // The token in flight and the one planned ahead must both be allowed.
  return s.n_generated() + 2 <= s.params.max_tokens && static_cast<int>(s.tokens.size()) + 2 <= cfg_.max_context;
}

void scheduler::preempt(sequence* s, step_plan& plan) {
  auto it = std::find_if(running_.begin(), running_.end(), [&](const auto& p) { return p.get() == s; });
  release(s);
  s->n_preemptions++;
  plan.preempted.push_back(s->id);
  waiting_.push_front(std::move(*it));
  running_.erase(it);
}

bool scheduler::schedule_running(step_plan& plan, int& budget, bool decodes, bool ahead) {
  for (size_t i = 0; i < running_.size() && budget > 0;) {
    sequence* s = running_[i].get();
    if (s->in_flight > 0) {
      // Overlapped steps: its next decode (whose token its step in flight samples) or its
      // next prompt chunk, behind the one in flight.
      const bool decode = decodes && may_go_ahead(*s), chunk = !decodes && may_chunk_ahead(*s);
      if (ahead && (decode || chunk)) {
        const int start = s->flight_end;
        const int len = decode ? 1 : std::min(static_cast<int>(s->tokens.size()) - start, budget);
        while (!blocks_.reserve(s->id, start + len)) {
          sequence* victim = newest_idle();
          if (victim == nullptr) return false;
          preempt(victim, plan);
        }
        add_chunk(plan, s, start, len, budget, decode);
      }
      ++i;
      continue;
    }
    const int remaining = static_cast<int>(s->tokens.size()) - s->n_computed;
    if ((remaining <= 1) != decodes) {
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
    add_chunk(plan, s, s->n_computed, len, budget);
    ++i;
  }
  return true;
}

sequence* scheduler::newest_idle() {
  for (auto it = running_.rbegin(); it != running_.rend(); ++it)
    if ((*it)->in_flight == 0) return it->get();
  return nullptr;
}

void scheduler::add_chunk(step_plan& plan, sequence* s, int start, int len, int& budget, bool ahead) {
  const bool samples = ahead || start + len == static_cast<int>(s->tokens.size());
  plan.chunks.push_back({s, start, len, samples, ahead});
  plan.n_tokens += len;
  budget -= len;
  s->in_flight++;
  s->pending_tokens += samples ? 1 : 0;
  s->flight_end = start + len;
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
    add_chunk(plan, s, s->n_computed, len, budget);
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

step_plan scheduler::schedule(int budget, bool ahead) {
  drop_cancelled();
  step_plan plan;
  if (budget <= 0 || budget > cfg_.max_batch_tokens) budget = cfg_.max_batch_tokens;
  // Decodes first: a prefill chunk never takes a decode's place in the step.
  if (!schedule_running(plan, budget, true, ahead)) return plan;
  int prefill_budget = budget;
  if (!plan.chunks.empty() && cfg_.max_prefill_tokens > 0) prefill_budget = std::min(budget, prefill_cap(plan));
  if (!schedule_running(plan, prefill_budget, false, ahead)) return plan;
  // Preempted sequences wait until the running ones have room again.
  if (plan.preempted.empty()) admit_waiting(plan, prefill_budget);
  return plan;
}

void scheduler::complete(const step_plan& plan, const std::vector<int32_t>& sampled) {
  size_t j = 0;
  for (const auto& c : plan.chunks) {
    sequence* s = c.seq;
    land(s, c);
    int32_t token = -1;
    if (c.wants_logits) {
      if (j >= sampled.size()) throw std::logic_error("scheduler: fewer sampled tokens than chunks wanting logits");
      token = sampled[j++];
    }
    if (retire_if_ended(s) || s->finish != finish_reason::none) continue;  // ended meanwhile: the sample is dropped
    if (c.start + c.len > static_cast<int>(s->tokens.size()))
      throw std::logic_error("scheduler: sequence " + std::to_string(s->id) +
                             ": an ahead step completed before the step that samples its token");
    s->n_computed = c.start + c.len;
    blocks_.commit(s->id, s->tokens, s->n_computed);
    if (c.wants_logits) s->tokens.push_back(token);
  }
}

void scheduler::abandon(const step_plan& plan) {
  for (const auto& c : plan.chunks) {
    sequence* s = c.seq;
    land(s, c);
    if (retire_if_ended(s)) continue;
    auto it = std::find_if(running_.begin(), running_.end(), [&](const auto& p) { return p.get() == s; });
    if (it == running_.end()) continue;
    release(s);
    waiting_.push_front(std::move(*it));
    running_.erase(it);
  }
}

void scheduler::rollback(const step_plan& plan) {
  for (const auto& c : plan.chunks) {  // n_computed moves only in complete()
    land(c.seq, c);
    retire_if_ended(c.seq);
  }
}

void scheduler::reset() {
  while (!running_.empty()) {
    sequence* s = running_.back().get();
    s->in_flight = 0;
    s->pending_tokens = 0;
    if (retire_if_ended(s)) continue;
    release(s);
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
