// The state replica (actors/leadership/state_replica.h) across the middleman: a leader in
// one actor system sends its state over a loopback socket to a standby's replica in
// another; the replica stores it, refuses older terms, replays and damaged bytes, and a
// replica started again on the same directory (a cold restart) finds what it held.
#include <catch2/catch.hpp>
#include <tuple>

#include "actors/actor_system_config.h"
#include "actors/leadership/state_replica.h"
#include "test_support.h"
#include "tests/actors/leadership/sample_state.h"

namespace {

using namespace troupe;
using namespace std::chrono_literals;
using Catch::Contains;

/// One head's actor system, with troupe's configuration.
struct head_process {
  system_config cfg{fault_tolerance_section{}, 2};
  caf::actor_system sys{cfg};
  caf::scoped_actor self{sys};

  /// The sequence the replica answers to the leader's state, or the rendered error.
  std::pair<uint64_t, std::string> replicate(const state_replica_actor& r, uint64_t term, uint64_t sequence,
                                             const std::string& bytes) {
    std::pair<uint64_t, std::string> out{0, "no answer"};
    self->request(r, 5s, replicate_atom::value, term, sequence, bytes)
        .receive([&](uint64_t held) { out = {held, ""}; }, [&](caf::error& e) { out = {0, sys.render(e)}; });
    return out;
  }

  /// What the replica holds: term, sequence, bytes.
  std::tuple<uint64_t, uint64_t, std::string> latest(const state_replica_actor& r) {
    std::tuple<uint64_t, uint64_t, std::string> out{0, 0, "no answer"};
    self->request(r, 5s, latest_atom::value)
        .receive([&](uint64_t term, uint64_t sequence, std::string& bytes) { out = {term, sequence, bytes}; },
                 [&](caf::error& e) { std::get<2>(out) = sys.render(e); });
    return out;
  }

  /// Stops `r` and waits until it is gone.
  void stop(const state_replica_actor& r) {
    self->send_exit(r, caf::exit_reason::user_shutdown);
    self->wait_for(r);
  }
};

/// A standby's replica published on a loopback port, and the leader's handle to it.
struct standby_link {
  state_replica_actor local;
  state_replica_actor remote;
  uint16_t port = 0;
};

standby_link link_standby(head_process& standby, head_process& leader, const head_state_store_options& store) {
  standby_link l;
  l.local = spawn_state_replica(standby.sys, {store, "h1"});
  auto port = standby.sys.middleman().publish(l.local, 0, "127.0.0.1");
  REQUIRE(port);
  l.port = *port;
  auto remote = leader.sys.middleman().remote_actor<state_replica_actor>("127.0.0.1", l.port);
  REQUIRE(remote);
  REQUIRE(remote->node() != leader.sys.node());  // a proxy: every message crosses the socket
  l.remote = *remote;
  return l;
}

void unlink_standby(head_process& standby, standby_link& l) {
  standby.sys.middleman().unpublish(l.local, l.port);
  standby.stop(l.local);
}

}  // namespace

TEST_CASE("a state replica over the middleman stores the leader's state and refuses older terms, replays and "
          "damaged bytes",
          "[actors][leadership]") {
  const head_state_store_options store{test::scratch_dir("leadership/replica"), "head_state.bin"};
  head_process standby, leader;
  auto l = link_standby(standby, leader, store);
  CHECK(leader.latest(l.remote) == std::make_tuple(uint64_t{0}, uint64_t{0}, std::string{}));
  const auto s41 = test::sample_state(3, 41);
  CHECK(leader.replicate(l.remote, 3, 41, encode(s41)) == std::make_pair(uint64_t{41}, std::string{}));
  auto [term, sequence, bytes] = leader.latest(l.remote);
  CHECK(term == 3);
  CHECK(sequence == 41);
  CHECK(decode(bytes, "latest") == s41);
  CHECK(head_state_store(store).load()->state == s41);  // on disk before the answer

  const auto refused = [&](uint64_t t, uint64_t seq, const std::string& b) {
    auto [held, err] = leader.replicate(l.remote, t, seq, b);
    CHECK(held == 0);
    return err;
  };
  CHECK_THAT(refused(3, 41, encode(s41)),
             Contains("state replica h1: sequence 41 in term 3 is not newer than sequence 41 it holds"));
  CHECK_THAT(refused(3, 40, encode(test::sample_state(3, 40))),
             Contains("sequence 40 in term 3 is not newer than sequence 41 it holds"));
  CHECK_THAT(refused(2, 50, encode(test::sample_state(2, 50))),
             Contains("state replica h1: term 2 is older than term 3 of the state it holds (term 3 sequence 41)"));
  CHECK_THAT(refused(3, 42, "junk"),
             Contains("the leader's state of term 3 sequence 42: not a troupe head state (bad magic"));
  CHECK_THAT(refused(3, 42, encode(test::sample_state(3, 43))),
             Contains("the leader's message says term 3 sequence 42 but its state holds term 3 sequence 43"));
  CHECK(std::get<1>(leader.latest(l.remote)) == 41);  // none of those changed what it holds
  CHECK(head_state_store(store).load()->state == s41);

  // A new leader (a newer term) continues the sequence.
  auto s42 = test::sample_state(4, 42);
  s42.members[2].state = node_state::registered;
  CHECK(leader.replicate(l.remote, 4, 42, encode(s42)) == std::make_pair(uint64_t{42}, std::string{}));
  CHECK(std::get<0>(leader.latest(l.remote)) == 4);
  CHECK(head_state_store(store).load()->state == s42);
  CHECK_THAT(refused(3, 43, encode(test::sample_state(3, 43))), Contains("term 3 is older than term 4"));
  unlink_standby(standby, l);
}

TEST_CASE("a state replica started again on the same directory holds what the leader sent (cold restart)",
          "[actors][leadership]") {
  const head_state_store_options store{test::scratch_dir("leadership/replica_restart"), "head_state.bin"};
  const auto sent = test::sample_state(5, 7);
  {
    head_process standby, leader;
    auto l = link_standby(standby, leader, store);
    REQUIRE(leader.replicate(l.remote, 5, 7, encode(sent)).first == 7);
    unlink_standby(standby, l);
  }  // both actor systems gone: every head stopped
  head_process standby, leader;
  auto l = link_standby(standby, leader, store);
  auto [term, sequence, bytes] = leader.latest(l.remote);
  CHECK(term == 5);
  CHECK(sequence == 7);
  CHECK(decode(bytes, "latest") == sent);
  CHECK_THAT(leader.replicate(l.remote, 5, 7, encode(sent)).second,
             Contains("sequence 7 in term 5 is not newer than sequence 7 it holds"));
  CHECK(leader.replicate(l.remote, 5, 8, encode(test::sample_state(5, 8))).first == 8);
  unlink_standby(standby, l);
}
