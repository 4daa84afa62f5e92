// A replica's data path without actors: an engine that only schedules (local_execution
// off) drives shard workers on threads, tensor 2 x pipeline 2, over real UCX links.
#include <catch2/catch.hpp>
#include <future>
#include <thread>

#include "parallel/communicator.h"

#include "engine_fixture.h"
#include "runtime/engine/shard_worker.h"
#include "tools/bench/replica_harness.h"

using namespace troupe;
using namespace troupe::test;

namespace {

using clock_type = std::chrono::steady_clock;

/// Runs the engine's steps on the replica until every request is done.
std::vector<generation_result> drive(engine& e, bench::local_replica& rep,
                                     const std::vector<std::vector<int32_t>>& prompts, const sampling_params& p) {
  std::vector<generation_result> out(prompts.size());
  std::map<seq_id, size_t> index;
  for (size_t i = 0; i < prompts.size(); ++i) index[e.submit(prompts[i], p)] = i;
  std::vector<token_event> events;
  while (e.has_work()) REQUIRE(rep.step(e, &events));
  for (auto& ev : events) {
    auto& r = out[index.at(ev.id)];
    if (ev.token >= 0) r.tokens.push_back(ev.token);
    r.text += ev.text;
  }
  return out;
}

}  // namespace

TEST_CASE("tensor 2 x pipeline 2 shard workers reproduce the single engine's greedy tokens",
          "[parallel][shard][slow]") {
  engine_config cfg;
  cfg.kv_tokens = 2048;
  cfg.max_seqs = 8;
  cfg.local_execution = false;
  engine sched(shared_default_model(), cfg);
  context_params ctx;
  ctx.n_blocks = 2048 / cfg.block_size;
  ctx.block_size = cfg.block_size;
  ctx.max_batch_tokens = cfg.max_batch_tokens;
  ctx.max_logit_rows = cfg.max_seqs;
  bench::local_replica rep(default_model(), 2, 2, ctx);
  rep.connect();
  auto goldens = read_goldens("smollm2_f32.json");
  std::vector<std::vector<int32_t>> prompts;
  for (size_t i = 0; i < 6; ++i) prompts.push_back(goldens[i].prompt_tokens);
  auto split = drive(sched, rep, prompts, greedy(16));
  auto local = make_engine();
  auto whole = local->generate(prompts, greedy(16));
  for (size_t i = 0; i < prompts.size(); ++i) {
    INFO(goldens[i].name);
    CHECK(split[i].tokens == whole[i].tokens);
    CHECK(split[i].text == whole[i].text);
  }
}

TEST_CASE("an aborted shard worker fails its transfers at once instead of hanging", "[parallel][shard][slow]") {
  context_params ctx;
  ctx.n_blocks = 16;
  ctx.max_batch_tokens = 64;
  ctx.max_logit_rows = 4;
  bench::local_replica rep(default_model(), 1, 2, ctx);
  rep.connect();
  const step_request r = one_sequence_step(1, {1, 2, 3}, 0, false);
  // Stage 1 waits for stage 0's activations, which never come: abort releases it.
  auto waiting = std::async(std::launch::async, [&] { return rep.shard(1, 0).run(r); });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  auto t0 = clock_type::now();
  rep.shard(1, 0).abort();
  REQUIRE_THROWS_AS(waiting.get(), parallel::comm_error);
  CHECK(clock_type::now() - t0 < std::chrono::milliseconds(500));
}
