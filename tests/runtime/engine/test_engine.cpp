// The engine end to end on the default model: batching, prefix cache, limits.
#include <catch2/catch.hpp>
#include <cstring>

#include "engine_fixture.h"

using namespace troupe;
using namespace troupe::test;

namespace {

std::vector<int32_t> encode(const std::string& text) {
  return shared_default_model()->tokenizer().encode(text, true, true);
}

const std::vector<std::string> kPrompts = {
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a land far away,",
    "The three primary colors are",
    "Water boils at a temperature of",
    "My favourite programming language is",
    "The quick brown fox",
    "In 1969, the first humans",
    "Photosynthesis is the process",
};

bool bitwise_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

}  // namespace

TEST_CASE("a prompt alone and inside a batch of 8 others gives bitwise-identical logits and tokens",
          "[engine][batch][slow]") {
  auto eng = make_engine();
  auto alone = eng->generate({encode(kPrompts[0])}, greedy(8));
  std::vector<std::vector<int32_t>> batch;
  for (const auto& p : kPrompts) batch.push_back(encode(p));
  auto together = eng->generate(batch, greedy(8));
  REQUIRE(together.size() == 9);
  REQUIRE(alone[0].tokens == together[0].tokens);
  REQUIRE(alone[0].logits.size() == together[0].logits.size());
  for (size_t t = 0; t < alone[0].logits.size(); ++t) {
    INFO("generated position " << t);
    CHECK(bitwise_equal(alone[0].logits[t], together[0].logits[t]));
  }
}

TEST_CASE("chunked prefill gives the same logits as a single prefill", "[engine][batch][slow]") {
  engine_config small;
  small.max_batch_tokens = 7;  // the prompt is split into chunks of 7 tokens
  auto chunked = make_engine(small);
  auto whole = make_engine();
  auto prompt = encode("Chunked prefill splits a long prompt over several steps of the scheduler.");
  REQUIRE(prompt.size() > 14);
  auto a = chunked->generate({prompt}, greedy(4));
  auto b = whole->generate({prompt}, greedy(4));
  CHECK(a[0].tokens == b[0].tokens);
  for (size_t t = 0; t < a[0].logits.size(); ++t) CHECK(bitwise_equal(a[0].logits[t], b[0].logits[t]));
}

TEST_CASE("a second request sharing a 200-token prefix reuses its blocks and gives the same output",
          "[engine][prefix][slow]") {
  std::string prefix;
  while (encode(prefix).size() < 210) prefix += "The history of computing is a long story of ideas and machines. ";
  auto prefix_tokens = encode(prefix);
  prefix_tokens.resize(200);
  auto first = prefix_tokens, second = prefix_tokens;
  auto tail1 = encode(" Summarize it:"), tail2 = encode(" Who built the first computer?");
  first.insert(first.end(), tail1.begin(), tail1.end());
  second.insert(second.end(), tail2.begin(), tail2.end());

  auto eng = make_engine();
  auto r1 = eng->generate({first}, greedy(6));
  const auto before = eng->blocks().stats();
  auto r2 = eng->generate({second}, greedy(6));
  const auto after = eng->blocks().stats();
  const int bs = eng->config().block_size;
  CHECK(after.reused_blocks - before.reused_blocks == 200 / bs);
  CHECK(after.reused_tokens - before.reused_tokens == (200 / bs) * bs);

  engine_config no_cache;
  no_cache.prefix_caching = false;
  auto fresh = make_engine(no_cache);
  auto expected = fresh->generate({second}, greedy(6));
  CHECK(r2[0].tokens == expected[0].tokens);
  CHECK(fresh->blocks().stats().reused_blocks == 0);
  for (size_t t = 0; t < r2[0].logits.size(); ++t)
    CHECK(bitwise_equal(r2[0].logits[t], expected[0].logits[t]));
}

TEST_CASE("preemption by recompute does not change greedy output", "[engine][preempt][slow]") {
  engine_config tiny;
  tiny.kv_tokens = 96;  // 6 blocks of 16: four sequences cannot all grow at once
  tiny.max_context = 96;
  auto eng = make_engine(tiny);
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < 4; ++i) prompts.push_back(encode(kPrompts[static_cast<size_t>(i)]));
  auto squeezed = eng->generate(prompts, greedy(24));
  auto roomy = make_engine();
  auto expected = roomy->generate(prompts, greedy(24));
  for (size_t i = 0; i < prompts.size(); ++i) CHECK(squeezed[i].tokens == expected[i].tokens);
  CHECK(eng->blocks().n_used() == 0);
}

TEST_CASE("a cancelled request frees its KV blocks", "[engine][slow]") {
  auto eng = make_engine();
  auto id = eng->submit(encode(kPrompts[2]), greedy(100));
  eng->step();
  CHECK(eng->blocks().n_used() > 0);
  REQUIRE(eng->cancel(id));
  bool saw_cancel = false;
  while (eng->has_work())
    for (auto& ev : eng->step()) saw_cancel |= ev.finished && ev.reason == finish_reason::cancelled;
  CHECK(saw_cancel);
  CHECK(eng->blocks().n_used() == 0);
}

TEST_CASE("the same seed gives the same sampled text, another seed another", "[engine][sampling][slow]") {
  auto eng = make_engine();
  sampling_params p;
  p.temperature = 1.0f;
  p.max_tokens = 24;
  p.ignore_eos = true;
  p.seed = 7;
  auto a = eng->generate({encode(kPrompts[2])}, p);
  auto b = eng->generate({encode(kPrompts[2])}, p);
  p.seed = 8;
  auto c = eng->generate({encode(kPrompts[2])}, p);
  CHECK(a[0].tokens == b[0].tokens);
  CHECK(a[0].tokens != c[0].tokens);
}

TEST_CASE("a stop string ends the text before it", "[engine][sampling][slow]") {
  auto eng = make_engine();
  auto plain = eng->generate({encode(kPrompts[0])}, greedy(16));
  REQUIRE(plain[0].text.size() > 4);
  auto p = greedy(16);
  p.stop = {plain[0].text.substr(3, 2)};
  auto stopped = eng->generate({encode(kPrompts[0])}, p);
  CHECK(stopped[0].reason == finish_reason::stop);
  CHECK(stopped[0].text == plain[0].text.substr(0, plain[0].text.find(p.stop[0])));
}

TEST_CASE("a prompt longer than the context is rejected with both numbers", "[engine][errors][slow]") {
  engine_config small;
  small.kv_tokens = 64;
  auto eng = make_engine(small);
  std::vector<int32_t> prompt(60, 42);
  auto p = greedy(10);
  REQUIRE_THROWS_WITH(eng->submit(prompt, p), Catch::Contains("60") && Catch::Contains("max_tokens"));
  REQUIRE_THROWS_WITH(eng->submit({}, p), Catch::Contains("empty"));
  REQUIRE_THROWS_WITH(eng->submit({1, 999999}, p), Catch::Contains("vocabulary"));
  p.temperature = -1.0f;
  REQUIRE_THROWS_WITH(eng->submit({1, 2}, p), Catch::Contains("temperature"));
}
