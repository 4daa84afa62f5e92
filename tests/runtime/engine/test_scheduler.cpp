// The continuous-batching scheduler on its own (no model): budgets, chunks, preemption,
// and overlapped steps (a sequence's next decode planned while the step that samples its
// current token is in flight, and how such a sequence ends).
#include <catch2/catch.hpp>

#include "runtime/engine/scheduler.h"

using namespace troupe;

namespace {

std::unique_ptr<sequence> make_seq(seq_id id, int n_prompt, int max_tokens = 16) {
  auto s = std::make_unique<sequence>();
  s->id = id;
  for (int i = 0; i < n_prompt; ++i) s->tokens.push_back(static_cast<int32_t>(id * 1000 + i));
  s->n_prompt = n_prompt;
  s->params.max_tokens = max_tokens;
  return s;
}

/// Completes a plan as if the model sampled `token` for every chunk that wants logits.
void run(scheduler& s, const step_plan& plan, int32_t token = 7) {
  std::vector<int32_t> sampled;
  for (const auto& c : plan.chunks)
    if (c.wants_logits) sampled.push_back(token);
  s.complete(plan, sampled);
}

const scheduled_chunk* chunk_of(const step_plan& p, seq_id id) {
  for (const auto& c : p.chunks)
    if (c.seq->id == id) return &c;
  return nullptr;
}

}  // namespace

TEST_CASE("a long prompt is prefilled in chunks of the token budget", "[scheduler]") {
  block_manager blocks(128, 16);
  scheduler s(blocks, {512, 8, 2048});
  s.add(make_seq(1, 1000));
  auto p1 = s.schedule();
  REQUIRE(p1.chunks.size() == 1);
  CHECK(p1.chunks[0].start == 0);
  CHECK(p1.chunks[0].len == 512);
  CHECK_FALSE(p1.chunks[0].wants_logits);
  run(s, p1);
  auto p2 = s.schedule();
  CHECK(p2.chunks[0].start == 512);
  CHECK(p2.chunks[0].len == 488);
  CHECK(p2.chunks[0].wants_logits);
  run(s, p2);
  auto p3 = s.schedule();
  CHECK(p3.chunks[0].start == 1000);
  CHECK(p3.chunks[0].len == 1);
}

TEST_CASE("decodes and a new prefill share one step", "[scheduler]") {
  block_manager blocks(128, 16);
  scheduler s(blocks, {64, 8, 2048});
  s.add(make_seq(1, 10));
  run(s, s.schedule());
  s.add(make_seq(2, 100));
  auto plan = s.schedule();
  REQUIRE(plan.chunks.size() == 2);
  CHECK(plan.chunks[0].seq->id == 1);
  CHECK(plan.chunks[0].len == 1);
  CHECK(plan.chunks[1].seq->id == 2);
  CHECK(plan.chunks[1].len == 63);
  CHECK(plan.n_tokens == 64);
}

TEST_CASE("no more sequences run than max_seqs", "[scheduler]") {
  block_manager blocks(128, 16);
  scheduler s(blocks, {512, 2, 2048});
  for (seq_id i = 1; i <= 3; ++i) s.add(make_seq(i, 5));
  auto plan = s.schedule();
  CHECK(plan.chunks.size() == 2);
  CHECK(s.n_running() == 2);
  CHECK(s.n_waiting() == 1);
}

TEST_CASE("the newest sequence is preempted when blocks run out, and resumes later", "[scheduler]") {
  block_manager blocks(4, 4, /*prefix_caching=*/false);  // 16 slots, nothing kept after release
  scheduler s(blocks, {64, 8, 64});
  s.add(make_seq(1, 8));
  s.add(make_seq(2, 8));
  run(s, s.schedule());  // both prefilled: 2 blocks each, all 4 used
  CHECK(blocks.n_available() == 0);
  auto plan = s.schedule();  // seq 1 needs a 3rd block for its 9th token: seq 2 yields
  REQUIRE(plan.preempted == std::vector<seq_id>{2});
  REQUIRE(plan.chunks.size() == 1);
  CHECK(plan.chunks[0].seq->id == 1);
  run(s, plan);
  s.finish(1, finish_reason::stop);
  auto resumed = s.schedule();
  REQUIRE(resumed.chunks.size() == 1);
  CHECK(resumed.chunks[0].seq->id == 2);
  CHECK(resumed.chunks[0].start == 0);  // recompute: prompt + the generated token
  CHECK(resumed.chunks[0].len == 9);
  CHECK(resumed.chunks[0].seq->n_preemptions == 1);
}

TEST_CASE("a cancelled sequence releases its blocks at the next step", "[scheduler]") {
  block_manager blocks(16, 16);
  scheduler s(blocks, {512, 8, 256});
  s.add(make_seq(1, 40));
  run(s, s.schedule());
  CHECK(blocks.n_used() == 3);
  CHECK(s.cancel(1));
  CHECK_FALSE(s.cancel(99));
  auto plan = s.schedule();
  CHECK(plan.empty());
  CHECK(blocks.n_used() == 0);
  auto done = s.take_finished();
  REQUIRE(done.size() == 1);
  CHECK(done[0]->finish == finish_reason::cancelled);
  CHECK_FALSE(s.has_work());
}

TEST_CASE("a sequence that cannot fit the whole cache finishes with length", "[scheduler]") {
  block_manager blocks(2, 4);  // 8 slots
  scheduler s(blocks, {64, 8, 64});
  s.add(make_seq(1, 8));
  run(s, s.schedule());
  auto plan = s.schedule();  // the 9th token has no block left and nobody to preempt
  CHECK(plan.empty());
  auto done = s.take_finished();
  REQUIRE(done.size() == 1);
  CHECK(done[0]->finish == finish_reason::length);
  CHECK(blocks.n_used() == 0);
}

TEST_CASE("after the KV storage is lost every running sequence is recomputed and no prefix is reused",
          "[scheduler]") {
  block_manager blocks(32, 4);
  scheduler s(blocks, {64, 8, 64});
  s.add(make_seq(1, 9));
  s.add(make_seq(2, 6));
  run(s, s.schedule());  // both prefilled; full blocks published in the prefix table
  CHECK(blocks.n_used() > 0);
  s.reset();
  CHECK(blocks.n_used() == 0);
  CHECK(s.n_running() == 0);
  CHECK(s.n_waiting() == 2);
  const auto reused_before = blocks.stats().reused_blocks;
  auto plan = s.schedule();
  REQUIRE(plan.chunks.size() == 2);
  CHECK(plan.chunks[0].seq->id == 1);  // admission order kept
  CHECK(plan.chunks[0].start == 0);    // nothing cached survives
  CHECK(plan.chunks[0].len == 10);     // prompt + the sampled token
  CHECK(plan.chunks[1].start == 0);
  CHECK(blocks.stats().reused_blocks == reused_before);
}

TEST_CASE("a decode keeps its place in the step beside an older sequence's long prefill", "[scheduler]") {
  block_manager blocks(256, 16);
  scheduler s(blocks, {64, 8, 4096});
  s.add(make_seq(1, 1000));
  auto p1 = s.schedule();  // sequence 1's first chunk, still in flight (a pipeline micro-batch)
  s.add(make_seq(2, 10));
  auto p2 = s.schedule();  // sequence 2 admitted behind it, whole prompt
  REQUIRE(p2.chunks.size() == 1);
  run(s, p1);
  run(s, p2);
  // Running order is 1 (mid-prefill), then 2 (decoding): the decode still gets its token.
  auto p3 = s.schedule();
  REQUIRE(p3.chunks.size() == 2);
  CHECK(p3.chunks[0].seq->id == 2);
  CHECK(p3.chunks[0].len == 1);
  CHECK(p3.chunks[1].seq->id == 1);
  CHECK(p3.chunks[1].start == 64);
  CHECK(p3.chunks[1].len == 63);
}

TEST_CASE("max_prefill_tokens bounds the prefill beside decodes but not a step with no decode", "[scheduler]") {
  block_manager blocks(256, 16);
  scheduler s(blocks, {256, 8, 4096, 32});
  s.add(make_seq(1, 100));
  auto p1 = s.schedule();  // no decode yet: the whole budget
  REQUIRE(p1.chunks.size() == 1);
  CHECK(p1.chunks[0].len == 100);
  run(s, p1);
  s.add(make_seq(2, 500));
  s.add(make_seq(3, 500));
  auto p2 = s.schedule();  // one decode: 32 prefill tokens beside it, not 255
  REQUIRE(p2.chunks.size() == 2);
  CHECK(p2.chunks[0].seq->id == 1);
  CHECK(p2.chunks[1].seq->id == 2);
  CHECK(p2.chunks[1].len == 32);
  CHECK(p2.n_tokens == 33);
  run(s, p2);
  s.cancel(1);
  auto p3 = s.schedule();  // 2 is mid-prefill and nobody decodes: the whole budget again
  REQUIRE(p3.chunks.size() == 1);
  CHECK(p3.chunks[0].seq->id == 2);
  CHECK(p3.chunks[0].len == 256);
}

TEST_CASE("prefill_per_decode scales the prefill beside decodes with their count, between a quarter of the cap "
          "and the cap", "[scheduler]") {
  block_manager blocks(1024, 16);
  scheduler s(blocks, {1024, 64, 4096, 256, 8});
  for (int id = 1; id <= 40; ++id) s.add(make_seq(id, 4));
  auto first = s.schedule();  // no decode yet: every short prompt at once
  REQUIRE(first.chunks.size() == 40);
  run(s, first);
  s.add(make_seq(100, 900));
  auto p = s.schedule();  // 40 decodes x 8 = 320 tokens, capped at 256
  REQUIRE(p.chunks.size() == 41);
  CHECK(p.chunks[40].seq->id == 100);
  CHECK(p.chunks[40].len == 256);
  run(s, p);
  for (int id = 1; id <= 34; ++id) s.cancel(id);
  auto q = s.schedule();  // 6 decodes x 8 = 48, below the floor of 256 / 4 = 64
  REQUIRE(q.chunks.size() == 7);
  CHECK(q.chunks[6].len == 64);
  run(s, q);
  for (int id = 35; id <= 37; ++id) s.cancel(id);
  auto r = s.schedule();  // 3 decodes: still the floor
  REQUIRE(r.chunks.size() == 4);
  CHECK(r.chunks[3].len == 64);
}

TEST_CASE("a negative prefill_per_decode is refused with its name", "[scheduler]") {
  block_manager blocks(16, 16);
  CHECK_THROWS_WITH(scheduler(blocks, {64, 8, 256, 32, -2}), Catch::Contains("prefill_per_decode must be >= 0"));
}

TEST_CASE("a negative max_prefill_tokens is refused with its name", "[scheduler]") {
  block_manager blocks(16, 16);
  CHECK_THROWS_WITH(scheduler(blocks, {64, 8, 256, -1}), Catch::Contains("max_prefill_tokens"));
}

TEST_CASE("with a step in flight a sampling sequence gets its next decode ahead, at the in-flight token's position",
          "[scheduler][overlap]") {
  block_manager blocks(64, 16);
  scheduler s(blocks, {512, 8, 2048});
  s.add(make_seq(1, 10));
  const auto first = s.schedule(0, true);  // nothing in flight: a plain prefill
  REQUIRE(first.chunks.size() == 1);
  CHECK_FALSE(first.chunks[0].ahead);
  const auto second = s.schedule(0, true);
  REQUIRE(second.chunks.size() == 1);
  const auto& c = second.chunks[0];
  CHECK(c.ahead);
  CHECK(c.wants_logits);
  CHECK(c.start == 10);
  CHECK(c.len == 1);
  CHECK(c.seq->in_flight == 2);
  CHECK(c.seq->pending_tokens == 2);
  run(s, first, 7);
  run(s, second, 8);
  const auto& seq = *s.running().front();
  CHECK(seq.tokens.size() == 12);
  CHECK(seq.tokens[10] == 7);
  CHECK(seq.tokens[11] == 8);
  CHECK(seq.n_computed == 11);
  CHECK(seq.in_flight == 0);
  CHECK(seq.pending_tokens == 0);
}

TEST_CASE("without ahead planning a sequence in flight is left out of the next step", "[scheduler][overlap]") {
  block_manager blocks(64, 16);
  scheduler s(blocks, {512, 8, 2048});
  s.add(make_seq(1, 10));
  const auto first = s.schedule();
  CHECK(s.schedule().empty());
  CHECK(s.schedule(0, false).empty());
  run(s, first, 7);
}

TEST_CASE("a prompt chunk that samples nothing gets the prompt's next chunk ahead, not a decode",
          "[scheduler][overlap]") {
  block_manager blocks(128, 16);
  scheduler s(blocks, {512, 8, 2048});
  s.add(make_seq(1, 600));
  const auto first = s.schedule(0, true);
  REQUIRE(first.chunks.size() == 1);
  CHECK_FALSE(first.chunks[0].wants_logits);
  const auto second = s.schedule(0, true);
  REQUIRE(second.chunks.size() == 1);
  CHECK_FALSE(second.chunks[0].ahead);  // its tokens are known
  CHECK(second.chunks[0].start == 512);
  CHECK(second.chunks[0].len == 88);
  CHECK(second.chunks[0].wants_logits);
  CHECK(s.schedule(0, true).empty());  // two steps hold it
  run(s, first, 7);
  const auto& seq = *s.running().front();
  CHECK(seq.n_computed == 512);
  CHECK(seq.tokens.size() == 600);
  run(s, second, 8);
  CHECK(seq.n_computed == 600);
  CHECK(seq.tokens.back() == 8);
}

TEST_CASE("no decode is planned ahead for a token past max_tokens or the context", "[scheduler][overlap]") {
  block_manager blocks(64, 16);
  SECTION("max_tokens 1: the token in flight is the last") {
    scheduler s(blocks, {512, 8, 2048});
    s.add(make_seq(1, 10, 1));
    const auto first = s.schedule(0, true);
    CHECK(s.schedule(0, true).empty());
    run(s, first, 7);
  }
  SECTION("max_tokens 2: one decode ahead, none after it") {
    scheduler s(blocks, {512, 8, 2048});
    s.add(make_seq(1, 10, 2));
    const auto first = s.schedule(0, true);
    const auto second = s.schedule(0, true);
    REQUIRE(second.chunks.size() == 1);
    run(s, first, 7);
    CHECK(s.schedule(0, true).empty());  // the token in flight (second) is the last
    run(s, second, 8);
  }
  SECTION("the context holds the prompt and one more token") {
    scheduler s(blocks, {512, 8, 11});
    s.add(make_seq(1, 10));
    const auto first = s.schedule(0, true);
    CHECK(s.schedule(0, true).empty());
    run(s, first, 7);
  }
}

TEST_CASE("a sequence that ends while its ahead step runs keeps its blocks until that step lands, whose sample is "
          "dropped",
          "[scheduler][overlap]") {
  block_manager blocks(64, 16, /*prefix_caching=*/false);
  scheduler s(blocks, {512, 8, 2048});
  s.add(make_seq(1, 10));
  s.add(make_seq(2, 10));
  const auto first = s.schedule(0, true);
  const auto second = s.schedule(0, true);
  REQUIRE(second.chunks.size() == 2);
  run(s, first, 7);
  s.finish(1, finish_reason::stop);  // its token 7 was a stop
  CHECK(s.take_finished().empty());
  CHECK(blocks.has_sequence(1));
  CHECK(s.running().front()->finish == finish_reason::stop);
  const auto third = s.schedule(0, true);  // seq 2 goes ahead again; seq 1 never does
  CHECK(chunk_of(third, 1) == nullptr);
  REQUIRE(chunk_of(third, 2) != nullptr);
  run(s, second, 8);
  auto done = s.take_finished();
  REQUIRE(done.size() == 1);
  CHECK(done[0]->id == 1);
  CHECK(done[0]->finish == finish_reason::stop);
  CHECK(done[0]->tokens.size() == 11);  // the prompt and 7; the dropped 8 is not appended
  CHECK_FALSE(blocks.has_sequence(1));
  CHECK(s.running().front()->tokens.size() == 12);
  run(s, third, 9);
  CHECK(s.running().front()->tokens.back() == 9);
}

TEST_CASE("a cancel request stops ahead planning and the sequence ends once its step lands", "[scheduler][overlap]") {
  block_manager blocks(64, 16);
  scheduler s(blocks, {512, 8, 2048});
  s.add(make_seq(1, 10));
  const auto first = s.schedule(0, true);
  CHECK(s.cancel(1));
  CHECK(s.schedule(0, true).empty());
  run(s, first, 7);
  CHECK(s.schedule(0, true).empty());
  auto done = s.take_finished();
  REQUIRE(done.size() == 1);
  CHECK(done[0]->finish == finish_reason::cancelled);
  CHECK_FALSE(s.has_work());
}

TEST_CASE("abandoning both steps in flight queues the sequence again once, without the tokens they would have "
          "sampled",
          "[scheduler][overlap]") {
  block_manager blocks(64, 16, /*prefix_caching=*/false);
  scheduler s(blocks, {512, 8, 2048});
  s.add(make_seq(1, 10));
  const auto first = s.schedule(0, true);
  const auto second = s.schedule(0, true);
  s.abandon(first);
  s.abandon(second);
  CHECK(s.n_running() == 0);
  CHECK(s.n_waiting() == 1);
  CHECK(blocks.n_used() == 0);
  const auto again = s.schedule(0, true);
  REQUIRE(again.chunks.size() == 1);
  CHECK(again.chunks[0].start == 0);
  CHECK(again.chunks[0].len == 10);
  CHECK(again.chunks[0].seq->in_flight == 1);
  CHECK(again.chunks[0].seq->pending_tokens == 1);
}

TEST_CASE("losing the KV storage retires a sequence that ended while its ahead step ran", "[scheduler][overlap]") {
  block_manager blocks(64, 16);
  scheduler s(blocks, {512, 8, 2048});
  s.add(make_seq(1, 10));
  s.add(make_seq(2, 10));
  const auto first = s.schedule(0, true);
  const auto second = s.schedule(0, true);
  run(s, first, 7);
  s.finish(1, finish_reason::stop);
  s.abandon(second);
  s.reset();
  auto done = s.take_finished();
  REQUIRE(done.size() == 1);
  CHECK(done[0]->id == 1);
  CHECK(s.n_waiting() == 1);
  CHECK(s.n_running() == 0);
}

TEST_CASE("an ahead step landing before the step that samples its token is refused", "[scheduler][overlap]") {
  block_manager blocks(64, 16);
  scheduler s(blocks, {512, 8, 2048});
  s.add(make_seq(1, 10));
  const auto first = s.schedule(0, true);
  const auto second = s.schedule(0, true);
  CHECK_THROWS_WITH(run(s, second, 8), Catch::Contains("completed before the step that samples its token"));
}
