#pragma once
/// Internal to the replica actor (replica.cpp, replica_accounting.cpp): its state and the
/// counters and metrics it publishes. Not part of the replica's interface (replica.h).
#include <chrono>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "actors/serving/replica.h"

namespace troupe::replica_detail {

/// A step sent to the shards and not answered by all of them yet.
struct flight {
  pending_step step;
  size_t waiting = 0;
  std::vector<sample_result> samples;
  std::chrono::steady_clock::time_point sent;  ///< when the step went to the shards
  std::vector<step_output> outputs;            ///< per shard: its timings (samples moved out)
};

/// Who asked for a sequence.
struct client_ref {
  uint64_t request = 0;
  caf::actor client;
};

struct replica_state {
  replica_options opts;
  std::unique_ptr<engine> eng;
  std::vector<shard_actor> shards;       // index = stage * tensor + rank
  bool ready = false;
  uint64_t generation = 0;               // bumps on every (re)connect and failure
  std::map<uint64_t, flight> flights;    // by step id
  std::chrono::steady_clock::time_point last_landed;  // when the last step's answers were all in
  bool ranks_diverged = false;           // overlapped steps: tensor ranks sampled different tokens
  std::unordered_map<seq_id, client_ref> clients;
  std::unordered_map<uint64_t, seq_id> by_request;
  replica_status status;
  block_stats reported;                  // prefix-cache counters already added to metrics
  bool failed_before = false;            // a failure happened since the last ready
  // Stage-local recovery (fault_tolerance.stage_recovery):
  bool recovering = false;               // holding the requests and the KV cache for new shards
  uint64_t recovery = 0;                 // which recovery the deadline timer belongs to
  std::set<int> failed_stages;           // stages with a failed shard since the recovery began
  std::vector<bool> reused;              // per shard: the handle survived the last adopt_shards
  std::vector<int64_t> kv_rows;          // per shard: KV rows written, as last reported
  // Prefix-cache summaries for the router (cache-aware routing):
  caf::actor subscriber;                 // where they go (null: nobody asked)
  bool flush_pending = false;            // a prefixes_atom timer is on its way
  static inline const char* name = "troupe.replica";
};

using replica_ptr = replica_actor::stateful_pointer<replica_state>;

/// Whether the replica overlaps its steps (scheduler.overlap, for replicas of one stage;
/// off for good once its tensor ranks sampled different tokens).
inline bool overlaps(const replica_state& st) { return st.opts.config.scheduler.overlap && !st.ranks_diverged; }

/// Observes a finished step's wall time (troupe_step_duration_seconds, by kind; with
/// overlapped steps from when it was sent or the step before it landed, whichever is later) and adds a
/// decode step (every row one new token) to the overhead counters: the
/// kernel time of a step is the sum over stages of the slowest rank's time outside the
/// communicators; the rest of the replica's wall time is the runtime's: communicator
/// transfers and waits (inside the shards' busy time) and actor messaging and scheduling
/// (the wall time beyond the longest busy shard).
void account_step(replica_state& st, const flight& f);

/// Publishes the scheduler's and the KV cache's state (after every step and request change).
void report(replica_state& st);

/// `down` of report_shards: every shard is down (stopped on purpose).
constexpr int all_shards = -2;

/// Publishes readiness and every shard's up/down state; `down` = the failed shard, -1 (none)
/// or all_shards.
void report_shards(replica_state& st, bool ready, int down);

/// Counts a finished replay: the restarted stages got `tokens` KV rows each, the others kept
/// theirs; `relinked` = each shard's KV row count when it was relinked.
void account_replay(replica_ptr self, const std::set<int>& stages, int64_t tokens, const std::vector<int64_t>& relinked,
                    std::chrono::steady_clock::time_point t0);

}  // namespace troupe::replica_detail
