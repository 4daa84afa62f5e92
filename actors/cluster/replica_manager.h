#pragma once
/// The replica manager: the head's actor that keeps every replica whole. It respawns a
/// failed replica's shards through the node agents, moves shards of nodes lost for good to
/// free devices, re-plans a replica over the devices left (or retires it), grows it back
/// when devices return, and parks and restores replicas for the autoscaler.
#include <atomic>
#include <memory>
#include <set>
#include <vector>

#include "actors/cluster/placement.h"
#include "actors/cluster/replan.h"
#include "actors/cluster/supervisor.h"

namespace troupe {

/// What the manager starts from: the cluster file's placement and the live data plane.
struct replica_manager_options {
  cluster_config config;                          ///< the cluster file
  model_config model;                             ///< the served model's shape
  supervisor_actor supervisor;                    ///< membership (registered nodes)
  std::vector<shard_slot> slots;                  ///< the current placement (the file's, or a restored one)
  std::vector<shard_slot> original;               ///< the cluster file's placement (empty: `slots`)
  std::vector<replica_actor> replicas;            ///< every replica, by index
  std::vector<std::vector<shard_actor>> shards;   ///< per replica, slot order
  caf::actor router;                              ///< told of every replica state change
  std::shared_ptr<std::atomic<int>> ready_count;  ///< counts replica ready transitions
  std::shared_ptr<troupe_metrics> metrics;        ///< capacity gauges (null = nowhere)
  head_term term;                                 ///< the head's term, carried by every spawn request
  /// Per replica: its shape (empty: the file's plan for each; {0, 0}: retired or parked).
  std::vector<replica_plan> plans;
  std::set<int32_t> parked;       ///< replicas parked by the autoscaler (no shards)
  std::vector<int32_t> rebuilds;  ///< per replica: rebuilds so far (empty: none)
  int32_t scale_target = -1;      ///< the autoscaler's last target (-1 = none yet)
  /// Where placement changes go (the replicated head state; null = nowhere).
  std::shared_ptr<head_state_recorder> recorder;
};

/// Spawns the manager. It takes ready_atom (replica, ok) and hold_atom (replica) from the
/// replicas, and replies to scale_atom (target) with the replicas it will keep active.
caf::actor spawn_replica_manager(caf::actor_system& sys, replica_manager_options o);

}  // namespace troupe
