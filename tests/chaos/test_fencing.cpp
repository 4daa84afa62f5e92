// Fencing (no split brain): a node agent that the head no longer counts as its node's
// registered incarnation is told to stop its shards and register afresh, and a fence
// meant for an earlier registration is ignored. One actor system, no processes: the
// supervisor declares the node lost by its heartbeat deadline while the agent, still
// connected, keeps heartbeating (what a partition that heals before the connection
// times out looks like).
#include <catch2/catch.hpp>
#include <chrono>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "actors/actor_system_config.h"
#include "actors/messages.h"
#include "actors/cluster/node_agent.h"
#include "actors/cluster/supervisor.h"

using namespace troupe;
using namespace std::chrono_literals;

namespace {

/// The events a node agent reported, in order (thread-safe).
class event_log {
 public:
  void push(node_event e, const std::string& detail) {
    std::lock_guard<std::mutex> lock(mutex_);
    events_.emplace_back(e, detail);
  }
  /// Waits up to `timeout` until `n` events arrived; the events so far.
  std::vector<std::pair<node_event, std::string>> wait_for(size_t n, std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      {
        std::lock_guard<std::mutex> lock(mutex_);
        if (events_.size() >= n || std::chrono::steady_clock::now() > deadline) return events_;
      }
      std::this_thread::sleep_for(10ms);
    }
  }

 private:
  std::mutex mutex_;
  std::vector<std::pair<node_event, std::string>> events_;
};

/// Node `n0`'s state in the supervisor's table.
node_state state_of(caf::actor_system& sys, const supervisor_actor& sup) {
  caf::scoped_actor self{sys};
  node_state s = node_state::stopped;
  self->request(sup, 2s, status_atom::value)
      .receive([&](const cluster_status& cs) { s = find_node(cs, "n0")->state; },
               [](caf::error&) { FAIL("the supervisor did not answer status"); });
  return s;
}

}  // namespace

TEST_CASE("an agent the head declared lost while still connected is fenced and registers afresh, "
          "and a stale fence is ignored",
          "[chaos][fencing]") {
  auto config = default_cluster_config();
  config.nodes.front().name = "n0";
  config.fault_tolerance.heartbeat_timeout = 300ms;
  fault_tolerance_section agent_ft = config.fault_tolerance;
  agent_ft.heartbeat_interval = 1000ms;  // beats far apart: the head's 300 ms deadline passes between them
  system_config cfg(config.fault_tolerance, 2);
  caf::actor_system sys{cfg};
  supervisor_options so;
  so.config = config;
  so.launch_local_nodes = false;
  auto sup = spawn_supervisor(sys, so);
  event_log events;
  node_agent_options ao;
  ao.info = {"n0", 4242, "127.0.0.1", 0, {"cpu"}};
  ao.fault_tolerance = agent_ft;
  ao.on_event = [&events](node_event e, const std::string& d) { events.push(e, d); };
  auto agent = spawn_node_agent(sys, ao);
  caf::scoped_actor{sys}->send(sup, start_atom::value);  // from the head's own process

  caf::scoped_actor{sys}->send(agent, attach_atom::value, sup);
  auto seen = events.wait_for(1, 2s);
  REQUIRE(seen.size() == 1);
  CHECK(seen[0].first == node_event::registered);
  std::this_thread::sleep_for(600ms);  // past the deadline, before the next beat
  CHECK(state_of(sys, sup) == node_state::lost);

  seen = events.wait_for(2, 3s);  // the next beat reaches a head that declared the node lost
  REQUIRE(seen.size() == 2);
  CHECK(seen[1].first == node_event::head_lost);
  CHECK_THAT(seen[1].second, Catch::Contains("fenced by the head") && Catch::Contains("declared lost"));

  caf::scoped_actor{sys}->send(agent, attach_atom::value, sup);  // what the node's main does on head_lost
  seen = events.wait_for(3, 2s);
  REQUIRE(seen.size() == 3);
  CHECK(seen[2].first == node_event::registered);
  CHECK(state_of(sys, sup) == node_state::registered);

  // A fence answering a heartbeat of the earlier registration (sequence 1) changes nothing.
  caf::scoped_actor{sys}->send(agent, fence_atom::value, head_term{}, uint64_t{1}, std::string("stale"));
  CHECK(events.wait_for(4, 300ms).size() == 3);

  caf::anon_send_exit(agent, caf::exit_reason::user_shutdown);
  caf::anon_send_exit(sup, caf::exit_reason::user_shutdown);
}
