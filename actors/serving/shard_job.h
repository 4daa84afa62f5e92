#pragma once
/// What the shard actor's worker thread queues (actors/serving/shard_runner.h): a
/// connect, a step or a relink, each answered by its id.
#include <cstdint>

#include "actors/messages.h"
#include "runtime/engine/step.h"

namespace troupe {

/// What a queued job does.
enum class job_kind { connect, step, relink };

/// One queued job: a connect, a step or a relink.
struct shard_job {
  uint64_t id = 0;
  job_kind kind = job_kind::connect;
  bool drop_context = false;  // relink: for adoption by a new head
  shard_peers peers;   // connect
  step_request step;   // step
  bool replayed = false;  // worker thread: the step ran as a decode graph replay (the slow-step log)
};

}  // namespace troupe
