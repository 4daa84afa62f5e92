#include "tools/bench/engine_loop.h"

#include "runtime/engine/pipelined_loop.h"

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
  step_recorder rec(e, out, index);
  run_pipelined(e, w, [&](pending_step& s, const std::vector<sample_result>& samples) {
    rec.landed(s, samples, w.context() ? w.context()->last_step_device_ms() : 0.0);
  });
}

}  // namespace troupe::bench
