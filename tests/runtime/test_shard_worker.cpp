// A replica's data path without actors: an engine that only schedules (local_execution
// off) drives shard workers on threads, tensor 2 x pipeline 2, over real UCX links.
#include <catch2/catch.hpp>
#include <future>
#include <thread>

#include "parallel/communicator.h"

#include "engine_fixture.h"
#include "runtime/shard_worker.h"

using namespace troupe;
using namespace troupe::test;

namespace {

using clock_type = std::chrono::steady_clock;

/// Builds and connects the shards of one replica of `tp` x `pp`.
std::vector<std::unique_ptr<shard_worker>> make_replica(int tp, int pp, const context_params& ctx) {
  auto meta = load_model_metadata(default_model());
  auto stages = parallel::plan_pipeline(meta.config, pp);
  std::vector<std::unique_ptr<shard_worker>> shards;  // index = stage * tp + rank
  for (int s = 0; s < pp; ++s)
    for (int r = 0; r < tp; ++r) {
      shard_spec spec;
      spec.model_path = default_model();
      spec.stage = s;
      spec.n_stages = pp;
      spec.layers = stages[static_cast<size_t>(s)];
      spec.tp_rank = r;
      spec.tp_size = tp;
      spec.allow_uneven_heads = true;
      spec.context = ctx;
      shards.push_back(std::make_unique<shard_worker>(spec));
    }
  std::vector<std::future<void>> fs;
  for (int s = 0; s < pp; ++s)
    for (int r = 0; r < tp; ++r) {
      std::vector<std::vector<char>> group;
      for (int q = 0; q < tp; ++q) group.push_back(shards[static_cast<size_t>(s * tp + q)]->addresses().tensor);
      std::vector<char> prev, next;
      if (s > 0) prev = shards[static_cast<size_t>((s - 1) * tp + r)]->addresses().next;
      if (s + 1 < pp) next = shards[static_cast<size_t>((s + 1) * tp + r)]->addresses().prev;
      auto* w = shards[static_cast<size_t>(s * tp + r)].get();
      fs.push_back(std::async(std::launch::async, [w, group, prev, next] {
        w->connect(group, prev, next, clock_type::now() + std::chrono::seconds(20));
      }));
    }
  for (auto& f : fs) f.get();
  return shards;
}

/// Runs the engine's steps on the shards until every request is done.
std::vector<generation_result> drive(engine& e, std::vector<std::unique_ptr<shard_worker>>& shards,
                                     const std::vector<std::vector<int32_t>>& prompts, const sampling_params& p) {
  std::vector<generation_result> out(prompts.size());
  std::map<seq_id, size_t> index;
  for (size_t i = 0; i < prompts.size(); ++i) index[e.submit(prompts[i], p)] = i;
  while (e.has_work()) {
    auto step = e.begin_step();
    REQUIRE(step);
    std::vector<std::future<step_output>> fs;
    for (auto& w : shards) fs.push_back(std::async(std::launch::async, [&w, &step] { return w->run(step->request); }));
    std::vector<sample_result> samples;
    for (size_t i = 0; i < fs.size(); ++i) {
      auto o = fs[i].get();
      if (shards[i]->samples()) samples = o.samples;
    }
    for (auto& ev : e.end_step(*step, samples)) {
      auto& r = out[index.at(ev.id)];
      if (ev.token >= 0) r.tokens.push_back(ev.token);
      r.text += ev.text;
    }
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
  auto shards = make_replica(2, 2, ctx);
  auto goldens = read_goldens("smollm2_f32.json");
  std::vector<std::vector<int32_t>> prompts;
  for (size_t i = 0; i < 6; ++i) prompts.push_back(goldens[i].prompt_tokens);
  auto split = drive(sched, shards, prompts, greedy(16));
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
  auto shards = make_replica(1, 2, ctx);
  step_request r;
  r.step_id = 1;
  r.batch.tokens = {1, 2, 3};
  r.batch.positions = {0, 1, 2};
  r.batch.slots = {0, 1, 2};
  r.batch.query_start = {0, 3};
  r.batch.context_len = {3};
  r.batch.max_blocks = 1;
  r.batch.block_tables = {0};
  // Stage 1 waits for stage 0's activations, which never come: abort releases it.
  auto waiting = std::async(std::launch::async, [&] { return shards[1]->run(r); });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  auto t0 = clock_type::now();
  shards[1]->abort();
  REQUIRE_THROWS_AS(waiting.get(), parallel::comm_error);
  CHECK(clock_type::now() - t0 < std::chrono::milliseconds(500));
}
