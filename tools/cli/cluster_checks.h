#pragma once
/// Checks the head makes before and while bringing a cluster up, so that a bad cluster
/// file fails fast with a message naming the file and the key instead of surfacing later
/// from a node process (or not at all).
#include <atomic>
#include <caf/all.hpp>
#include <chrono>
#include <memory>

#include "cluster-config/cluster_config.h"
#include "runtime/model/model.h"

namespace troupe::cli {

/// Checks that the pipeline split (parallel.pipeline, parallel.layers_per_stage) and the
/// tensor split (parallel.tensor, parallel.allow_uneven_heads) of `c` fit model `m`.
/// Throws config_error "<file>: <key>: <why>" (the partition error's text as <why>).
void check_partition(const cluster_config& c, const model_config& m);

/// Loads the metadata of `c`'s model (config and tokenizer, no weights) and runs
/// check_partition on it. Throws the loader's error for a bad model path, config_error
/// for a partition that does not fit.
std::shared_ptr<const model> load_checked_metadata(const cluster_config& c);

/// Waits until every node of `c` has registered with `supervisor` (a supervisor_actor),
/// at most `wait`. Throws std::runtime_error naming the file, the wait and each node that
/// never registered (its host:port, state and why, e.g. that its host is not this
/// machine, so the head did not start it). Returns early, without error, when `stopping`.
void wait_for_registration(caf::actor_system& sys, const caf::actor& supervisor,
                           const cluster_config& c, std::chrono::milliseconds wait,
                           const std::atomic<bool>& stopping);

}  // namespace troupe::cli
