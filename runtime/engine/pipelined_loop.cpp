#include "runtime/engine/pipelined_loop.h"

#include <deque>
#include <stdexcept>
#include <utility>

namespace troupe {
namespace {

/// Empty plans in a row after which run_pipelined gives up on the engine.
constexpr int max_empty_plans = 10000;

/// The loop of run_pipelined; `flight` holds (step, begun on the worker), oldest first.
void pipeline(engine& e, shard_worker& w, const step_landed& landed, const events_ended& ended, pipeline_counts& n,
              std::deque<std::pair<pending_step, bool>>& flight) {
  auto land = [&](const std::vector<sample_result>& samples) {
    landed(flight.front().first, samples);
    flight.pop_front();
    ++n.steps;
  };
  int empty_plans = 0;  // in a row, with nothing in flight
  while (e.has_work() || !flight.empty()) {
    if (flight.empty()) {
      auto p = e.begin_step();
      if (!p) {
        // A plan of ends and preemptions only (a full cache ends a sequence, say): the next
        // plan has room. The same empty plan over and over would be a scheduler that is stuck.
        auto events = e.take_ended();
        if (ended) ended(std::move(events));
        if (++empty_plans > max_empty_plans) throw std::logic_error("run_pipelined: the engine has work but plans no step");
        continue;
      }
      empty_plans = 0;
      flight.emplace_back(std::move(*p), false);
    }
    if (!flight.front().second) {
      if (!w.can_begin(flight.front().first.request)) {
        ++n.one_at_a_time;
        land(w.run(flight.front().first.request).samples);
        continue;
      }
      w.begin(flight.front().first.request);
      flight.front().second = true;
    }
    if (flight.size() == 1)
      if (auto next = e.begin_step()) {
        n.ahead_rows += next->request.ahead_rows.size();
        flight.emplace_back(std::move(*next), false);
        if (w.can_begin(flight.back().first.request)) {
          w.begin(flight.back().first.request);
          flight.back().second = true;
          ++n.begun_behind;
        }
      }
    land(w.complete().samples);
  }
}

}  // namespace

pipeline_counts run_pipelined(engine& e, shard_worker& w, const step_landed& landed, const events_ended& ended) {
  pipeline_counts n;
  std::deque<std::pair<pending_step, bool>> flight;
  try {
    pipeline(e, w, landed, ended, n, flight);
  } catch (...) {
    w.abandon();
    throw;
  }
  return n;
}

}  // namespace troupe
