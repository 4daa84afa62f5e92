// Overlapped steps on a replica's data path without actors: a scheduling-only engine keeps
// two steps queued for one shard worker, the second holding decodes whose tokens the first
// samples (the shard fills them in), and every request ends exactly as with one step at a time.
#include <catch2/catch.hpp>

#include "engine_fixture.h"
#include "runtime/engine/overlap_drive.h"
#include "tools/bench/replica_harness.h"

using namespace troupe;
using namespace troupe::test;

namespace {

/// The prompts one step at a time on `w` (without overlap): what the other runs must give.
driven one_at_a_time(engine_config cfg, shard_worker& w, const std::vector<std::vector<int32_t>>& prompts,
                     const std::vector<sampling_params>& ps) {
  cfg.overlap = false;
  engine plain_engine(shared_default_model(), cfg);
  const auto plain = drive(plain_engine, w, prompts, ps, 1);
  CHECK(plain.ahead_rows == 0);
  return plain;
}

/// Checks that `got` ended every request as `plain` did: tokens, text, log-probabilities
/// and finish reasons (each request ended).
void check_same_requests(const driven& got, const driven& plain) {
  REQUIRE(got.out.size() == plain.out.size());
  for (size_t i = 0; i < plain.out.size(); ++i) {
    INFO("prompt " << i);
    CHECK(got.out[i].tokens == plain.out[i].tokens);
    CHECK(got.out[i].text == plain.out[i].text);
    CHECK(got.out[i].logprobs == plain.out[i].logprobs);
    CHECK(got.out[i].reason == plain.out[i].reason);
    CHECK(plain.out[i].reason != finish_reason::none);
  }
}

/// Runs the prompts one step at a time and overlapped on the same shard; checks that both
/// give the same requests' tokens, text, log-probabilities and finish reasons, and that
/// the overlapped run did send decodes ahead. Returns the overlapped run.
driven compare(engine_config cfg, const std::vector<std::vector<int32_t>>& prompts,
               const std::vector<sampling_params>& ps) {
  cfg.local_execution = false;
  bench::local_replica rep(default_model(), 1, 1, shard_context_for(cfg), 2);
  rep.connect();
  const auto plain = one_at_a_time(cfg, rep.shard(0, 0), prompts, ps);
  cfg.overlap = true;
  engine overlap_engine(shared_default_model(), cfg);
  auto overlapped = drive(overlap_engine, rep.shard(0, 0), prompts, ps, 2);
  CHECK(overlapped.ahead_rows > 0);
  check_same_requests(overlapped, plain);
  return overlapped;
}

std::vector<std::vector<int32_t>> golden_prompts(size_t n) {
  const auto goldens = read_goldens("smollm2_f32.json");
  std::vector<std::vector<int32_t>> prompts;
  for (size_t i = 0; i < n && i < goldens.size(); ++i) prompts.push_back(goldens[i].prompt_tokens);
  return prompts;
}

}  // namespace

TEST_CASE("overlapped steps give every request the tokens, text and log-probabilities of one step at a time",
          "[engine][overlap][slow]") {
  const auto prompts = golden_prompts(6);
  // A stop string from the middle of prompt 2's plain greedy text.
  auto local = make_engine();
  const auto plain2 = local->generate({prompts[2]}, greedy(16));
  REQUIRE(plain2[0].text.size() > 8);
  std::vector<sampling_params> ps(prompts.size(), greedy(20));
  ps[1].temperature = 0.8f;  // seeded sampling with penalties that read the history
  ps[1].top_p = 0.9f;
  ps[1].seed = 5;
  ps[1].repetition_penalty = 1.3f;
  ps[1].frequency_penalty = 0.5f;
  ps[1].presence_penalty = 0.2f;
  ps[1].logprobs = 3;
  ps[2].stop = {plain2[0].text.substr(5, 3)};
  ps[3].max_tokens = 1;
  ps[4].max_tokens = 2;
  ps[5].ignore_eos = false;
  engine_config cfg;
  cfg.kv_tokens = 2048;
  cfg.max_seqs = 8;
  const auto overlapped = compare(cfg, prompts, ps);
  CHECK(overlapped.out[2].reason == finish_reason::stop);
  CHECK(overlapped.out[2].tokens.size() < 20);
  CHECK(overlapped.out[3].tokens.size() == 1);
  CHECK(overlapped.out[4].tokens.size() == 2);
}

TEST_CASE("overlapped steps with chunked prompts under KV-cache pressure preempt and recompute to the same tokens",
          "[engine][overlap][slow]") {
  const auto prompts = golden_prompts(8);
  std::vector<sampling_params> ps(prompts.size(), greedy(40));
  engine_config cfg;
  cfg.kv_tokens = 256;  // 16 blocks of 16: the prompts and their outputs do not fit at once
  cfg.max_seqs = 8;
  cfg.max_batch_tokens = 16;  // prompts take several chunks, the next planned while one is in flight
  cfg.prefix_caching = false;
  const auto overlapped = compare(cfg, prompts, ps);
  CHECK(overlapped.preemptions > 0);
  CHECK(overlapped.chunks_ahead > 0);
}

TEST_CASE("overlapped steps on tensor 2 give the tokens of one step at a time, each rank sampling rank 0's tokens",
          "[engine][overlap][parallel][slow]") {
  const auto prompts = golden_prompts(4);
  std::vector<sampling_params> ps(prompts.size(), greedy(16));
  ps[1].temperature = 0.8f;
  ps[1].seed = 9;
  ps[2].logprobs = 2;
  engine_config cfg;
  cfg.kv_tokens = 2048;
  cfg.max_seqs = 8;
  cfg.local_execution = false;
  bench::local_replica rep(default_model(), 2, 1, shard_context_for(cfg));
  rep.connect();
  size_t rank1_samples = 0;
  const auto run_ranks = [&](step_request& r) {
    auto outs = rep.run(r);  // each rank fills its own copy's ahead rows
    REQUIRE(outs.size() == 2);
    if (!outs[1].samples.empty()) {
      ++rank1_samples;
      REQUIRE(outs[1].samples.size() == outs[0].samples.size());
      for (size_t j = 0; j < outs[0].samples.size(); ++j) CHECK(outs[1].samples[j].token == outs[0].samples[j].token);
    }
    return outs[0].samples;
  };
  cfg.overlap = false;
  engine plain_engine(shared_default_model(), cfg);
  const auto plain = drive_with(plain_engine, run_ranks, prompts, ps, 1);
  CHECK(rank1_samples == 0);  // without overlap only rank 0 samples
  cfg.overlap = true;
  engine overlap_engine(shared_default_model(), cfg);
  const auto overlapped = drive_with(overlap_engine, run_ranks, prompts, ps, 2);
  CHECK(rank1_samples == overlapped.steps);
  CHECK(overlapped.ahead_rows > 0);
  check_same_requests(overlapped, plain);
}

TEST_CASE("a shard refuses ahead rows whose step it did not run last, naming both steps", "[engine][overlap][slow]") {
  context_params ctx;
  ctx.n_blocks = 16;
  ctx.max_batch_tokens = 64;
  ctx.max_logit_rows = 4;
  bench::local_replica rep(default_model(), 1, 1, ctx);
  rep.connect();
  step_request r = one_sequence_step(1, {1, 2, 3}, 0, true);
  const auto first = rep.shard(0, 0).run(r);
  REQUIRE(first.samples.size() == 1);
  step_request next = one_sequence_step(2, {0}, 3, true);  // its token: step 1's sample
  next.ahead_rows = {0};
  next.ahead_from = {0};
  next.ahead_of = 7;
  CHECK_THROWS_WITH(rep.shard(0, 0).run(next),
                    Catch::Contains("step 2 takes its ahead tokens from step 7, but the last step this shard ran to "
                                    "its end is 1"));
  next.ahead_of = 1;
  next.ahead_from = {3};
  CHECK_THROWS_WITH(rep.shard(0, 0).run(next), Catch::Contains("outside"));
  next.ahead_from = {0};
  // The failed attempts ran nothing: the step after step 1 still takes step 1's token.
  const auto second = rep.shard(0, 0).run(next);
  REQUIRE(second.samples.size() == 1);
  CHECK(next.batch.tokens[0] == first.samples[0].token);  // filled in place
  CHECK(next.ahead_rows.empty());                        // and not to be filled again
}

TEST_CASE("a CPU shard never pipelines, so it cannot begin a step, refuses begin and complete, and runs it",
          "[engine][overlap][slow]") {
  context_params ctx;
  ctx.n_blocks = 16;
  ctx.max_batch_tokens = 64;
  ctx.max_logit_rows = 4;
  bench::local_replica rep(default_model(), 1, 1, ctx);
  rep.connect();
  auto& w = rep.shard(0, 0);
  step_request r = one_sequence_step(1, {1, 2, 3}, 0, true);
  CHECK_FALSE(w.can_begin(r));  // pipelined steps need a CUDA shard: the CPU runs synchronously
  CHECK_THROWS_WITH(w.begin(r), Catch::Contains("cannot be pipelined"));
  CHECK_THROWS_WITH(w.complete(), Catch::Contains("without a begun step"));
  CHECK(w.in_flight() == 0);
  CHECK_FALSE(w.front_done());
  const auto out = w.run(r);  // the refusals left nothing behind
  CHECK(out.samples.size() == 1);
}

TEST_CASE("the pipelined loop on a CPU shard runs every step one at a time and ends each request as they do",
          "[engine][overlap][slow]") {
  const auto prompts = golden_prompts(3);
  std::vector<sampling_params> ps(prompts.size(), greedy(8));
  ps[1].max_tokens = 1;
  ps[2].logprobs = 2;
  engine_config cfg;
  cfg.kv_tokens = 2048;
  cfg.max_seqs = 8;
  cfg.local_execution = false;
  bench::local_replica rep(default_model(), 1, 1, shard_context_for(cfg), 2);
  rep.connect();
  const auto plain = one_at_a_time(cfg, rep.shard(0, 0), prompts, ps);
  cfg.overlap = true;
  engine piped_engine(shared_default_model(), cfg);
  const auto piped = drive_pipelined(piped_engine, rep.shard(0, 0), prompts, ps);
  CHECK(piped.counts.steps == plain.steps);
  CHECK(piped.counts.one_at_a_time == piped.counts.steps);  // a CPU shard never begins a step
  CHECK(piped.counts.begun_behind == 0);
  CHECK(piped.counts.ahead_rows == 0);  // nothing is in flight when the next step is planned
  check_same_requests(piped.d, plain);
  CHECK(piped.d.out[1].tokens.size() == 1);
}
