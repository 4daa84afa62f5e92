// Overlapped steps in the scheduler on its own (no model): a sequence's next decode planned
// while the step that samples its current token is in flight, and how such a sequence ends.
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
void land(scheduler& s, const step_plan& plan, int32_t token) {
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
  land(s, first, 7);
  land(s, second, 8);
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
  land(s, first, 7);
}

TEST_CASE("a prefill chunk that samples nothing gets no decode ahead", "[scheduler][overlap]") {
  block_manager blocks(128, 16);
  scheduler s(blocks, {512, 8, 2048});
  s.add(make_seq(1, 600));
  const auto first = s.schedule(0, true);
  REQUIRE(first.chunks.size() == 1);
  CHECK_FALSE(first.chunks[0].wants_logits);
  CHECK(s.schedule(0, true).empty());
  land(s, first, 7);
}

TEST_CASE("no decode is planned ahead for a token past max_tokens or the context", "[scheduler][overlap]") {
  block_manager blocks(64, 16);
  SECTION("max_tokens 1: the token in flight is the last") {
    scheduler s(blocks, {512, 8, 2048});
    s.add(make_seq(1, 10, 1));
    const auto first = s.schedule(0, true);
    CHECK(s.schedule(0, true).empty());
    land(s, first, 7);
  }
  SECTION("max_tokens 2: one decode ahead, none after it") {
    scheduler s(blocks, {512, 8, 2048});
    s.add(make_seq(1, 10, 2));
    const auto first = s.schedule(0, true);
    const auto second = s.schedule(0, true);
    REQUIRE(second.chunks.size() == 1);
    land(s, first, 7);
    CHECK(s.schedule(0, true).empty());  // the token in flight (second) is the last
    land(s, second, 8);
  }
  SECTION("the context holds the prompt and one more token") {
    scheduler s(blocks, {512, 8, 11});
    s.add(make_seq(1, 10));
    const auto first = s.schedule(0, true);
    CHECK(s.schedule(0, true).empty());
    land(s, first, 7);
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
  land(s, first, 7);
  s.finish(1, finish_reason::stop);  // its token 7 was a stop
  CHECK(s.take_finished().empty());
  CHECK(blocks.has_sequence(1));
  CHECK(s.running().front()->finish == finish_reason::stop);
  const auto third = s.schedule(0, true);  // seq 2 goes ahead again; seq 1 never does
  CHECK(chunk_of(third, 1) == nullptr);
  REQUIRE(chunk_of(third, 2) != nullptr);
  land(s, second, 8);
  auto done = s.take_finished();
  REQUIRE(done.size() == 1);
  CHECK(done[0]->id == 1);
  CHECK(done[0]->finish == finish_reason::stop);
  CHECK(done[0]->tokens.size() == 11);  // the prompt and 7; the dropped 8 is not appended
  CHECK_FALSE(blocks.has_sequence(1));
  CHECK(s.running().front()->tokens.size() == 12);
  land(s, third, 9);
  CHECK(s.running().front()->tokens.back() == 9);
}

TEST_CASE("a cancel request stops ahead planning; the sequence ends once its step lands", "[scheduler][overlap]") {
  block_manager blocks(64, 16);
  scheduler s(blocks, {512, 8, 2048});
  s.add(make_seq(1, 10));
  const auto first = s.schedule(0, true);
  CHECK(s.cancel(1));
  CHECK(s.schedule(0, true).empty());
  land(s, first, 7);
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
  land(s, first, 7);
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
  CHECK_THROWS_WITH(land(s, second, 8), Catch::Contains("completed before the step that samples its token"));
}
