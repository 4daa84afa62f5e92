#pragma once
/// The drivers of the overlapped-steps tests (CPU and CUDA): a scheduling-only engine keeps
/// up to `depth` steps begun for one shard worker, which runs them in order, as a replica
/// with scheduler.overlap does; or the worker pipelines them (run_pipelined).
#include <catch2/catch.hpp>
#include <deque>
#include <map>
#include <vector>

#include "runtime/engine/engine.h"
#include "runtime/engine/pipelined_loop.h"
#include "runtime/engine/shard_worker.h"

namespace troupe::test {

struct driven {
  std::vector<generation_result> out;
  size_t ahead_rows = 0;   ///< rows sent before their token was sampled
  size_t preemptions = 0;  ///< sequences that lost their KV to make room
  size_t chunks_ahead = 0; ///< prompt chunks planned while the sequence's chunk before was in flight
  size_t steps = 0;
};

/// Adds `events` to their requests' results in `d` (`index`: sequence -> prompt).
inline void take_events(driven& d, const std::map<seq_id, size_t>& index, const std::vector<token_event>& events) {
  for (const auto& ev : events) {
    auto& r = d.out[index.at(ev.id)];
    if (ev.token >= 0) {
      r.tokens.push_back(ev.token);
      r.logprobs.push_back(ev.logprob);
    }
    r.text += ev.text;
    if (ev.finished) {
      CHECK(r.reason == finish_reason::none);  // one end per request, no event after it
      r.reason = ev.reason;
    }
  }
}

/// Runs every prompt (with its own sampling) through `run` (step_request& -> the sampling
/// shard's samples), keeping up to `depth` steps begun and not yet ended, as a replica with
/// scheduler.overlap does.
template <class Run>
driven drive_with(engine& e, Run&& run, const std::vector<std::vector<int32_t>>& prompts,
                  const std::vector<sampling_params>& ps, size_t depth) {
  driven d;
  d.out.resize(prompts.size());
  std::map<seq_id, size_t> index;
  for (size_t i = 0; i < prompts.size(); ++i) index[e.submit(prompts[i], ps[i])] = i;
  const auto take = [&](const std::vector<token_event>& events) { take_events(d, index, events); };
  std::deque<pending_step> flight;
  while (e.has_work() || !flight.empty()) {
    while (flight.size() < depth) {
      auto p = e.begin_step();
      if (!p) break;
      d.ahead_rows += p->request.ahead_rows.size();
      d.preemptions += p->plan.preempted.size();
      for (const auto& c : p->plan.chunks) d.chunks_ahead += !c.ahead && c.seq->in_flight > 1 ? 1 : 0;
      flight.push_back(std::move(*p));
    }
    if (flight.empty()) {
      take(e.take_ended());
      REQUIRE_FALSE(e.has_work());  // work left that nothing schedules would loop forever
      break;
    }
    const std::vector<sample_result> samples = run(flight.front().request);
    take(e.end_step(flight.front(), samples));
    flight.pop_front();
    d.steps++;
  }
  return d;
}

/// What drive_pipelined ran: the requests' results and the loop's counts.
struct pipelined_run {
  driven d;
  pipeline_counts counts;
};

/// Runs every prompt through `w` pipelined (run_pipelined: a step begun while the one
/// before runs, where the worker can); the worker keeps no step in flight after it.
inline pipelined_run drive_pipelined(engine& e, shard_worker& w, const std::vector<std::vector<int32_t>>& prompts,
                                     const std::vector<sampling_params>& ps) {
  pipelined_run out;
  out.d.out.resize(prompts.size());
  std::map<seq_id, size_t> index;
  for (size_t i = 0; i < prompts.size(); ++i) index[e.submit(prompts[i], ps[i])] = i;
  out.counts = run_pipelined(
      e, w,
      [&](pending_step& s, const std::vector<sample_result>& samples) {
        take_events(out.d, index, e.end_step(s, samples));
      },
      [&](std::vector<token_event> events) { take_events(out.d, index, events); });
  out.d.ahead_rows = out.counts.ahead_rows;
  out.d.steps = out.counts.steps;
  CHECK(w.in_flight() == 0);
  return out;
}

/// drive_with one shard worker.
inline driven drive(engine& e, shard_worker& w, const std::vector<std::vector<int32_t>>& prompts,
                    const std::vector<sampling_params>& ps, size_t depth) {
  return drive_with(e, [&w](step_request& r) { return w.run(r).samples; }, prompts, ps, depth);
}

}  // namespace troupe::test
