#pragma once
/// troupe_gpu's offline engine loops: what a run records of its steps, and the pipelined
/// loop (--pipeline: runtime/engine/pipelined_loop.h) that drives one shard worker directly.
#include <chrono>
#include <cstdint>
#include <map>
#include <vector>

#include "runtime/engine/engine.h"
#include "runtime/engine/shard_worker.h"

namespace troupe::bench {

/// Per-step wall times of one engine run.
struct run_times {
  std::vector<std::vector<int32_t>> tokens;  ///< generated, per prompt
  std::vector<double> decode_ms;             ///< steps where every sequence decodes one token (wall, from scheduling to events)
  std::vector<double> decode_device_ms;      ///< the same steps' device time (the sampling shard's stream)
  double first_step_ms = 0;
};

/// Ends each step in the engine and records it in a run_times: its wall time from the end of
/// the step before (the first step's apart; decode steps' after it, with their device time)
/// and its tokens, by prompt (`index`: sequence -> prompt).
class step_recorder {
 public:
  step_recorder(engine& e, run_times& out, const std::map<seq_id, size_t>& index);
  /// Ends `done` with `samples`; `device_ms` is its device time.
  void landed(pending_step& done, const std::vector<sample_result>& samples, double device_ms);

 private:
  engine& e_;
  run_times& out_;
  const std::map<seq_id, size_t>& index_;
  uint64_t steps_ = 0;
  std::chrono::steady_clock::time_point t0_;
};

/// The loop with --pipeline: while the shard runs step N, the next is planned and begun
/// (enqueued on the device, its tokens fed from N's samples there: shard_worker::begin), so
/// the GPU finds it queued when N ends; steps the worker cannot pipeline run one at a time.
void pipelined_steps(engine& e, shard_worker& w, run_times& out, const std::map<seq_id, size_t>& index);

}  // namespace troupe::bench
