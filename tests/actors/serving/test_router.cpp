// The router on its own (fake replicas) and in front of a real CPU replica: requests that
// wait too long expire at fault_tolerance.request_wait whatever waits ahead of them,
// requests over CAF are admitted within server.max_queue_requests / max_queue_tokens
// (a clear refusal beyond), and a client actor that dies has its requests cancelled and
// their KV blocks freed at once.
#include <catch2/catch.hpp>
#include <chrono>
#include <thread>

#include "actors/actor_system_config.h"
#include "actors/client.h"
#include "actors/cluster/placement.h"
#include "actors/serving/replica.h"
#include "actors/serving/router.h"
#include "engine_fixture.h"

using namespace troupe;
using namespace std::chrono_literals;

namespace {

using clock_type = std::chrono::steady_clock;

/// A replica stand-in that reports `ready` and sends what it gets to `observer` as
/// (generate_atom, router id) or (cancel_atom, router id).
caf::behavior fake_replica(caf::event_based_actor* self, bool ready, caf::actor observer) {
  return {
      [=](generate_atom, uint64_t id, const generate_request&, const caf::actor&) {
        if (observer) self->send(observer, generate_atom::value, id);
      },
      [=](cancel_atom, uint64_t id) {
        if (observer) self->send(observer, cancel_atom::value, id);
      },
      [=](subscribe_atom, const caf::actor&) {},  // a cache-aware router asks for prefix summaries
      [=](status_atom) {
        replica_status s;
        s.ready = ready;
        return s;
      },
  };
}

router_status status_of(caf::scoped_actor& self, const router_actor& router) {
  router_status out;
  self->request(router, 5s, status_atom::value)
      .receive([&](router_status& s) { out = s; }, [](caf::error&) { FAIL("the router did not answer status"); });
  return out;
}

/// Polls the router until `done(status)` holds (at most `limit`); returns whether it did.
template <class Pred>
bool wait_router(caf::scoped_actor& self, const router_actor& router, Pred done, std::chrono::milliseconds limit) {
  const auto deadline = clock_type::now() + limit;
  while (!done(status_of(self, router))) {
    if (clock_type::now() > deadline) return false;
    std::this_thread::sleep_for(5ms);
  }
  return true;
}

/// The next token event for `self` (fails the test after 5 s).
token_msg next_event(caf::scoped_actor& self) {
  token_msg out;
  self->receive([&](token_atom, token_msg& m) { out = std::move(m); },
                caf::after(5s) >> [] { FAIL("no token event within 5 s"); });
  return out;
}

/// The router id of the next generate a fake replica got (fails after 5 s).
uint64_t next_generate(caf::scoped_actor& self) {
  uint64_t id = 0;
  self->receive([&](generate_atom, uint64_t i) { id = i; },
                caf::after(5s) >> [] { FAIL("no generate at the fake replica within 5 s"); });
  return id;
}

generate_request small_request(int max_tokens = 10) {
  generate_request r;
  r.prompt = {1, 2, 3};
  r.params.max_tokens = max_tokens;
  return r;
}

}  // namespace

TEST_CASE("an older waiting request expires at request_wait even behind newer and migrated ones",
          "[router][expiry]") {
  system_config cfg(fault_tolerance_section{}, 2);
  caf::actor_system sys{cfg};
  caf::scoped_actor self{sys};
  const auto me = caf::actor_cast<caf::actor>(self);
  auto replica = caf::actor_cast<replica_actor>(sys.spawn(fake_replica, true, caf::actor{}));
  const auto wait = 600ms;
  auto router = spawn_router(sys, {replica}, wait, 3);
  REQUIRE(wait_router(self, router, [](const router_status& s) { return s.ready == 1; }, 5s));

  // Request 1 runs on replica 0, which then recovers stage-locally (no new work there).
  self->send(router, generate_atom::value, uint64_t{1}, small_request(), me);
  REQUIRE(wait_router(self, router, [](const router_status& s) { return s.running == 1; }, 5s));
  self->send(router, hold_atom::value, int32_t{0});
  // Request 2 waits first; 3 and 4 wait 200 ms later; then replica 0 fails, and request 1
  // moves to the front of the queue.
  const auto t2 = clock_type::now();
  self->send(router, generate_atom::value, uint64_t{2}, small_request(), me);
  std::this_thread::sleep_for(200ms);
  self->send(router, generate_atom::value, uint64_t{3}, small_request(), me);
  self->send(router, generate_atom::value, uint64_t{4}, small_request(), me);
  std::this_thread::sleep_for(300ms);
  const auto moved_at = clock_type::now();
  self->send(router, ready_atom::value, int32_t{0}, false);

  std::vector<uint64_t> order;
  std::vector<clock_type::time_point> at;
  for (int i = 0; i < 4; ++i) {
    const auto m = next_event(self);
    at.push_back(clock_type::now());
    order.push_back(m.request);
    CHECK(m.finished);
    CHECK(m.finish_reason == "error");
    CHECK(m.error.find("within 600 ms (fault_tolerance.request_wait)") != std::string::npos);
  }
  // The oldest waiting request expires first, on time, though a migrated and fresher
  // one waited ahead of it; the migrated one gets its full wait from when it moved.
  CHECK(order == std::vector<uint64_t>{2, 3, 4, 1});
  const auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(at[0] - t2);
  CHECK(waited >= wait);
  CHECK(waited < wait + 450ms);  // the old sweep let it wait until request 1 expired (>= 1100 ms)
  CHECK(at[3] - moved_at >= wait);
  const auto s = status_of(self, router);
  CHECK(s.waiting == 0);
  CHECK(s.running == 0);
  self->send_exit(router, caf::exit_reason::user_shutdown);
  self->send_exit(replica, caf::exit_reason::user_shutdown);
}

TEST_CASE("requests over CAF are admitted within server.max_queue_requests and max_queue_tokens",
          "[router][admission]") {
  system_config cfg(fault_tolerance_section{}, 2);
  caf::actor_system sys{cfg};
  caf::scoped_actor self{sys};
  const auto me = caf::actor_cast<caf::actor>(self);
  auto replica = caf::actor_cast<replica_actor>(sys.spawn(fake_replica, true, me));
  auto router = spawn_router(sys, {replica}, 30s, 3, router_limits{2, 100});
  REQUIRE(wait_router(self, router, [](const router_status& s) { return s.ready == 1; }, 5s));

  // Two requests of 13 tokens each fit; a third is refused at once, naming the limits.
  self->send(router, generate_atom::value, uint64_t{1}, small_request(), me);
  const uint64_t first = next_generate(self);
  self->send(router, generate_atom::value, uint64_t{2}, small_request(), me);
  const uint64_t second = next_generate(self);
  self->send(router, generate_atom::value, uint64_t{3}, small_request(), me);
  auto refused = next_event(self);
  CHECK(refused.request == 3);
  CHECK(refused.finished);
  CHECK(refused.finish_reason == "error");
  CHECK(refused.error.find("at capacity") != std::string::npos);
  CHECK(refused.error.find("server.max_queue_requests 2") != std::string::npos);
  CHECK(refused.error.find("server.max_queue_tokens 100") != std::string::npos);
  CHECK(status_of(self, router).running == 2);

  // A finished request gives its place back.
  token_msg done;
  done.request = first;
  done.finished = true;
  done.finish_reason = "length";
  self->send(router, token_atom::value, done);
  CHECK(next_event(self).request == 1);
  self->send(router, generate_atom::value, uint64_t{4}, small_request(), me);
  const uint64_t fourth = next_generate(self);
  CHECK(fourth > second);

  // A cancelled request gives its place back at once (before the replica confirms), as
  // the HTTP gateway's admission does.
  self->send(router, cancel_atom::value, uint64_t{2}, me);
  self->receive([&](cancel_atom, uint64_t id) { CHECK(id == second); },
                caf::after(5s) >> [] { FAIL("the cancel did not reach the replica"); });
  self->send(router, generate_atom::value, uint64_t{5}, small_request(), me);
  CHECK(next_generate(self) > fourth);

  // One request whose prompt + max_tokens exceed max_queue_tokens never fits.
  self->send(router, cancel_atom::value, uint64_t{5}, me);
  self->receive([](cancel_atom, uint64_t) {}, caf::after(5s) >> [] { FAIL("the cancel did not reach the replica"); });
  self->send(router, generate_atom::value, uint64_t{6}, small_request(98), me);
  refused = next_event(self);
  CHECK(refused.request == 6);
  CHECK(refused.finish_reason == "error");
  CHECK(refused.error.find("101 tokens") != std::string::npos);
  CHECK(refused.error.find("server.max_queue_tokens 100") != std::string::npos);
  self->send_exit(router, caf::exit_reason::user_shutdown);
  self->send_exit(replica, caf::exit_reason::user_shutdown);
}

TEST_CASE("a client actor that dies mid-generation has its requests cancelled and their KV blocks freed",
          "[router][client-down]") {
  cluster_config c;
  c.model.path = test::default_model();
  c.scheduler.kv_tokens = 2048;
  c.scheduler.max_seqs = 4;
  c.scheduler.max_batch_tokens = 64;
  metrics::registry registry;  // outlives the actor system (the replica reports to it)
  auto metrics = std::make_shared<troupe_metrics>(registry);
  system_config cfg{c.fault_tolerance, 2};
  caf::actor_system sys{cfg};
  caf::scoped_actor self{sys};
  auto ready = std::make_shared<std::atomic<int>>(0);
  replica_options o;
  o.config = c;
  o.meta = test::shared_default_model();
  o.metrics = metrics;
  o.shards.push_back(
      spawn_shard(sys, make_shard_spec(c, test::shared_default_model()->config(), shard_slot{0, 0, 0, "n", "cpu"})));
  o.on_state = [ready](int, bool ok, const std::string&) { *ready = ok ? 1 : -1; };
  auto shard = o.shards.front();
  auto replica = spawn_replica(sys, o);
  for (int i = 0; i < 1200 && *ready == 0; ++i) std::this_thread::sleep_for(50ms);
  REQUIRE(*ready == 1);
  auto router = spawn_router(sys, {replica}, 30s, 3);
  REQUIRE(wait_router(self, router, [](const router_status& s) { return s.ready == 1; }, 5s));
  const auto replica_requests = [&] {
    int32_t n = -1;
    self->request(replica, 5s, status_atom::value)
        .receive([&](replica_status& s) { n = s.requests; }, [](caf::error&) { FAIL("the replica did not answer"); });
    return n;
  };
  const auto kv_usage = [&] { return metrics->kv_cache_usage.with({"0"}).value(); };

  // A real client actor relays a long request (1500 tokens: most of a minute here).
  auto client = spawn_client(sys, caf::actor_cast<caf::actor>(router));
  const auto prompt = test::shared_default_model()->tokenizer().encode("Tell me a long story about a dragon.", true, true);
  self->send(client, generate_atom::value, uint64_t{1}, generate_request{prompt, test::greedy(1500)},
             caf::actor_cast<caf::actor>(self));
  for (int i = 0; i < 3; ++i) {
    const auto m = next_event(self);
    REQUIRE_FALSE(m.finished);
  }
  CHECK(replica_requests() == 1);
  CHECK(kv_usage() > 0.0);

  // The client dies: the router cancels its request, the replica frees its blocks.
  const auto killed_at = clock_type::now();
  self->send_exit(client, caf::exit_reason::kill);
  bool freed = false;
  while (!freed && clock_type::now() - killed_at < 3s) {
    freed = replica_requests() == 0 && kv_usage() == 0.0;
    if (!freed) std::this_thread::sleep_for(10ms);
  }
  const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(clock_type::now() - killed_at);
  CHECK(freed);
  CHECK(replica_requests() == 0);
  CHECK(kv_usage() == 0.0);
  const auto s = status_of(self, router);
  CHECK(s.running == 0);
  CHECK(s.waiting == 0);
  if (freed) WARN("the dead client's request was cancelled and its KV blocks freed " << took.count() << " ms after the kill");
  self->send_exit(router, caf::exit_reason::user_shutdown);
  self->send_exit(replica, caf::exit_reason::user_shutdown);
  self->send_exit(shard, caf::exit_reason::user_shutdown);
}
