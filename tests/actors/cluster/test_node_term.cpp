// Fencing by term (issue 15, item 2): a node agent asks a head for the term of its lease
// before it registers, and refuses a head whose term is older than the highest it has seen
// (a leader that was paused or cut off while another head won a later term). Three actor
// systems in one process (the node, a head of term 2, a deposed head of term 1), joined by
// the middleman on loopback ports. Every control message carries its sender's term, and the
// agent refuses one of an older term than it has seen, whichever link it came over.
#include <catch2/catch.hpp>
#include <mutex>
#include <thread>

#include "actors/actor_system_config.h"
#include "actors/cluster/node_agent.h"
#include "actors/cluster/supervisor.h"
#include "actors/serving/shard.h"
#include "actors/head_process.h"
#include "actors/shard_steps.h"

namespace {

using namespace troupe;
using namespace std::chrono_literals;

using process = test::actor_process;
using test::agent_from;

/// Process `p`'s supervisor of node n0 with lease term `term`, in `sup`; returns its port.
uint16_t start_head(process& p, uint64_t term, supervisor_actor& sup) {
  const auto h = test::start_head(p, term);
  sup = h.sup;
  return h.port;
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

/// Whether `e` is a refusal of `what` for term 1 by a node that has seen term 2.
bool refused_older(process& p, const caf::error& e, const std::string& what) {
  const auto why = p.sys.render(e);
  INFO(why);
  return why.find("refused to " + what + " for term 1: this node has seen term 2 (a deposed leader's message") !=
         std::string::npos;
}

/// Whether `s` (monitored by `p`) goes down within `timeout`.
bool goes_down(process& p, const shard_actor& s, std::chrono::milliseconds timeout) {
  bool down = false;
  p.self->receive([&](caf::down_msg& dm) { down = dm.source == s.address(); }, caf::after(timeout) >> [] {});
  return down;
}

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

TEST_CASE("a node agent that has seen term 2 refuses a spawn, a fence and a stop of term 1, from the head's link "
          "or its own process, naming both terms, and its shard serves on until a stop of term 2",
          "[actors][leadership][term]") {
  events ev;
  process node, head2;
  supervisor_actor sup2;
  const uint16_t port2 = start_head(head2, 2, sup2);
  node_agent_options ao;
  ao.info = {"n0", 1, "127.0.0.1", 0, {"cpu"}};
  ao.model_path = test::default_model();
  ao.on_event = [&ev](node_event e, const std::string& d) {
    std::lock_guard<std::mutex> lock(ev.mutex);
    ev.seen.emplace_back(e, d);
  };
  auto a = node.own(spawn_node_agent(node.sys, ao));
  auto remote2 = node.sys.middleman().remote_actor<supervisor_actor>("127.0.0.1", port2);
  REQUIRE(remote2);
  node.self->send(a, attach_atom::value, *remote2);
  REQUIRE(ev.wait_for(node_event::registered) == std::optional<std::string>{"term 2"});
  const auto via_head = agent_from(node, a, head2);

  // The term-2 head spawns a shard (a real one: the default model's first stage).
  auto shard = head2.ask<shard_actor>(via_head, spawn_shard_atom::value, head_term{2}, test::pipeline_spec(0));
  REQUIRE(shard);
  head2.own(*shard);
  REQUIRE(head2.ask<shard_addresses>(*shard, addresses_atom::value));
  node.self->monitor(*shard);

  // A deposed leader's messages of term 1 arrive afterwards, over the head's link.
  auto stale_spawn = head2.ask<shard_actor>(via_head, spawn_shard_atom::value, head_term{1}, test::pipeline_spec(1));
  REQUIRE_FALSE(stale_spawn);
  CHECK(refused_older(head2, stale_spawn.error(), "spawn shard s1r0"));
  head2.self->send(via_head, fence_atom::value, head_term{1}, uint64_t{1} << 40, std::string("stale leader"));
  auto stale_stop = head2.ask<caf::ok_atom>(via_head, stop_atom::value, head_term{1});
  REQUIRE_FALSE(stale_stop);
  CHECK(refused_older(head2, stale_stop.error(), "stop this node"));
  // ... and from the node's own process: the term is checked whichever link a message takes.
  auto local_stop = node.ask<caf::ok_atom>(a, stop_atom::value, head_term{1});
  REQUIRE_FALSE(local_stop);
  CHECK(refused_older(node, local_stop.error(), "stop this node"));

  // None of them acted: the shard is alive, the node neither fenced nor stopped.
  CHECK_FALSE(goes_down(node, *shard, 300ms));
  CHECK_FALSE(ev.wait_for(node_event::head_lost));
  CHECK_FALSE(ev.wait_for(node_event::stop_requested));
  CHECK(registered_at(head2, sup2));

  // The term-2 head's stop is taken.
  REQUIRE(head2.ask<caf::ok_atom>(via_head, stop_atom::value, head_term{2}));
  CHECK(goes_down(node, *shard, 5s));
  CHECK(ev.wait_for(node_event::stop_requested));
}
