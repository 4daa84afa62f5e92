#pragma once
/// Re-planning a replica over the devices that are left (elastic capacity):
/// which tensor x pipeline shape fits a number of devices and the model's head counts,
/// and which devices a replica may take. The replica manager (actors/cluster/placement.cpp) uses it.
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "actors/cluster/placement.h"
#include "actors/leadership/head_state.h"
#include "cluster-config/cluster_config.h"
#include "runtime/model/model_config.h"

namespace troupe {

/// The shape of one replica: tensor-parallel ranks per stage x pipeline stages.
struct replica_plan {
  int tensor = 1;    ///< tensor-parallel ranks per stage
  int pipeline = 1;  ///< pipeline stages
  /// Shards (devices) the plan needs.
  int shards() const { return tensor * pipeline; }
  /// Same shape.
  bool operator==(const replica_plan& o) const { return tensor == o.tensor && pipeline == o.pipeline; }
  /// Different shape.
  bool operator!=(const replica_plan& o) const { return !(*this == o); }
};

/// "tensor 2 x pipeline 1".
std::string describe(const replica_plan& p);

/// The plan of the cluster file (`parallel.tensor` x `parallel.pipeline`).
replica_plan full_plan(const cluster_config& c);

/// The largest plan (most shards; on a tie, more pipeline stages: a stage boundary sends
/// one residual per step where tensor ranks all-reduce twice per layer) that needs at
/// most `devices` devices, is no larger than `full` in either dimension, and that the
/// model admits: `plan_tensor` accepts the tensor size (it divides the heads, or
/// `allow_uneven_heads`) and `plan_pipeline` the stage count. nullopt when no plan fits
/// (`devices` < 1).
std::optional<replica_plan> plan_for_devices(const model_config& m, const replica_plan& full, bool allow_uneven_heads,
                                             int devices);

/// `c` with the replica shape `p`: parallel.tensor and parallel.pipeline set, and
/// parallel.layers_per_stage kept only for the file's own pipeline size (a re-planned
/// pipeline is balanced by parameters). make_shard_spec() of this config gives the
/// re-planned replica's shard specs.
cluster_config config_for_plan(const cluster_config& c, const replica_plan& p);

/// A (node, device) pair.
using node_device = std::pair<std::string, std::string>;

/// The devices replica `replica` may take, best first: those of its `original` slots (so
/// a restored replica gets its file placement back), then of its `current` slots, then every other device of the nodes in `registered` (cluster
/// order); only devices of registered nodes, each device at most once, and none that a
/// slot of another replica in `current` uses.
std::vector<node_device> devices_for_replica(const cluster_config& c, int replica,
                                            const std::vector<shard_slot>& current,
                                            const std::vector<shard_slot>& original,
                                            const std::vector<std::string>& registered);

/// Slots of `replica` for plan `p` on the first p.shards() entries of `devices` (stage,
/// then rank). Throws std::invalid_argument when `devices` has fewer entries.
std::vector<shard_slot> slots_for_plan(int replica, const replica_plan& p, const std::vector<node_device>& devices);

/// Where the replicated head state puts the replicas (a new leader starts from it).
struct restored_placement {
  std::vector<shard_slot> slots;    ///< every shard of the replicas that run
  std::vector<replica_plan> plans;  ///< per replica ({0, 0}: parked or retired)
  std::set<int32_t> parked;         ///< parked by the autoscaler
  std::vector<int32_t> rebuilds;    ///< per replica
  int32_t scale_target = -1;        ///< the autoscaler's target (-1: none)
};

/// The placement `s` holds, checked against the cluster file `c` (as many replicas, each
/// shard on a node of the file with that device, no device twice, each replica's shards
/// filling its shape). Throws std::runtime_error naming what does not fit.
restored_placement placement_from_state(const cluster_config& c, const head_state& s);

}  // namespace troupe
