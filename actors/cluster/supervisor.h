#pragma once
/// The supervisor: the head's membership authority. It starts the node processes the
/// cluster file places on this host, takes registrations from node agents, monitors each
/// one (CAF monitor on the remote actor, with the middleman heartbeat of
/// actors/actor_system_config.h), detects loss, restarts the processes it started, and
/// answers `status_atom` with the membership table. Clients outside the head find the
/// router through it (`router_atom`): the supervisor is the head's only published actor.
///
/// Authorization: a peer may register a node, heartbeat and read (status, nodes, router);
/// only the head's own actors (this process) may start, stop, set the router, list the
/// agents or sweep; a node may unregister only itself; a drain from outside the head needs
/// an admin key. A refused request gets an error naming the sender, and is logged.
///
/// Later (the lead): placement, replicas and shards; `register_atom` is where a node's
/// devices enter placement, and the down handler is where re-placement starts.
#include <caf/all.hpp>
#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "actors/cluster/launch.h"
#include "actors/leadership/head_state_recorder.h"
#include "actors/messages.h"
#include "cluster-config/cluster_config.h"

namespace troupe {

/// The supervisor's typed interface.
using supervisor_actor = caf::typed_actor<
    /// A node agent (the sender) registers; fails for an unknown or duplicate name.
    caf::replies_to<register_atom, node_info>::with<caf::ok_atom>,
    /// A node agent leaves on purpose (state `stopped`, never restarted).
    caf::replies_to<unregister_atom, std::string>::with<caf::ok_atom>,
    /// Liveness beacon from node `name` with a sequence number.
    caf::reacts_to<heartbeat_atom, std::string, uint64_t>,
    /// The membership table.
    caf::replies_to<status_atom>::with<cluster_status>,
    /// The registered nodes' names and agents (caf::actor of node_agent_actor), for placement.
    caf::replies_to<agents_atom>::with<std::vector<std::string>, std::vector<caf::actor>>,
    /// Launches the local node processes (once; send it after publishing).
    caf::reacts_to<start_atom>,
    /// Stops accepting registrations, stops every registered node (reverse start order)
    /// and answers when all answered or the stop deadline passed.
    caf::replies_to<stop_atom>::with<caf::ok_atom>,
    /// The head's main sets the router (caf::actor of router_actor) once the data plane is up,
    /// and a null one when the head stops (no client gets it then).
    caf::reacts_to<router_atom, caf::actor>,
    /// The router, for clients; fails with sec::unavailable_or_would_block ("the cluster is
    /// not serving yet") until it is set.
    caf::replies_to<router_atom>::with<caf::actor>,
    /// Internal timer: reaps exited children and checks heartbeat deadlines.
    caf::reacts_to<sweep_atom>,
    /// Graceful drain of node `name`: its replicas take no new request, their requests
    /// finish (or move to other replicas at fault_tolerance.drain_timeout), then the node
    /// stops; not a failure (no restart). With `replace`, the replica manager may move its
    /// shards to free devices; without, its replicas wait for the node to register again.
    /// The last string is the admin credential: a sender outside the head's process must
    /// present one of server.admin_keys (`troupe drain --admin-key`).
    /// Answered at once (drain_reply::code 202, or 400/403/409 with the reason).
    caf::replies_to<drain_atom, std::string, bool, std::string>::with<drain_reply>,
    /// Every node as an operator sees it, in cluster-file order.
    caf::replies_to<nodes_atom>::with<std::vector<node_view>>,
    /// The term of the lease this head leads by (0: a single head, no election). A node
    /// agent asks it before it registers and refuses a head of an older term than it saw.
    caf::replies_to<lease_atom>::with<uint64_t>,
    /// The heads of the cluster file (this one leads, with its term) and its gateways, for
    /// GET /admin/nodes.
    caf::replies_to<roles_atom>::with<cluster_roles>,
    /// Gateway `index` (of the file's `gateways:`) serves through this head: sent every
    /// second by its client actor; roles_atom tells how long ago it was last heard.
    caf::reacts_to<gateway_atom, int32_t>>;

/// The name the supervisor registers itself under in its actor system's registry (the
/// head's HTTP gateway finds it there for the admin endpoints).
constexpr caf::atom_value supervisor_registry_name = caf::atom("supervisor");

/// How the supervisor is set up.
struct supervisor_options {
  cluster_config config;                      ///< the cluster file (validated)
  std::string config_path;                    ///< passed to launched nodes as --config
  std::vector<std::string> overrides;         ///< passed to launched nodes as --set
  bool launch_local_nodes = true;             ///< start processes for nodes on this host
  std::shared_ptr<process_launcher> launcher; ///< owns the child processes
  std::string executable;                     ///< program to launch ("" = /proc/self/exe)
  std::chrono::milliseconds sweep_interval{50};  ///< reap / deadline check period
  std::chrono::milliseconds stop_wait{3000};  ///< how long `stop_atom` waits for nodes
  std::shared_ptr<troupe_metrics> metrics;    ///< node up/restarts go here (null = nowhere)
  uint64_t term = 0;                          ///< the elected head's term (0 = single head)
  size_t head_index = 0;                      ///< which entry of heads: this head is (0 = the single head)
  /// Where membership changes go (the replicated head state; null = nowhere).
  std::shared_ptr<head_state_recorder> recorder;
  /// The state this head starts from: restart counts, and nodes drained (done) stay
  /// drained; a drain still in progress is not continued.
  std::optional<head_state> restored;
};

/// Spawns the supervisor. It launches nothing until it receives `start_atom`.
supervisor_actor spawn_supervisor(caf::actor_system& sys, supervisor_options opts);

/// The heads of `opts.config` (entry `opts.head_index` leads with `opts.term`: a supervisor
/// runs only in the leader) and its gateways, each with how long ago it was last heard
/// (`gateway_seen`: gateway index -> when).
cluster_roles roles_of(const supervisor_options& opts,
                       const std::map<int32_t, std::chrono::steady_clock::time_point>& gateway_seen = {});

/// The command line that starts node `name` of `opts` (troupe node --config ... --name ...).
std::vector<std::string> node_command_line(const supervisor_options& opts, const std::string& name);

}  // namespace troupe
