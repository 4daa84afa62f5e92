// Fencing by term (issue 15, item 2): a node agent asks a head for the term of its lease
// before it registers, and refuses a head whose term is older than the highest it has seen
// (a leader that was paused or cut off while another head won a later term). Three actor
// systems in one process (the node, a head of term 2, a deposed head of term 1), joined by
// the middleman on loopback ports.
#include <catch2/catch.hpp>
#include <mutex>
#include <thread>

#include "actors/actor_system_config.h"
#include "actors/cluster/node_agent.h"
#include "actors/cluster/supervisor.h"
#include "actors/shard_steps.h"

namespace {

using namespace troupe;
using namespace std::chrono_literals;

using process = test::actor_process;

/// A head process's supervisor of node n0 with lease term `term`, published on a loopback
/// port; returns the port.
uint16_t start_head(process& p, uint64_t term, supervisor_actor& sup) {
  auto config = default_cluster_config();
  config.nodes.front().name = "n0";
  supervisor_options so;
  so.config = config;
  so.launch_local_nodes = false;
  so.term = term;
  sup = spawn_supervisor(p.sys, so);
  p.owned.push_back(caf::actor_cast<caf::actor>(sup));
  auto port = p.sys.middleman().publish(sup, 0, "127.0.0.1");
  REQUIRE(port);
  return *port;
}

/// The node agent's reports, as its process's main thread sees them.
struct events {
  std::mutex mutex;
  std::vector<std::pair<node_event, std::string>> seen;
  /// Waits up to 5 s for an event of kind `e`; its detail, or nullopt.
  std::optional<std::string> wait_for(node_event e) {
    for (int i = 0; i < 500; ++i, std::this_thread::sleep_for(10ms)) {
      std::lock_guard<std::mutex> lock(mutex);
      for (auto it = seen.begin(); it != seen.end(); ++it)
        if (it->first == e) {
          auto detail = it->second;
          seen.erase(it);
          return detail;
        }
    }
    return std::nullopt;
  }
};

/// Whether the head `sup` counts n0 registered.
bool registered_at(process& hp, const supervisor_actor& sup) {
  auto st = test::ask<cluster_status>(hp.self, sup, status_atom::value);
  return st && st->nodes.size() == 1 && st->nodes[0].state == node_state::registered;
}

}  // namespace

TEST_CASE("a node agent registers with a head of the highest term it has seen or a later one, and refuses a deposed "
          "head of an older term, naming both terms",
          "[actors][leadership]") {
  events ev;  // outlives the processes: the agent reports the heads' loss while they end
  process node, new_head, old_head, later_head;
  supervisor_actor sup2, sup1, sup3;
  const uint16_t port2 = start_head(new_head, 2, sup2);
  const uint16_t port1 = start_head(old_head, 1, sup1);
  const uint16_t port3 = start_head(later_head, 3, sup3);
  node_agent_options ao;
  ao.info = {"n0", 1, "127.0.0.1", 0, {"cpu"}};
  ao.on_event = [&ev](node_event e, const std::string& d) {
    std::lock_guard<std::mutex> lock(ev.mutex);
    ev.seen.emplace_back(e, d);
  };
  auto a = spawn_node_agent(node.sys, ao);
  node.owned.push_back(caf::actor_cast<caf::actor>(a));

  auto remote2 = node.sys.middleman().remote_actor<supervisor_actor>("127.0.0.1", port2);
  REQUIRE(remote2);
  node.self->send(a, attach_atom::value, *remote2);
  const auto registered = ev.wait_for(node_event::registered);
  REQUIRE(registered);
  CHECK(*registered == "term 2");
  CHECK(registered_at(new_head, sup2));

  // The deposed head (term 1) is refused: the node does not register with it.
  auto remote1 = node.sys.middleman().remote_actor<supervisor_actor>("127.0.0.1", port1);
  REQUIRE(remote1);
  node.self->send(a, attach_atom::value, *remote1);
  const auto lost = ev.wait_for(node_event::head_lost);
  REQUIRE(lost);
  CHECK(*lost == "refused: its term 1 is older than term 2 this node has seen (a deposed leader)");
  CHECK_FALSE(ev.wait_for(node_event::registered));
  CHECK_FALSE(registered_at(old_head, sup1));

  // A head of a later term still is taken.
  auto remote3 = node.sys.middleman().remote_actor<supervisor_actor>("127.0.0.1", port3);
  REQUIRE(remote3);
  node.self->send(a, attach_atom::value, *remote3);
  const auto later = ev.wait_for(node_event::registered);
  REQUIRE(later);
  CHECK(*later == "term 3");
  CHECK(registered_at(later_head, sup3));
}
