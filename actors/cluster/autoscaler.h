#pragma once
/// Autoscaling: replicas scale up and down with load (queue depth, KV
/// usage) within the devices of the cluster file, like an autoscaler. A pure policy
/// (autoscale_policy) turns load samples into a target number of active replicas; the
/// autoscaler actor samples the router and the replicas' gauges every autoscale.interval
/// and sends the replica manager `scale_atom, target`. The manager (actors/cluster/placement.cpp)
/// parks the replicas above the target (drained, shards stopped, devices freed) and
/// restores parked ones when the target rises.
#include <algorithm>
#include <caf/all.hpp>
#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "actors/serving/router.h"
#include "actors/troupe_metrics.h"
#include "cluster-config/cluster_config.h"

namespace troupe {

/// One look at the cluster's load.
struct load_sample {
  int serving = 0;      ///< replicas ready and not draining
  int waiting = 0;      ///< requests waiting: for a replica (router) and in the replicas' queues
  int running = 0;      ///< requests in a replica's running batch
  double kv_usage = 0;  ///< mean KV-cache usage (0..1) of the serving replicas
  int available = 0;    ///< replicas the devices allow now (the file's, less those retired)
  std::chrono::steady_clock::time_point at;  ///< when it was taken
};

/// Which way a decision went.
enum class scale_direction { none, up, down };

/// "none", "up" or "down".
const char* to_string(scale_direction d);

/// What the policy made of one sample.
struct scale_decision {
  int target = 0;  ///< active replicas wanted now, within [min, max] and what is available
  scale_direction direction = scale_direction::none;  ///< up/down: the load moved the target
  std::string reason;  ///< the rule that fired, with its numbers ("" when none did)
};

/// The autoscaling rules (docs/configuration.md, `autoscale:`):
/// - over: waiting requests per serving replica > scale_up_queue, or the serving
///   replicas' mean KV usage > scale_up_kv: one more replica at once (no waiting);
/// - low: running + waiting requests per serving replica < scale_down_load (and not
///   over): one fewer replica once the load stayed low for scale_down_after, and again
///   only after another scale_down_after of low load;
/// - two decisions are at least `cooldown` apart;
/// - the target stays within [min_replicas, max_replicas (0 = the file's replicas)] and
///   never exceeds the replicas the devices allow (a failure's retired replicas do not count).
/// The target starts at the most allowed: the cluster comes up as the file says.
class autoscale_policy {
 public:
  /// A policy for the validated section `config` over the file's `planned` replicas.
  autoscale_policy(const autoscale_section& config, int planned);
  /// Folds `s` into the state and returns the target.
  scale_decision decide(const load_sample& s);
  /// The target before it is clamped to what is available.
  int wanted() const { return wanted_; }
  /// Starts from `target` (within 1 and max_replicas) instead of the most allowed: a head
  /// that took over keeps the target its predecessor reached.
  void start_at(int target) { wanted_ = std::max(1, std::min(target, max_)); }
  /// The most active replicas (max_replicas, or the file's replicas).
  int max_replicas() const { return max_; }

 private:
  using time_point = std::chrono::steady_clock::time_point;
  bool cooled(time_point at) const;

  autoscale_section config_;
  int max_ = 1;
  int wanted_ = 1;
  std::optional<time_point> low_since_;      ///< start of the current low-load stretch
  std::optional<time_point> last_decision_;  ///< for the cooldown
};

/// How the autoscaler actor is set up.
struct autoscaler_options {
  cluster_config config;    ///< the validated cluster file (autoscale, parallel, scheduler)
  router_actor router;      ///< asked for its status every interval
  caf::actor manager;       ///< the replica manager: gets `scale_atom, target`
  /// Where the replicas publish their gauges (KV usage, queues) and where the target and
  /// decisions go; null: the router's numbers only, and no KV usage.
  std::shared_ptr<troupe_metrics> metrics;
  /// The target to start from (the replicated head state's; -1: the most allowed).
  int initial_target = -1;
};

/// Spawns the autoscaler; it runs until it is sent an exit message.
caf::actor spawn_autoscaler(caf::actor_system& sys, autoscaler_options opts);

}  // namespace troupe
