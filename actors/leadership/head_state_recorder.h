#pragma once
/// The leader's head state as it changes (issue 15, "Replicated head state"): the supervisor
/// (membership, drains), the replica manager (placement, shapes, parked replicas, rebuilds,
/// the autoscaler's target) each hand the recorder their part when it changes; the recorder
/// joins the parts and, only when the whole differs from the last state recorded, gives it
/// the next sequence under the leader's term. A thread of its own then saves it in the
/// store (head_state_store.h, fsync) and hands it to one state_sender per standby, so that
/// neither the disk nor a slow or dead standby ever holds up the actor that made the change.
#include <caf/all.hpp>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "actors/leadership/head_state_store.h"
#include "actors/leadership/state_sender.h"
#include "actors/troupe_metrics.h"
#include "cluster-config/cluster_config.h"

namespace troupe {

/// How a recorder is set up.
struct head_state_recorder_options {
  uint64_t term = 0;          ///< the leader's lease term (0: a single head)
  std::string config_digest;  ///< cluster_config_digest() of the file it serves
  /// Where the state is saved (nullopt: nowhere, e.g. a single head without
  /// leadership.single_head_state).
  std::optional<std::filesystem::path> directory;
  /// The state this leader started from (its sequence continues; its parts count as
  /// recorded, so an unchanged cluster records nothing new). nullopt: sequence 0.
  std::optional<head_state> restored;
  std::vector<state_sender_options> standbys;  ///< one sender each
  std::shared_ptr<troupe_metrics> metrics;     ///< troupe_head_state_* (null = nowhere)
};

/// Thread-safe: the set_* calls come from several actors.
class head_state_recorder {
 public:
  /// Spawns the senders and the writer thread.
  head_state_recorder(caf::actor_system& sys, head_state_recorder_options o);
  /// Stops the writer and tells the senders to stop, without waiting for them (it may run
  /// on an actor's thread, where the last owner lets go).
  ~head_state_recorder();
  /// Stops the writer (after it saved the latest state) and the senders, and waits (at most
  /// 5 s) until every sender has terminated, so that no send to a standby is under way
  /// when it returns; later changes are recorded but neither saved nor sent. Idempotent.
  /// Not on an actor's thread (it blocks).
  void stop();
  head_state_recorder(const head_state_recorder&) = delete;
  head_state_recorder& operator=(const head_state_recorder&) = delete;

  /// The supervisor's part: every member, in cluster-file order.
  void set_members(std::vector<member_state> members);
  /// The replica manager's part: every replica by index, and the autoscaler's target.
  void set_replicas(std::vector<replica_state> replicas, autoscale_state autoscale);

  /// The latest state recorded (term and sequence included).
  head_state latest() const;
  /// The sequence of the latest state saved to disk (0: none yet).
  uint64_t saved_sequence() const;
  /// Blocks until the state of `sequence` (or a later one) is saved and handed to the
  /// senders, or `timeout` passed; true when it was (tests, orderly shutdown).
  bool wait_saved(uint64_t sequence, std::chrono::milliseconds timeout) const;

 private:
  void changed_locked();
  void write_loop();
  /// stop(), waiting for the senders' termination or not.
  void halt(bool wait);

  caf::actor_system* sys_;
  head_state_recorder_options opts_;
  std::optional<head_state_store> store_;
  std::vector<caf::actor> senders_;
  mutable std::mutex mutex_;
  mutable std::condition_variable cv_;
  head_state current_;   ///< the parts as last set, with the latest term and sequence
  head_state recorded_;  ///< the last state given a sequence
  uint64_t saved_ = 0;   ///< the last sequence the writer finished
  bool stop_ = false;
  std::thread writer_;
};

/// SHA-256 (hex) of the effective cluster file (to_yaml of `c`: the file with its --set
/// overrides): what head_state::config_digest names, so a head refuses a state made for
/// another cluster.
std::string cluster_config_digest(const cluster_config& c);

}  // namespace troupe
