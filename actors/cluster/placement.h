#pragma once
/// Placement: which node and device runs each shard of each replica, and the head-side
/// bring-up of the data plane (spawn shards through node agents, spawn replicas).
#include <atomic>
#include <chrono>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "actors/leadership/head_state_recorder.h"
#include "actors/serving/replica.h"
#include "actors/serving/router.h"
#include "cluster-config/cluster_config.h"

namespace troupe {

/// One shard's place.
struct shard_slot {
  int replica = 0;
  int stage = 0;
  int rank = 0;
  std::string node;    ///< node name
  std::string device;  ///< "cpu", "cuda:0", ...
};

/// Shards of every replica over the nodes' devices in cluster-file order (replica-major,
/// then stage, then tensor rank), one shard per device. Throws std::runtime_error when
/// the devices run out (validate() normally catches that first).
std::vector<shard_slot> plan_placement(const cluster_config& c);

/// The shard_spec of `slot` for a model of config `m` (pipeline split from
/// parallel.layers_per_stage or balanced by parameters).
shard_spec make_shard_spec(const cluster_config& c, const model_config& m, const shard_slot& slot);

/// The head's data plane: the replicas and the router in front of them.
struct data_plane {
  std::vector<replica_actor> replicas;
  router_actor router;
  caf::actor manager;                    ///< respawns a failed replica's shards
  std::shared_ptr<std::atomic<int>> ready;  ///< replica ready transitions so far
  caf::actor autoscaler;                 ///< null unless autoscale.enabled
  /// Every actor above, for head_context::keep_alive.
  std::vector<caf::actor> actors() const;
};

/// What the head starts its data plane from besides the cluster file.
struct bring_up_state {
  /// The replicated state this head starts from (a standby that took over, or a cold
  /// restart): every replica is placed as it says (same node and device, same shape,
  /// parked ones stay parked, the autoscaler's target kept), the head waits only for the
  /// nodes it places shards on, and those nodes hand over the shards they kept (adoption).
  /// nullopt: the cluster file's placement.
  std::optional<head_state> restored;
  /// Where the replica manager records placement changes (null = nowhere).
  std::shared_ptr<head_state_recorder> recorder;
};

/// Brings the data plane up from the head, blocking: waits until every node registered
/// (with a restored state: every node it places a shard on), asks each slot's node agent
/// to spawn its shard, spawns the replicas and the router, and waits until at least one
/// replica is ready. Throws std::runtime_error naming what did not come up in time.
data_plane bring_up_replicas(caf::actor_system& sys, const caf::actor& supervisor,
                                             const cluster_config& c, std::shared_ptr<const model> meta,
                                             std::chrono::milliseconds timeout,
                                             const std::atomic<bool>& stopping,
                                             std::shared_ptr<troupe_metrics> metrics = nullptr,
                                             const bring_up_state& from = {});

}  // namespace troupe
