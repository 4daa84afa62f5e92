#pragma once
/// The leader's sender of its head state to one standby (issue 15): an actor per standby
/// head (event-based: it never blocks a thread) that holds the latest state the leader
/// recorded and delivers it to that standby's state replica (state_replica.h) on
/// heads[I].host:state_port. It never holds the leader up: the leader only hands it
/// `replicate_atom, term, sequence, bytes` and goes on; the sender connects (each attempt
/// bounded by 1 s), sends the newest state it holds (older ones it skipped are never sent),
/// and after a failure retries with a growing backoff (100 ms up to 2 s), sending the
/// newest again once the standby answers.
#include <caf/all.hpp>
#include <cstdint>
#include <memory>
#include <string>

#include "actors/troupe_metrics.h"

namespace troupe {

/// Where one standby's state replica listens.
struct state_sender_options {
  std::string target;  ///< "heads[1]", for logs and the errors metric
  std::string host;    ///< heads[I].host
  uint16_t port = 0;   ///< heads[I].state_port
  std::shared_ptr<troupe_metrics> metrics;  ///< troupe_head_state_replication_errors_total (null = nowhere)
};

/// Spawns the sender. It takes `replicate_atom, term, sequence, bytes` (keeping only the
/// newest) and `sweep_atom` (its own retry timer), and runs until it is sent an exit message.
caf::actor spawn_state_sender(caf::actor_system& sys, state_sender_options o);

}  // namespace troupe
