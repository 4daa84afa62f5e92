#pragma once
/// The replica actor: the scheduler of one model instance (a tensor x pipeline group of
/// shards). It runs an engine with local_execution off: it schedules a step, sends it to
/// every shard of the group, completes it with the sampling shard's answer and streams
/// each request's tokens to the request's client. With pipeline > 1 up to
/// `scheduler.micro_batches` steps (disjoint sets of sequences) are in flight, so pipeline
/// stages overlap; with one stage, one step (the whole batch) at a time.
///
/// When a shard fails (down, or a step error) the replica aborts the other shards'
/// transfers, gives its in-flight steps back to the scheduler (their sequences are
/// recomputed later: requests survive) and reports itself not ready until
/// `rebuild_atom` hands it a fresh set of shards.
///
/// Stage-local recovery (pipeline > 1, fault_tolerance.stage_recovery): a serving replica
/// keeps its requests and its KV block tables instead. `rebuild_atom` then may reuse the
/// surviving shards (same handles): they get fresh communicator endpoints (relink_atom)
/// and keep their KV cache; only the stages with a failed or new shard rebuild theirs, by
/// replay steps fed from the inputs the stage before kept. Past
/// fault_tolerance.stage_recovery_timeout, or when every stage is new, it falls back to
/// the full recomputation.
#include <caf/all.hpp>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "actors/messages.h"
#include "actors/serving/shard.h"
#include "actors/troupe_metrics.h"
#include "runtime/engine/engine.h"
#include "cluster-config/cluster_config.h"

namespace troupe {

/// The replica's typed interface.
using replica_actor = caf::typed_actor<
    /// Request `id` for `client` (a caf::actor that receives token_atom, token_msg).
    caf::reacts_to<generate_atom, uint64_t, generate_request, caf::actor>,
    caf::reacts_to<cancel_atom, uint64_t>,
    caf::replies_to<status_atom>::with<replica_status>,
    /// New shards, index = stage * tensor + rank; the replica connects them and resumes.
    caf::reacts_to<rebuild_atom, std::vector<shard_actor>>,
    /// Internal timer of a stage-local recovery (its number): give up when still recovering.
    caf::reacts_to<hold_atom, uint64_t>,
    /// The manager stops this replica's shards on purpose (autoscaling parks it after a
    /// drain): let them go without counting a failure; the replica waits for new shards.
    caf::reacts_to<stop_atom>,
    /// New shards of a new shape (tensor, pipeline), index = stage * tensor + rank: a
    /// serving replica first gives its requests back (as on a failure), then adopts them.
    caf::reacts_to<replan_atom, std::vector<shard_actor>, int32_t, int32_t>,
    /// The router wants this replica's prefix-cache summaries: a snapshot now, then the
    /// changes (prefixes_atom, prefix_summary), batched every prefix_flush_interval.
    caf::reacts_to<subscribe_atom, caf::actor>,
    /// Internal timer: send the prefix-cache changes gathered since the last summary.
    caf::reacts_to<prefixes_atom>>;

/// How long a replica gathers prefix-cache changes before it sends them as one summary.
constexpr std::chrono::milliseconds prefix_flush_interval{10};
/// The most distinct prefix keys a replica journals between two summaries; beyond that
/// the next summary is a snapshot (reset) instead of a delta.
constexpr size_t prefix_journal_keys = 4096;
/// The most keys one snapshot carries (the replica's cached blocks beyond are left out).
constexpr size_t prefix_snapshot_keys = 16384;

/// How a replica is set up.
struct replica_options {
  int index = 0;
  cluster_config config;
  std::shared_ptr<const model> meta;  ///< tokenizer and config (no weights needed)
  std::vector<shard_actor> shards;    ///< index = stage * tensor + rank
  /// The term of the head that runs this replica (0: a single head): every step, connect
  /// and relink carries it, and a shard adopted by a newer head refuses them.
  head_term term;
  /// Where to report sequences, KV usage, prefix hits, readiness (null = nowhere).
  std::shared_ptr<troupe_metrics> metrics;
  /// Told (on an actor thread) when the replica becomes ready (true) or fails (false).
  std::function<void(int index, bool ready, const std::string& why)> on_state;
  /// Told (on an actor thread) when a shard failure starts a stage-local recovery: the
  /// replica keeps its requests and waits for new shards of the failed stages (a later
  /// on_state(false) means it gave up and its requests should move).
  std::function<void(int index)> on_recovering;
};

/// Spawns a replica; it connects its shards and reports ready through `on_state`.
replica_actor spawn_replica(caf::actor_system& sys, replica_options opts);

}  // namespace troupe

namespace troupe {

/// The engine settings of a replica, from the cluster file's scheduler section.
engine_config replica_engine_config(const scheduler_section& s);
/// The shard context every shard of a replica needs to match that engine.
context_params replica_context_params(const scheduler_section& s);

}  // namespace troupe
