#pragma once
/// Every message type and atom of troupe's control plane, in one place. Each struct has
/// an `inspect` (CAF 0.17 serialization); `add_message_types` registers them all with an
/// actor_system_config so they can cross process boundaries.
#include <caf/all.hpp>
#include <cstdint>
#include <string>
#include <vector>

namespace troupe {

// -- atoms (at most 10 characters each) ---------------------------------------------------

/// A node agent announces itself to the supervisor.
using register_atom = caf::atom_constant<caf::atom("register")>;
/// A node agent leaves the cluster on purpose (SIGTERM, drain finished).
using unregister_atom = caf::atom_constant<caf::atom("unregister")>;
/// Liveness beacon: node agent -> supervisor, and the agent's own heartbeat timer.
using heartbeat_atom = caf::atom_constant<caf::atom("heartbeat")>;
/// Asks an actor for its state (supervisor: cluster_status, node agent: node_info).
using status_atom = caf::atom_constant<caf::atom("status")>;
/// Orderly shutdown: supervisor -> node agents, head main -> supervisor.
using stop_atom = caf::atom_constant<caf::atom("stop")>;
/// Head main -> supervisor: start the local node processes (after publishing).
using start_atom = caf::atom_constant<caf::atom("start")>;
/// Node main -> node agent: here is the (connected) supervisor, register with it.
using attach_atom = caf::atom_constant<caf::atom("attach")>;
/// The supervisor's periodic timer: reap children, check heartbeat deadlines.
using sweep_atom = caf::atom_constant<caf::atom("sweep")>;

// -- membership ---------------------------------------------------------------------------

/// Where a node is in its life as the supervisor sees it.
enum class node_state : uint8_t {
  starting,    ///< expected (or its process launched), not registered yet
  registered,  ///< registered and heartbeating
  lost,        ///< detected down and not being restarted (given up, or not ours to restart)
  restarting,  ///< detected down; a new process was launched and has not registered yet
  stopped,     ///< left on purpose (unregistered, or stopped by the head)
};

/// "starting", "registered", ...
inline std::string to_string(node_state s) {
  switch (s) {
    case node_state::starting: return "starting";
    case node_state::registered: return "registered";
    case node_state::lost: return "lost";
    case node_state::restarting: return "restarting";
    case node_state::stopped: return "stopped";
  }
  return "node_state(" + std::to_string(static_cast<int>(s)) + ")";
}

/// What a node agent tells the supervisor about itself when it registers.
struct node_info {
  std::string name;                  ///< the node's name in the cluster file
  int32_t pid = 0;                   ///< process id on its host
  std::string host;                  ///< host it is reachable at (advertised)
  uint16_t port = 0;                 ///< port its node agent is published on
  std::vector<std::string> devices;  ///< "cpu", "cuda:0", ...
};

/// `inspect` for node_info.
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, node_info& x) {
  return f(caf::meta::type_name("troupe::node_info"), x.name, x.pid, x.host, x.port, x.devices);
}

/// One row of the supervisor's membership table.
struct node_status {
  std::string name;               ///< the node's name in the cluster file
  node_state state = node_state::starting;  ///< see node_state
  int32_t pid = 0;                ///< current process id (0 = none known)
  bool launched = false;          ///< the head started (and may restart) this process
  int32_t restarts = 0;           ///< processes launched after the first
  int64_t detect_ms = -1;         ///< last loss: time from the last heartbeat to detection
  int64_t recover_ms = -1;        ///< last loss: time from detection to re-registration
  int64_t lost_at_unix_ms = -1;   ///< last loss: wall-clock detection time (ms since epoch)
  std::string last_error;         ///< why it was last lost ("" = never)
};

/// `inspect` for node_status.
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, node_status& x) {
  return f(caf::meta::type_name("troupe::node_status"), x.name, x.state, x.pid, x.launched,
           x.restarts, x.detect_ms, x.recover_ms, x.lost_at_unix_ms, x.last_error);
}

/// The answer to `status_atom` at the supervisor: every node, in cluster-file order.
struct cluster_status {
  std::vector<node_status> nodes;  ///< one per entry of `nodes:`
  bool stopping = false;           ///< the head is shutting down
};

/// `inspect` for cluster_status.
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, cluster_status& x) {
  return f(caf::meta::type_name("troupe::cluster_status"), x.nodes, x.stopping);
}

/// The row of node `name`, or nullptr.
inline const node_status* find_node(const cluster_status& s, const std::string& name) {
  for (const auto& n : s.nodes)
    if (n.name == name) return &n;
  return nullptr;
}

/// One line for logs: "n0=registered(pid 12) n1=restarting(pid 15, restarts 1)".
inline std::string format_status_line(const cluster_status& s) {
  std::string line = s.stopping ? "[stopping]" : "";
  for (const auto& n : s.nodes) {
    if (!line.empty()) line += ' ';
    line += n.name + '=' + to_string(n.state) + "(pid " + std::to_string(n.pid);
    if (n.restarts > 0) line += ", restarts " + std::to_string(n.restarts);
    line += ')';
  }
  return line;
}

/// Registers every type above with `cfg` (needed for remote sends).
inline void add_message_types(caf::actor_system_config& cfg) {
  cfg.add_message_type<node_info>("troupe::node_info");
  cfg.add_message_type<node_status>("troupe::node_status");  // also vector<node_status>
  cfg.add_message_type<cluster_status>("troupe::cluster_status");
}

}  // namespace troupe
