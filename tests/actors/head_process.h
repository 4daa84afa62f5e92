#pragma once
// A head process as the actor-level tests of leadership, adoption and clients need one: a
// supervisor of node n0 (launching nothing) with a lease term, published on a loopback port,
// and a node agent as that head reaches it over a link.
#include <catch2/catch.hpp>
#include <cstdint>

#include "actors/cluster/node_agent.h"
#include "actors/cluster/supervisor.h"
#include "actors/shard_steps.h"

namespace troupe::test {

/// A published supervisor and its port.
struct head {
  supervisor_actor sup;
  uint16_t port = 0;
};

/// Process `p`'s supervisor of node n0 with lease term `term` (0: a single head), published
/// on a loopback port.
inline head start_head(actor_process& p, uint64_t term = 0) {
  auto config = default_cluster_config();
  config.nodes.front().name = "n0";
  supervisor_options so;
  so.config = config;
  so.launch_local_nodes = false;
  so.term = term;
  head h{p.own(spawn_supervisor(p.sys, so)), 0};
  auto port = p.sys.middleman().publish(h.sup, 0, "127.0.0.1");
  REQUIRE(port);
  h.port = *port;
  return h;
}

/// The agent as `hp` reaches it over a loopback link (the head's messages come from its node).
inline node_agent_actor agent_from(actor_process& node, const node_agent_actor& agent, actor_process& hp) {
  auto port = node.sys.middleman().publish(agent, 0, "127.0.0.1");
  REQUIRE(port);
  auto remote = hp.sys.middleman().remote_actor<node_agent_actor>("127.0.0.1", *port);
  REQUIRE(remote);
  return *remote;
}

}  // namespace troupe::test
