// The replica actor's stage-local recovery, in one process: a pipeline-3 replica of shard
// actors serves streaming requests, one stage's shard is killed, a new one is handed over
// with the survivors (rebuild_atom), and the requests finish with the tokens of a run
// without failure while the surviving stages' KV cache is left untouched.
#include <atomic>
#include <catch2/catch.hpp>
#include <map>

#include "actors/actor_system_config.h"
#include "actors/cluster/placement.h"
#include "actors/serving/replica.h"
#include "engine_fixture.h"

namespace {

using namespace troupe;
using namespace std::chrono_literals;

cluster_config pipeline3_config(bool stage_recovery) {
  cluster_config c;
  c.model.path = test::default_model();
  c.parallel.pipeline = 3;
  c.scheduler.kv_tokens = 2048;
  c.scheduler.max_seqs = 8;
  c.scheduler.max_batch_tokens = 64;
  c.fault_tolerance.stage_recovery = stage_recovery;
  return c;
}

shard_actor spawn_stage(caf::actor_system& sys, const cluster_config& c, int stage) {
  return spawn_shard(sys, make_shard_spec(c, test::shared_default_model()->config(), shard_slot{0, stage, 0, "n", "cpu"}));
}

std::vector<std::vector<int32_t>> prompts() {
  const auto& tk = test::shared_default_model()->tokenizer();
  std::vector<std::vector<int32_t>> p;
  for (const char* text : {"Tell me a story about a lighthouse keeper and a storm.", "List three uses of copper.",
                           "Why is the sky blue?", "Write a haiku about autumn leaves."})
    p.push_back(tk.encode(text, true, true));
  return p;
}

/// What one run saw.
struct run_result {
  std::vector<std::vector<int32_t>> tokens;
  replica_status status;
  int recovering = 0;   ///< on_recovering calls
  int failed = 0;       ///< on_state(false) calls
  std::chrono::milliseconds resume{0};  ///< rebuild handed over -> a token of every request
};

/// Serves the prompts on a pipeline-3 replica, kills stage `victim`'s shard once `after`
/// tokens arrived, hands a new one over with the survivors and collects every token.
run_result serve_with_kill(bool stage_recovery, int victim, size_t after) {
  const auto c = pipeline3_config(stage_recovery);
  system_config cfg{c.fault_tolerance};
  caf::actor_system sys{cfg};
  caf::scoped_actor self{sys};
  auto recovering = std::make_shared<std::atomic<int>>(0), failed = std::make_shared<std::atomic<int>>(0);
  auto ready = std::make_shared<std::atomic<int>>(0);
  replica_options o;
  o.config = c;
  o.meta = test::shared_default_model();
  for (int s = 0; s < 3; ++s) o.shards.push_back(spawn_stage(sys, c, s));
  auto shards = o.shards;
  o.on_state = [ready, failed](int, bool ok, const std::string&) { ++*(ok ? ready : failed); };
  o.on_recovering = [recovering](int) { ++*recovering; };
  auto replica = spawn_replica(sys, o);
  const auto p = prompts();
  for (size_t i = 0; i < p.size(); ++i)
    self->send(replica, generate_atom::value, uint64_t{i}, generate_request{p[i], test::greedy(24)},
               caf::actor_cast<caf::actor>(self));
  run_result out;
  out.tokens.resize(p.size());
  size_t received = 0, finished = 0;
  bool killed = false;
  std::chrono::steady_clock::time_point handed_over;
  std::set<uint64_t> since_handover;
  while (finished < p.size()) {
    self->receive(
        [&](token_atom, token_msg& m) {
          REQUIRE(m.error.empty());
          if (m.token >= 0) out.tokens[m.request].push_back(m.token);
          ++received;
          if (m.finished) ++finished;
          if (killed && since_handover.insert(m.request).second && since_handover.size() == p.size())
            out.resume = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - handed_over);
        },
        caf::after(60s) >> [&] { FAIL("no token for 60 s"); });
    if (!killed && received >= after) {
      killed = true;
      self->send_exit(shards[static_cast<size_t>(victim)], caf::exit_reason::kill);
      for (int i = 0; i < 500 && *recovering + *failed == 0; ++i) std::this_thread::sleep_for(10ms);
      shards[static_cast<size_t>(victim)] = spawn_stage(sys, c, victim);
      self->request(shards[static_cast<size_t>(victim)], 60s, addresses_atom::value).receive([](shard_addresses&) {},
                                                                                             [](caf::error&) {});
      since_handover.clear();
      handed_over = std::chrono::steady_clock::now();
      self->send(replica, rebuild_atom::value, shards);
    }
  }
  self->request(replica, 10s, status_atom::value).receive([&](replica_status& s) { out.status = s; },
                                                          [](caf::error& e) { FAIL("status: " << to_string(e)); });
  out.recovering = *recovering;
  out.failed = *failed;
  for (auto& s : shards) self->send_exit(s, caf::exit_reason::user_shutdown);
  self->send_exit(replica, caf::exit_reason::user_shutdown);
  return out;
}

}  // namespace

TEST_CASE("a replica rebuilds only the killed stage's KV cache and every request ends with the fault-free tokens",
          "[actors][stage-recovery][slow]") {
  const auto p = prompts();
  const auto expected = test::make_engine()->generate(p, test::greedy(24));
  const auto got = serve_with_kill(true, 1, 20);
  CHECK(got.recovering == 1);
  CHECK(got.failed == 0);
  CHECK(got.status.stage_recoveries == 1);
  CHECK(got.status.replayed_tokens > 0);
  CHECK(got.status.kept_kv_rows == 2 * got.status.replayed_tokens);
  CHECK(got.status.survivor_kv_writes == 0);
  for (size_t i = 0; i < p.size(); ++i) CHECK(got.tokens[i] == expected[i].tokens);
  WARN("stage-local recovery: " << got.status.replayed_tokens << " tokens replayed into stage 1 in "
                                << got.status.last_replay_us / 1000 << " ms; every request had a new token "
                                << got.resume.count() << " ms after the hand-over");
}

TEST_CASE("without stage_recovery the same kill recomputes every stage and still ends with the fault-free tokens",
          "[actors][stage-recovery][slow]") {
  const auto p = prompts();
  const auto expected = test::make_engine()->generate(p, test::greedy(24));
  const auto got = serve_with_kill(false, 1, 20);
  CHECK(got.recovering == 0);
  CHECK(got.failed >= 1);
  CHECK(got.status.stage_recoveries == 0);
  for (size_t i = 0; i < p.size(); ++i) CHECK(got.tokens[i] == expected[i].tokens);
  WARN("full re-prefill: every request had a new token " << got.resume.count() << " ms after the hand-over");
}
