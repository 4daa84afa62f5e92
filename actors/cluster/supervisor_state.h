#pragma once
/// Internal to the supervisor (supervisor.cpp, supervisor_drain.cpp): its actor state and
/// the helpers both files use. Not part of the supervisor's interface (supervisor.h).
#include <chrono>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "actors/cluster/node_agent.h"
#include "actors/cluster/supervisor.h"

namespace troupe::supervisor_detail {

using steady = std::chrono::steady_clock;

/// One node as the supervisor tracks it.
struct member {
  node_section spec;
  node_status status;
  bool local = false;          // on this host and launched by the head
  node_agent_actor agent;      // set while registered
  steady::time_point last_seen;
  steady::time_point lost_at;  // first loss of the current outage
  int order = 0;               // start (or registration) order, for reverse-order stop
  pid_t exiting = 0;           // a killed process of this node not reaped yet (sweeps reap it)
  steady::time_point exiting_since;
  bool exit_overdue = false;   // exiting for longer than node_exit_wait (logged once)
  uint64_t registrations = 0;  // registrations accepted (head_state's incarnation)
};

/// A graceful drain of one node, kept until the node registers again.
struct drain_record {
  bool done = false;              // drained: its process was asked to stop
  bool replace = false;           // its shards may move to free devices
  std::vector<int32_t> replicas;  // replicas with a shard on the node
  int32_t migrated = -1;          // requests moved at the deadline (once done)
  std::string detail;             // progress, for operators
};

struct supervisor_state {
  supervisor_options opts;
  std::map<std::string, drain_record> drains;  // by node name
  std::vector<member> members;  // cluster-file order
  caf::actor router;  // set by the head's main once the data plane serves
  bool started = false;
  bool stopping = false;
  int next_order = 0;
  /// Nodes asked to stop that have not answered: name -> completion ("stopped", ...).
  std::map<std::string, std::function<void(const std::string&)>> stop_waiters;
  steady::time_point last_sweep;  // when the previous sweep ran (head stalls, see on_sweep)
  std::map<int32_t, steady::time_point> gateway_seen;  // gateway index -> when it last said it serves here
  static inline const char* name = "troupe.supervisor";
};

using sup_ptr = supervisor_actor::stateful_pointer<supervisor_state>;

/// Logs the cluster's status line, updates the node gauges and hands the membership to the
/// head state recorder (a new sequence only when it changed).
void log_status(sup_ptr self);
/// The member named `name`, or nullptr.
member* find_member(supervisor_state& st, const std::string& name);
/// Every member's name, comma-separated (for errors).
std::string member_names(const supervisor_state& st);
/// Whether the current message comes from the head's own actors (this process).
bool from_head(sup_ptr self);
/// Logs and describes a refused control message (`what`: "stop the cluster").
caf::error refuse(sup_ptr self, const std::string& what);
/// Node `m` as operators see it (state, replicas, drain progress).
node_view view_of(const supervisor_state& st, const member& m);
/// troupe_nodes{state}: how many nodes are in each operator-facing state.
void update_node_gauges(const supervisor_state& st);
/// `drain_atom`: checks the request, marks the node draining and asks the router to drain
/// its replicas.
drain_reply on_drain(sup_ptr self, const std::string& name, bool replace, const std::string& admin_key);

}  // namespace troupe::supervisor_detail
