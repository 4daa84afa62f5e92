// Authorization of control messages: a peer that holds the cluster's certificate but is not
// the head cannot stop, drain, unregister or re-route the head, nor stop, attach, fence or
// spawn on a node, nor fail, hold or feed tokens to the router; and a node loads only the
// model its cluster file names.
#include <thread>

#include "security_cluster.h"

namespace {

using namespace troupe;
using namespace troupe::test;
using namespace troupe::test::security;

/// The rendered error of `x` ("" when it is a value).
template <class T>
std::string error_of(peer& p, const caf::expected<T>& x) {
  return x ? std::string() : p.sys.render(x.error());
}

}  // namespace

TEST_CASE("a certified peer that is not the head can neither stop, drain, unregister nor re-route the head",
          "[actors][security][slow]") {
  tls_cluster cluster("control-head", {"the-admin-key"});
  peer intruder(cluster.member("client"));
  auto sup = connect_link<supervisor_actor>(intruder.sys, "127.0.0.1", cluster.head_port());
  REQUIRE(sup);
  const auto router = intruder.ask<caf::actor>(*sup, router_atom::value);
  REQUIRE(router);

  CHECK_THAT(error_of(intruder, intruder.ask<caf::ok_atom>(*sup, stop_atom::value)),
             Catch::Contains("not allowed: only the head's own actors may stop the cluster"));
  CHECK_THAT(error_of(intruder, intruder.ask<caf::ok_atom>(*sup, unregister_atom::value, std::string("n0"))),
             Catch::Contains("not allowed") && Catch::Contains("unregister node n0"));
  caf::scoped_actor self{intruder.sys};
  bool listed = false;
  std::string agents_error;
  self->request(*sup, 10s, agents_atom::value)
      .receive([&](std::vector<std::string>&, std::vector<caf::actor>&) { listed = true; },
               [&](caf::error& e) { agents_error = intruder.sys.render(e); });
  CHECK_FALSE(listed);
  CHECK_THAT(agents_error, Catch::Contains("not allowed"));
  const auto no_key = intruder.ask<drain_reply>(*sup, drain_atom::value, std::string("n0"), false, std::string());
  REQUIRE(no_key);
  CHECK(no_key->code == 403);
  CHECK_THAT(no_key->error, Catch::Contains("needs an admin key"));
  const auto wrong_key =
      intruder.ask<drain_reply>(*sup, drain_atom::value, std::string("n0"), false, std::string("guess"));
  REQUIRE(wrong_key);
  CHECK(wrong_key->code == 403);
  // Replacing the router that clients resolve, and starting the nodes again, are ignored.
  auto decoy = intruder.sys.spawn([]() -> caf::behavior { return {[](int) {}}; });
  exit_at_scope_end cleanup{{decoy}};
  self->send(*sup, router_atom::value, decoy);
  self->send(*sup, start_atom::value);
  std::this_thread::sleep_for(300ms);
  const auto after = intruder.ask<caf::actor>(*sup, router_atom::value);
  REQUIRE(after);
  CHECK(*after == *router);
  CHECK(*after != decoy);

  const auto status = intruder.ask<cluster_status>(*sup, status_atom::value);
  REQUIRE(status);
  CHECK(state_of(*status, "n0") == node_state::registered);
  CHECK_FALSE(status->stopping);
  CHECK(cluster.head_alive());
  const auto log = read_text(cluster.log());
  CHECK(log.find("refused a request to stop the cluster") != std::string::npos);
  CHECK(log.find("refused a request to replace the router") != std::string::npos);
  CHECK(log.find("drain: refused a drain of node n0") != std::string::npos);
}

TEST_CASE("a certified peer that is not the head can neither stop, attach, fence nor spawn on a node",
          "[actors][security][slow]") {
  tls_cluster cluster("control-node");
  peer intruder(cluster.member("client"));
  auto sup = connect_link<supervisor_actor>(intruder.sys, "127.0.0.1", cluster.head_port());
  REQUIRE(sup);
  auto agent = connect_link<node_agent_actor>(intruder.sys, "127.0.0.1", cluster.node_port());
  REQUIRE(agent);

  CHECK_THAT(error_of(intruder, intruder.ask<caf::ok_atom>(*agent, stop_atom::value, head_term{})),
             Catch::Contains("not allowed") && Catch::Contains("stop this node"));
  shard_spec spec;
  spec.model_path = cluster.config().model.path;  // even the cluster's own model
  CHECK_THAT(error_of(intruder, intruder.ask<shard_actor>(*agent, spawn_shard_atom::value, head_term{}, spec)),
             Catch::Contains("not allowed") && Catch::Contains("spawn a shard"));
  CHECK_THAT(error_of(intruder, intruder.ask<caf::ok_atom>(*agent, unregister_atom::value)),
             Catch::Contains("not allowed"));
  // A head of the intruder's own, which the node is told to attach to (the agent takes attach
  // only from its own process; a supervisor handle does not even cross the wire, its type is
  // not registered for it), and a forged fence.
  supervisor_options so;
  so.config = cluster.config();
  so.launch_local_nodes = false;
  auto fake_head = spawn_supervisor(intruder.sys, so);
  exit_at_scope_end cleanup{{caf::actor_cast<caf::actor>(fake_head)}};
  caf::scoped_actor self{intruder.sys};
  self->send(*agent, attach_atom::value, fake_head);
  self->send(*agent, fence_atom::value, head_term{}, uint64_t{1} << 40, std::string("forged"));
  std::this_thread::sleep_for(1s);

  const auto fake = intruder.ask<cluster_status>(fake_head, status_atom::value);
  REQUIRE(fake);
  CHECK(state_of(*fake, "n0") == node_state::starting);  // never registered there
  const auto real = intruder.ask<cluster_status>(*sup, status_atom::value);
  REQUIRE(real);
  CHECK(state_of(*real, "n0") == node_state::registered);
  for (const auto& n : real->nodes) CHECK(n.restarts == 0);
  const auto log = read_text(cluster.log());
  CHECK(log.find("refused a request to stop this node") != std::string::npos);
  CHECK(log.find("refused a request to spawn a shard") != std::string::npos);
  CHECK(log.find("refused a request to fence this node") != std::string::npos);
  CHECK(log.find("fenced") == std::string::npos);
}

TEST_CASE("a node agent spawns shards only of the model its cluster file names", "[actors][security]") {
  system_config cfg{fault_tolerance_section{}, 2};
  caf::actor_system sys{cfg};
  node_agent_options ao;
  ao.info.name = "n0";
  ao.model_path = "/models/served.gguf";
  auto agent = spawn_node_agent(sys, ao);
  caf::scoped_actor self{sys};
  shard_spec spec;
  spec.model_path = "/models/other.gguf";
  std::string error;
  self->request(agent, 10s, spawn_shard_atom::value, head_term{}, spec)
      .receive(
          [&](shard_actor& s) {
            self->send_exit(s, caf::exit_reason::user_shutdown);
            FAIL("the agent spawned a shard of /models/other.gguf");
          },
          [&](caf::error& e) { error = sys.render(e); });
  CHECK_THAT(error, Catch::Contains("only the model of its cluster file ('/models/served.gguf')") &&
                        Catch::Contains("not '/models/other.gguf'"));
  self->send_exit(agent, caf::exit_reason::user_shutdown);
}

TEST_CASE("a certified peer that is not the head can neither fail, hold nor feed tokens through the router",
          "[actors][security][slow]") {
  tls_cluster cluster("control-router");
  peer intruder(cluster.member("client"));
  auto sup = connect_link<supervisor_actor>(intruder.sys, "127.0.0.1", cluster.head_port());
  REQUIRE(sup);
  const auto router = intruder.ask<caf::actor>(*sup, router_atom::value);
  REQUIRE(router);
  auto ready = [&] {
    const auto s = intruder.ask<router_status>(*router, status_atom::value);
    return s ? s->ready : -1;
  };
  for (int i = 0; i < 600 && ready() != 1; ++i) std::this_thread::sleep_for(100ms);
  REQUIRE(ready() == 1);

  caf::scoped_actor self{intruder.sys};
  self->send(*router, ready_atom::value, int32_t{0}, false);  // would mark replica 0 failed
  self->send(*router, hold_atom::value, int32_t{0});          // would hold its requests
  token_msg forged;
  forged.request = 1;
  forged.token = 42;
  forged.text = "injected";
  self->send(*router, token_atom::value, forged);
  prefix_summary claims;
  claims.replica = 0;
  claims.reset = true;
  self->send(*router, prefixes_atom::value, claims);
  std::this_thread::sleep_for(300ms);

  CHECK(ready() == 1);
  const auto log = read_text(cluster.log());
  for (const char* what : {"a replica state", "a replica hold", "a token event", "a prefix-cache summary"}) {
    CAPTURE(what);
    CHECK(log.find(std::string("router: refused ") + what) != std::string::npos);
  }
  CHECK(cluster.head_alive());
}
