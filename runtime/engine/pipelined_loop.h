#pragma once
/// An engine's steps pipelined on one shard worker (shard_worker::begin): while step N runs
/// on the device, step N+1 is planned and begun, its ahead rows fed from N's samples there;
/// a step the worker cannot pipeline runs one at a time. The offline benchmark
/// (troupe_gpu bench --pipeline) and the GPU tests drive a worker this way; the shard actor's
/// worker thread does the same with its queued steps (actors/serving/shard_runner.cpp).
#include <cstdint>
#include <functional>
#include <vector>

#include "runtime/engine/engine.h"
#include "runtime/engine/shard_worker.h"

namespace troupe {

/// What a pipelined run did.
struct pipeline_counts {
  uint64_t steps = 0;          ///< steps landed
  uint64_t begun_behind = 0;   ///< steps begun while another was in flight
  uint64_t one_at_a_time = 0;  ///< steps the worker could not pipeline (shard_worker::run)
  uint64_t ahead_rows = 0;     ///< rows planned behind a step in flight, before their token was sampled
};

/// Called with each step once its samples are known, in step order; it ends the step in
/// the engine (engine::end_step) and takes its events.
using step_landed = std::function<void(pending_step&, const std::vector<sample_result>&)>;

/// Called with the events of sequences that ended outside a step (engine::take_ended).
using events_ended = std::function<void(std::vector<token_event>)>;

/// Runs `e`'s work to its end on `w` (`e` schedules only: engine_config::local_execution
/// off, with scheduler overlap for ahead rows). Throws std::logic_error when the engine has
/// work but plans no step 10000 times in a row (it would loop forever); an error of the worker or of a callback
/// propagates, and the worker then keeps no step in flight (shard_worker::abandon).
pipeline_counts run_pipelined(engine& e, shard_worker& w, const step_landed& landed, const events_ended& ended = {});

}  // namespace troupe
