// The embedded client actor (the failover path of `troupe gateway` and `troupe generate
// --head`) follows the leader across a loss of its router, and never follows a head of an
// older term than one it used (term fencing, issue 15): a deposed leader that wakes up with a
// router cannot take its requests back. Three actor systems in one process (a head of term 2,
// a deposed head of term 1, the client), joined by the middleman on loopback ports; the heads
// run real supervisors and routers (without replicas, so requests wait in the router).
#include <catch2/catch.hpp>
#include <thread>

#include "actors/client.h"
#include "actors/cluster/supervisor.h"
#include "actors/serving/router.h"
#include "actors/head_process.h"
#include "actors/shard_steps.h"

namespace {

using namespace troupe;
using namespace std::chrono_literals;

using process = test::actor_process;
using test::head;
using test::start_head;

/// A new router (no replicas: requests wait in it) that head `h` of process `p` serves with.
router_actor serve_with_new_router(process& p, const head& h) {
  auto router = p.own(spawn_router(p.sys, {}, 60s));
  p.self->send(h.sup, router_atom::value, caf::actor_cast<caf::actor>(router));
  return router;
}

/// Requests waiting in `router` (-1 when it does not answer).
int32_t waiting(process& p, const router_actor& router) {
  auto st = p.ask<router_status>(router, status_atom::value);
  return st ? st->waiting : -1;
}

/// Waits up to `timeout` until `router` holds `n` waiting requests.
bool holds(process& p, const router_actor& router, int32_t n, std::chrono::milliseconds timeout) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  while (waiting(p, router) != n)
    if (std::chrono::steady_clock::now() > end)
      return false;
    else
      std::this_thread::sleep_for(20ms);
  return true;
}

}  // namespace

TEST_CASE("a client that used a router of term 2 never follows a woken head of term 1: it refuses that router, "
          "naming both terms, and resumes its request on the leader's next router",
          "[actors][client][term]") {
  process old_head, new_head, client_side;
  const auto a = start_head(old_head, 1);  // deposed: no router while the other leads
  const auto b = start_head(new_head, 2);
  const auto rb = serve_with_new_router(new_head, b);
  client_options o;
  o.port = a.port;  // the deposed head first: every search asks it before the leader
  o.other_heads = {{"127.0.0.1", b.port}};
  o.connect_timeout = 2s;
  o.serve_timeout = 2s;
  o.failover = 20s;
  const auto found = connect_to_leader(client_side.sys, o);
  REQUIRE(found.router);
  CHECK(found.term.value == 2);
  auto client = client_side.own(spawn_client(client_side.sys, found.router, o, found.term));
  generate_request req;
  req.prompt = {1, 2, 3};
  req.params.max_tokens = 4;
  client_side.self->send(client, generate_atom::value, uint64_t{1}, req, caf::actor_cast<caf::actor>(client_side.self));
  REQUIRE(holds(new_head, rb, 1, 5s));

  // The deposed leader wakes up with a router, and the leader's router goes away.
  const auto ra = serve_with_new_router(old_head, a);
  new_head.self->send_exit(rb, caf::exit_reason::kill);
  std::this_thread::sleep_for(1500ms);  // the client follows: asks head 1 (refused) and head 2 (no router yet)
  CHECK(waiting(old_head, ra) == 0);

  // The leader serves again: the request resumes there, never on the deposed head's router.
  const auto rb2 = serve_with_new_router(new_head, b);
  CHECK(holds(new_head, rb2, 1, 10s));
  CHECK(waiting(old_head, ra) == 0);

  // Asked for a term-2 leader, the deposed head alone gives no router; the error says why.
  client_options only_old;
  only_old.port = a.port;
  only_old.connect_timeout = 1s;
  only_old.serve_timeout = 1s;
  try {
    connect_to_leader(client_side.sys, only_old, head_term{2});
    FAIL("the deposed head's router was taken");
  } catch (const std::runtime_error& e) {
    CHECK_THAT(e.what(), Catch::Contains("refused the router of 127.0.0.1:" + std::to_string(a.port) +
                                         ": its term 1 is older than term 2 this client has used"));
  }
}
