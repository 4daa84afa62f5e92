#pragma once
/// The node agent: one per node process. It is published on the node's host:port,
/// registers with the supervisor (name, pid, devices), sends heartbeats every
/// `fault_tolerance.heartbeat_interval`, and stops when the supervisor says so.
///
/// Fencing (no split brain after a partition): when the agent loses the head, or the head
/// fences it (`fence_atom`: it was declared lost while still connected), it stops every
/// shard at once ("fenced: stopping N shard(s) ..."): the head has failed those shards and
/// moved their requests, so they must never serve again; the node then registers afresh
/// and gets new shards.
///
/// Adoption (`fault_tolerance.head_grace` > 0): when the head process goes down, its loaded
/// shards are kept for the grace instead; a NEW head process (not the one that lost them)
/// whose bring-up asks this node for a shard of exactly the same spec gets the kept shard,
/// with fresh communicator endpoints and no KV cache (`adopt_atom`), and no weight is loaded
/// again. What no new head adopted within the grace is stopped; so is all of it when the
/// head that lost the node registers it again, or fences it.
///
/// It also spawns this node's shards (`spawn_shard_atom`), monitors them, logs their
/// progress ("shard s0r1: loading", "... loaded", "... connected", "... failed: why") and
/// stops them (exit reason user_shutdown) on `stop_atom` before answering.
///
/// Several heads (`heads:`): before it registers, the agent asks the head for the term of
/// its lease (`lease_atom`) and refuses a head whose term is older than the highest it has
/// seen ("refused the head of ...: its term 1 is older than term 2 this node has seen"):
/// a leader that was paused or cut off while another head won a later term can never take
/// the node back. Control messages (spawn, stop, fence) are taken only from the head it is
/// attached to, and each carries the sender's term (`head_term`): the agent keeps the highest
/// term it has seen (at attach and in every control message) and refuses a control message
/// of an older term, from whichever link, with an error naming both terms ("refused to
/// spawn shard s0r0 for term 1: this node has seen term 2 (a deposed leader's message)").
/// The shards it spawns learn the spawn's term; an adoption hands them the adopting
/// head's. With a single head every term is 0 and nothing is refused.
///
/// Authorization: attach and unregister come from this process only; stop, spawn and fence
/// from this process or the head it is attached to (an actor of the supervisor's node);
/// anything else is refused with an error naming the sender, and logged. A shard is spawned
/// only for the model of the node's cluster file (`node_agent_options::model_path`).
#include <caf/all.hpp>
#include <functional>
#include <string>

#include "actors/messages.h"
#include "actors/serving/shard.h"
#include "actors/cluster/supervisor.h"
#include "cluster-config/cluster_config.h"

namespace troupe {

/// The node agent's typed interface.
using node_agent_actor = caf::typed_actor<
    /// From the node's main thread: register with this (connected) supervisor.
    caf::reacts_to<attach_atom, supervisor_actor>,
    /// From the supervisor, with its term: stop (drain hook) and let the process exit.
    caf::replies_to<stop_atom, head_term>::with<caf::ok_atom>,
    /// From the node's main thread: unregister from the supervisor (SIGTERM path).
    caf::replies_to<unregister_atom>::with<caf::ok_atom>,
    /// This node's registration record.
    caf::replies_to<status_atom>::with<node_info>,
    /// Internal timer: send the next heartbeat if `generation` is still current.
    caf::reacts_to<heartbeat_atom, uint64_t>,
    /// From a replica (or the head's placement), with the head's term: spawn a shard on this
    /// node (it learns that term as its owner's) and return it.
    caf::replies_to<spawn_shard_atom, head_term, shard_spec>::with<shard_actor>,
    /// From the supervisor (network chaos: fencing), with its term, answering the heartbeat
    /// with this sequence number: this agent is not the registered incarnation of its node
    /// any more; stop every shard and register again. Ignored when it fences an earlier
    /// registration.
    caf::reacts_to<fence_atom, head_term, uint64_t, std::string>,
    /// Internal timer: fault_tolerance.head_grace ended for the shards kept since the head
    /// was lost (`generation` of the orphans); those no new head adopted stop.
    caf::reacts_to<head_grace_atom, uint64_t>>;

/// What the agent reports to the process that runs it (called on an actor thread).
enum class node_event {
  registered,      ///< the supervisor accepted the registration
  rejected,        ///< the supervisor refused it (detail says why); the process should exit
  head_lost,       ///< the supervisor went down; reconnect or exit
  stop_requested,  ///< the supervisor asked this node to stop
};

/// How a node agent is set up.
struct node_agent_options {
  node_info info;                   ///< what it registers
  fault_tolerance_section fault_tolerance;  ///< heartbeat interval, request timeouts
  /// The only model its shards may load (the cluster file's model.path); "" = none.
  std::string model_path;
  std::function<void(node_event, const std::string& detail)> on_event;  ///< must be thread-safe
};

/// Spawns a node agent; it is idle until `attach_atom`.
node_agent_actor spawn_node_agent(caf::actor_system& sys, node_agent_options opts);

}  // namespace troupe
