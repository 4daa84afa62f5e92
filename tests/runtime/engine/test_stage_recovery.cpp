// Stage-local recovery on the data path: a restarted pipeline stage rebuilds only its own
// KV cache by replay steps (fed by the inputs the stage before kept), the other stages'
// KV rows stay bit for bit, and decoding goes on to the tokens of a run without failure.
#include <catch2/catch.hpp>

#include "engine_fixture.h"
#include "tools/bench/replica_harness.h"

using namespace troupe;
using namespace troupe::test;

namespace {

engine_config scheduling_config() {
  engine_config cfg;
  cfg.kv_tokens = 1024;
  cfg.max_seqs = 4;
  cfg.max_batch_tokens = 48;  // prompts need several chunks, and so does the replay
  cfg.local_execution = false;
  return cfg;
}

context_params context_for(const engine_config& cfg) {
  context_params ctx = shard_context_for(cfg);
  ctx.keep_stage_inputs = true;
  return ctx;
}

std::vector<std::vector<int32_t>> recovery_prompts() {
  const auto& tk = shared_default_model()->tokenizer();
  return {tk.encode("Tell me a story about a lighthouse keeper and a storm.", true, true),
          tk.encode("List three uses of copper.", true, true),
          tk.encode("Why is the sky blue? Explain it to a child in a few sentences.", true, true)};
}

/// Runs the prompts on `rep`, restarts `victim` after `before` steps, and returns the tokens.
std::vector<std::vector<int32_t>> run_with_restart(bench::local_replica& rep, int victim, int before) {
  engine e(shared_default_model(), scheduling_config());
  const auto prompts = recovery_prompts();
  std::map<seq_id, size_t> index;
  for (size_t i = 0; i < prompts.size(); ++i) index[e.submit(prompts[i], greedy(24))] = i;
  std::vector<token_event> events;
  for (int i = 0; i < before; ++i) REQUIRE(rep.step(e, &events));

  int64_t tokens = 0;
  auto replay = e.replay_steps(tokens);
  REQUIRE(tokens > 0);
  const auto slots = bench::slots_of(replay);
  std::map<int, uint64_t> before_sum;
  std::map<int, int64_t> before_rows;
  for (int s = 0; s < rep.pp(); ++s)
    if (s != victim) {
      before_sum[s] = rep.shard(s, 0).context()->kv_checksum(slots);
      before_rows[s] = rep.shard(s, 0).context()->kv_rows_written();
    }

  const auto relinked = rep.restart_stage(victim);
  for (auto& r : replay) {
    r.replay_stage = victim;
    const auto outs = rep.run(r);
    for (const auto& o : outs) CHECK(o.samples.empty());
  }
  CHECK(rep.shard(victim, 0).context()->kv_rows_written() == tokens);
  for (int s = 0; s < rep.pp(); ++s)
    if (s != victim) {
      INFO("surviving stage " << s);
      CHECK(rep.shard(s, 0).context()->kv_checksum(slots) == before_sum[s]);
      CHECK(rep.shard(s, 0).context()->kv_rows_written() == before_rows[s]);
      CHECK(relinked[static_cast<size_t>(s * rep.tp())] == before_rows[s]);
    }

  while (rep.step(e, &events)) {
  }
  std::vector<std::vector<int32_t>> out(prompts.size());
  for (const auto& ev : events)
    if (ev.token >= 0) out[index.at(ev.id)].push_back(ev.token);
  return out;
}

}  // namespace

TEST_CASE("a restarted pipeline stage replays its KV cache and the greedy tokens match a run without failure",
          "[stage-recovery][slow]") {
  const auto prompts = recovery_prompts();
  const auto expected = make_engine()->generate(prompts, greedy(24));
  for (int victim : {0, 1, 2}) {
    INFO("restarted stage " << victim << " of 3");
    bench::local_replica rep(default_model(), 1, 3, context_for(scheduling_config()));
    rep.connect();
    const auto got = run_with_restart(rep, victim, 6);
    for (size_t i = 0; i < prompts.size(); ++i) CHECK(got[i] == expected[i].tokens);
  }
}

TEST_CASE("a tensor-parallel stage restarts as a whole and its tensor group replays together",
          "[.][stage-recovery][slow]") {
  const auto prompts = recovery_prompts();
  const auto expected = make_engine()->generate(prompts, greedy(24));
  bench::local_replica rep(default_model(), 2, 2, context_for(scheduling_config()));
  rep.connect();
  const auto got = run_with_restart(rep, 1, 5);
  for (size_t i = 0; i < prompts.size(); ++i) CHECK(got[i] == expected[i].tokens);
}

TEST_CASE("a replay needs the inputs the stage before kept", "[stage-recovery][slow]") {
  auto ctx = context_for(scheduling_config());
  ctx.keep_stage_inputs = false;
  bench::local_replica rep(default_model(), 1, 2, ctx);
  rep.connect();
  engine e(shared_default_model(), scheduling_config());
  e.submit(recovery_prompts()[1], greedy(4));
  REQUIRE(rep.step(e));
  int64_t tokens = 0;
  auto replay = e.replay_steps(tokens);
  REQUIRE_FALSE(replay.empty());
  replay.front().replay_stage = 1;
  REQUIRE_THROWS_WITH(rep.shard(0, 0).run(replay.front()), Catch::Matchers::Contains("keep_stage_inputs"));
}

TEST_CASE("a scheduler rollback keeps a sequence's blocks and reschedules the same tokens", "[stage-recovery]") {
  engine_config cfg = scheduling_config();
  engine e(shared_default_model(), cfg);
  e.submit(recovery_prompts()[0], greedy(4));
  auto first = e.begin_step();
  REQUIRE(first);
  const auto used = e.blocks().n_used();
  e.hold_step(*first);
  auto again = e.begin_step();
  REQUIRE(again);
  CHECK(again->request.batch.tokens == first->request.batch.tokens);
  CHECK(again->request.batch.slots == first->request.batch.slots);
  CHECK(e.blocks().n_used() == used);
}
