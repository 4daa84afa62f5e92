// Resuming a request after k emitted tokens (request migration): the engine continues
// with exactly the tokens and text an uninterrupted run gives, greedy and seeded, and
// stop strings that span the cut are handled as if nothing happened.
#include <catch2/catch.hpp>

#include "engine_fixture.h"

using namespace troupe;
using namespace troupe::test;

namespace {

/// A request's stream: tokens and the text of each event (the final event may carry text only).
struct stream {
  std::vector<int32_t> tokens;
  std::vector<std::string> texts;  ///< [events] text of each event, in order
  finish_reason reason = finish_reason::none;

  std::string text() const {
    std::string t;
    for (const auto& s : texts) t += s;
    return t;
  }
  /// The text the client had after the first `k` events.
  std::string text_after(size_t k) const {
    std::string t;
    for (size_t i = 0; i < k && i < texts.size(); ++i) t += texts[i];
    return t;
  }
};

std::vector<int32_t> story_prompt() {
  return shared_default_model()->tokenizer().encode("Tell me a long story about a dragon.", true, true);
}

stream run(engine& eng, const std::vector<int32_t>& prompt, const sampling_params& p, const resume_point& from = {}) {
  const seq_id id = eng.submit(prompt, p, from);
  stream s;
  while (eng.has_work())
    for (auto& ev : eng.step()) {
      if (ev.id != id) continue;
      if (ev.token >= 0) s.tokens.push_back(ev.token);
      s.texts.push_back(ev.text);
      if (ev.finished) s.reason = ev.reason;
    }
  return s;
}

std::vector<int32_t> first(const std::vector<int32_t>& v, size_t k) { return {v.begin(), v.begin() + static_cast<long>(k)}; }
std::vector<int32_t> after(const std::vector<int32_t>& v, size_t k) { return {v.begin() + static_cast<long>(k), v.end()}; }

/// Checks that resuming `full` after each k in `cuts` gives the rest of its tokens and text.
void check_resumes(const sampling_params& p, const std::vector<size_t>& cuts) {
  auto eng = make_engine();
  const auto prompt = story_prompt();
  const stream full = run(*eng, prompt, p);
  REQUIRE(full.tokens.size() == static_cast<size_t>(p.max_tokens));
  for (size_t k : cuts) {
    INFO("resumed after " << k << " tokens");
    const stream rest = run(*eng, prompt, p, resume_point{first(full.tokens, k)});
    CHECK(rest.tokens == after(full.tokens, k));
    CHECK(full.text_after(k) + rest.text() == full.text());
    CHECK(rest.reason == full.reason);
  }
}

}  // namespace

TEST_CASE("a greedy request resumed after k tokens gives the remaining tokens and text of an uninterrupted one",
          "[engine][resume][slow]") {
  check_resumes(greedy(24), {1, 7, 16, 23});
}

TEST_CASE("a seeded top-p request with penalties resumed after k tokens gives the uninterrupted tokens and text",
          "[engine][resume][slow]") {
  sampling_params p;
  p.temperature = 0.8f;
  p.top_p = 0.9f;
  p.seed = 1234;
  p.repetition_penalty = 1.1f;
  p.presence_penalty = 0.3f;
  p.frequency_penalty = 0.2f;
  p.max_tokens = 24;
  p.ignore_eos = true;
  check_resumes(p, {1, 9, 20});
}

TEST_CASE("a stop string that spans the cut ends a resumed request where it ends an uninterrupted one",
          "[engine][resume][slow]") {
  auto eng = make_engine();
  const auto prompt = story_prompt();
  const stream plain = run(*eng, prompt, greedy(24));
  // A cut after k tokens whose text ends with at least 2 characters and is followed by 3 more.
  size_t k = 6;
  while (k + 1 < plain.texts.size() && (plain.text_after(k).size() < 2 || plain.text().size() < plain.text_after(k).size() + 3)) ++k;
  const std::string before = plain.text_after(k);
  REQUIRE(plain.text().size() >= before.size() + 3);
  const std::string spanning = before.substr(before.size() - 2) + plain.text().substr(before.size(), 3);
  INFO("cut after " << k << " tokens, stop string '" << spanning << "'");

  SECTION("the stop string is found across the cut and never sent") {
    sampling_params p = greedy(24);
    p.stop = {spanning};
    const stream full = run(*eng, prompt, p);
    REQUIRE(full.reason == finish_reason::stop);
    REQUIRE(full.tokens.size() > k);
    const stream rest = run(*eng, prompt, p, resume_point{first(full.tokens, k)});
    CHECK(rest.tokens == after(full.tokens, k));
    CHECK(rest.reason == finish_reason::stop);
    CHECK(full.text_after(k) + rest.text() == full.text());
    CHECK((full.text_after(k) + rest.text()).find(spanning) == std::string::npos);
  }
  SECTION("text held back as a possible stop string is sent once it turns out not to be one") {
    sampling_params p = greedy(24);
    p.stop = {before.substr(before.size() - 2) + "\x01never"};
    const stream full = run(*eng, prompt, p);
    REQUIRE(full.tokens == plain.tokens);
    CHECK(full.text_after(k) != before);  // the last 2 characters were held back at the cut
    const stream rest = run(*eng, prompt, p, resume_point{first(full.tokens, k)});
    CHECK(rest.tokens == after(full.tokens, k));
    CHECK(full.text_after(k) + rest.text() == plain.text());
  }
}

TEST_CASE("a resumed request is rejected when an emitted token is outside the vocabulary or nothing is left",
          "[engine][resume]") {
  auto eng = make_engine();
  const auto prompt = story_prompt();
  try {
    eng->submit(prompt, greedy(8), resume_point{{5, 49152}});
    FAIL("an emitted token outside the vocabulary was accepted");
  } catch (const std::invalid_argument& e) {
    CHECK(std::string(e.what()).find("emitted token 1 has id 49152") != std::string::npos);
  }
  try {
    eng->submit(prompt, greedy(2), resume_point{{5, 6}});
    FAIL("a request with nothing left to generate was accepted");
  } catch (const std::invalid_argument& e) {
    CHECK(std::string(e.what()).find("max_tokens is 2") != std::string::npos);
  }
  CHECK_FALSE(eng->has_work());
}
