#include "tools/bench/engine_loop.h"

#include <deque>
#include <utility>

namespace troupe::bench {

step_recorder::step_recorder(engine& e, run_times& out, const std::map<seq_id, size_t>& index)
    : e_(e), out_(out), index_(index), t0_(std::chrono::steady_clock::now()) {}

void step_recorder::landed(pending_step& done, const std::vector<sample_result>& samples, double device_ms) {
  const bool decode = done.plan.n_tokens == static_cast<int>(done.plan.chunks.size());
  auto events = e_.end_step(done, samples);
  const auto now = std::chrono::steady_clock::now();
  const double ms = std::chrono::duration<double, std::milli>(now - t0_).count();
  t0_ = now;
  if (++steps_ == 1) out_.first_step_ms = ms;
  if (decode && steps_ > 1) {
    out_.decode_ms.push_back(ms);
    out_.decode_device_ms.push_back(device_ms);
  }
  for (auto& ev : events)
    if (ev.token >= 0) out_.tokens[index_.at(ev.id)].push_back(ev.token);
}

void pipelined_steps(engine& e, shard_worker& w, run_times& out, const std::map<seq_id, size_t>& index) {
  std::deque<std::pair<pending_step, bool>> flight;  // (step, begun on the shard)
  step_recorder rec(e, out, index);
  auto device_ms = [&w] { return w.context() ? w.context()->last_step_device_ms() : 0.0; };
  while (e.has_work() || !flight.empty()) {
    if (flight.empty()) {
      auto ps = e.begin_step();
      if (!ps) {
        e.take_ended();
        continue;
      }
      flight.emplace_back(std::move(*ps), false);
    }
    auto& front = flight.front();
    if (!front.second) {
      if (!w.can_begin(front.first.request)) {
        const auto so = w.run(front.first.request);
        rec.landed(front.first, so.samples, device_ms());
        flight.pop_front();
        continue;
      }
      w.begin(front.first.request);
      front.second = true;
    }
    if (flight.size() == 1)
      if (auto next = e.begin_step()) {
        flight.emplace_back(std::move(*next), false);
        if (w.can_begin(flight.back().first.request)) {
          w.begin(flight.back().first.request);
          flight.back().second = true;
        }
      }
    const auto so = w.complete();
    rec.landed(flight.front().first, so.samples, device_ms());
    flight.pop_front();
  }
}

}  // namespace troupe::bench
