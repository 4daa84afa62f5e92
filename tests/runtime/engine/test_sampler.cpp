#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <numeric>
#include <random>
#include <set>
#include <stdexcept>

#include "kernels/base/rng.h"
#include "runtime/engine/sampler.h"

using troupe::sample;
using troupe::sampling_params;

namespace {

const std::vector<int32_t> no_history;

sampling_params greedy() {
  sampling_params p;
  p.temperature = 0.0f;
  return p;
}

std::vector<float> random_logits(int vocab, uint32_t seed, float scale = 3.0f) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> x(vocab);
  for (float& v : x) v = dist(gen);
  return x;
}

/// softmax(x / t) in double.
std::vector<double> softmax(const std::vector<float>& x, double t = 1.0) {
  const double m = *std::max_element(x.begin(), x.end());
  std::vector<double> p(x.size());
  double z = 0.0;
  for (size_t i = 0; i < x.size(); ++i) z += p[i] = std::exp((x[i] - m) / t);
  for (double& v : p) v /= z;
  return p;
}

/// Straightforward reference of the sampling rule: full sort, cut, renormalize, walk.
class reference_sampler {
 public:
  reference_sampler(const std::vector<float>& x, const sampling_params& p) : p_(p) {
    const int vocab = static_cast<int>(x.size());
    order_.resize(vocab);
    std::iota(order_.begin(), order_.end(), 0);
    std::sort(order_.begin(), order_.end(),
              [&](int32_t a, int32_t b) { return x[a] > x[b] || (x[a] == x[b] && a < b); });
    const float x_max = x[order_[0]];
    w_.resize(vocab);
    for (int i = 0; i < vocab; ++i) w_[i] = std::exp((x[order_[i]] - x_max) / p.temperature);
    keep_ = (p.top_k > 0 && p.top_k < vocab) ? p.top_k : vocab;
    const double z = std::accumulate(w_.begin(), w_.begin() + keep_, 0.0);
    if (p.top_p < 1.0f) {
      double cum = 0.0;
      for (size_t i = 0; i < keep_; ++i)
        if ((cum += w_[i]) >= p.top_p * z) {
          keep_ = i + 1;
          break;
        }
    }
    while (keep_ > 1 && (w_[keep_ - 1] < p.min_p || w_[keep_ - 1] == 0.0)) --keep_;
    z_keep_ = std::accumulate(w_.begin(), w_.begin() + keep_, 0.0);
  }

  /// The token drawn for `index`.
  int32_t draw(uint64_t index) const {
    const double target = troupe::uniform01(p_.seed, index) * z_keep_;
    double cum = 0.0;
    for (size_t i = 0; i < keep_; ++i)
      if (target < (cum += w_[i])) return order_[i];
    return order_[keep_ - 1];
  }

 private:
  sampling_params p_;
  std::vector<int32_t> order_;  // [vocab] ids by descending logit, ties by id
  std::vector<double> w_;       // [vocab] exp((logit - max) / temperature) in that order
  size_t keep_ = 0;
  double z_keep_ = 0.0;
};

}  // namespace

TEST_CASE("default sampling parameters are valid", "[sampler]") {
  REQUIRE_NOTHROW(troupe::validate(sampling_params{}));
  sampling_params p;
  p.temperature = 0.0f;
  p.top_k = -1;
  p.min_p = 1.0f;
  p.logprobs = 20;
  p.stop = std::vector<std::string>(16, "x");
  p.stop_token_ids = {0, 2};
  REQUIRE_NOTHROW(troupe::validate(p));
}

TEST_CASE("every out-of-range sampling field is rejected with its name and range", "[sampler]") {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  struct bad_case {
    std::function<void(sampling_params&)> spoil;
    std::string message;
  };
  const std::vector<bad_case> cases = {
      {[](sampling_params& p) { p.temperature = -1; }, "temperature must be in [0, 100], got -1"},
      {[](sampling_params& p) { p.temperature = 101; }, "temperature must be in [0, 100], got 101"},
      {[&](sampling_params& p) { p.temperature = nan; }, "temperature must be in [0, 100], got nan"},
      {[](sampling_params& p) { p.top_p = 0; }, "top_p must be in (0, 1], got 0"},
      {[](sampling_params& p) { p.top_p = 1.5f; }, "top_p must be in (0, 1], got 1.5"},
      {[](sampling_params& p) { p.top_k = -2; }, "top_k must be -1 or 0 (off) or >= 1, got -2"},
      {[](sampling_params& p) { p.min_p = -0.5f; }, "min_p must be in [0, 1], got -0.5"},
      {[](sampling_params& p) { p.min_p = 2; }, "min_p must be in [0, 1], got 2"},
      {[](sampling_params& p) { p.repetition_penalty = 0; }, "repetition_penalty must be in (0, inf), got 0"},
      {[](sampling_params& p) { p.repetition_penalty = std::numeric_limits<float>::infinity(); },
       "repetition_penalty must be in (0, inf), got inf"},
      {[](sampling_params& p) { p.frequency_penalty = 2.5f; }, "frequency_penalty must be in [-2, 2], got 2.5"},
      {[](sampling_params& p) { p.frequency_penalty = -3; }, "frequency_penalty must be in [-2, 2], got -3"},
      {[](sampling_params& p) { p.presence_penalty = -2.5f; }, "presence_penalty must be in [-2, 2], got -2.5"},
      {[](sampling_params& p) { p.logprobs = 21; }, "logprobs must be in [0, 20], got 21"},
      {[](sampling_params& p) { p.logprobs = -1; }, "logprobs must be in [0, 20], got -1"},
      {[](sampling_params& p) { p.max_tokens = 0; }, "max_tokens must be >= 1, got 0"},
      {[](sampling_params& p) { p.stop = std::vector<std::string>(17, "x"); },
       "stop must be at most 16 strings, got 17 strings"},
      {[](sampling_params& p) { p.stop = {"a", ""}; }, "stop[1] must be a non-empty string, got \"\""},
      {[](sampling_params& p) { p.stop_token_ids = {5, -3}; }, "stop_token_ids[1] must be >= 0, got -3"},
  };
  for (const bad_case& c : cases) {
    sampling_params p;
    c.spoil(p);
    CHECK_THROWS_MATCHES(troupe::validate(p), std::invalid_argument, Catch::Message(c.message));
  }
}

TEST_CASE("sample validates its parameters, history and logits", "[sampler]") {
  const std::vector<float> x = {0.0f, 1.0f, 2.0f};
  sampling_params bad;
  bad.top_p = 0.0f;
  CHECK_THROWS_WITH(sample(x.data(), 3, bad, no_history, 0, 0), Catch::Contains("top_p"));
  CHECK_THROWS_WITH(sample(x.data(), 0, greedy(), no_history, 0, 0), Catch::Contains("vocab"));
  CHECK_THROWS_WITH(sample(nullptr, 3, greedy(), no_history, 0, 0), Catch::Contains("logits"));
  CHECK_THROWS_WITH(sample(x.data(), 3, greedy(), {0, 1}, 3, 0),
                    Catch::Contains("n_prompt must be in [0, 2]"));
  CHECK_THROWS_WITH(sample(x.data(), 3, greedy(), {0, 3}, 1, 0),
                    Catch::Contains("history[1] must be a token id in [0, 3), got 3"));
  CHECK_THROWS_WITH(sample(x.data(), 3, greedy(), {-1}, 1, 0), Catch::Contains("history[0]"));
  const std::vector<float> with_nan = {0.0f, std::numeric_limits<float>::quiet_NaN(), 1.0f};
  CHECK_THROWS_WITH(sample(with_nan.data(), 3, greedy(), no_history, 0, 0), Catch::Contains("logits[1]"));
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<float> with_inf = {0.0f, 1.0f, inf};
  CHECK_THROWS_WITH(sample(with_inf.data(), 3, greedy(), no_history, 0, 0), Catch::Contains("logits[2]"));
  const std::vector<float> all_masked = {-inf, -inf};
  CHECK_THROWS_WITH(sample(all_masked.data(), 2, sampling_params{}, no_history, 0, 0),
                    Catch::Contains("all -inf"));
}

TEST_CASE("greedy sampling returns the argmax, ties going to the lowest id", "[sampler]") {
  const std::vector<float> x = random_logits(50000, 1);
  const auto best = std::max_element(x.begin(), x.end()) - x.begin();
  const auto r = sample(x.data(), 50000, greedy(), no_history, 0, 0);
  CHECK(r.token == best);
  CHECK(r.logprob == Approx(std::log(softmax(x)[best])).margin(1e-5));
  sampling_params tiny;
  for (float t : {1e-6f, 1e-40f}) {
    tiny.temperature = t;  // below greedy_temperature: greedy, not an overflow
    CHECK(sample(x.data(), 50000, tiny, no_history, 0, 3).token == best);
  }
  const std::vector<float> tied = {1.0f, 3.0f, -2.0f, 3.0f};
  CHECK(sample(tied.data(), 4, greedy(), no_history, 0, 0).token == 1);
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<float> masked = {-inf, -inf, -5.0f};
  CHECK(sample(masked.data(), 3, greedy(), no_history, 0, 0).token == 2);
}

TEST_CASE("the same seed and token index always draw the same token", "[sampler]") {
  const std::vector<float> x = random_logits(1000, 2, 0.5f);
  sampling_params p;
  p.seed = 99;
  troupe::sampler_scratch scratch;
  for (uint64_t i = 0; i < 50; ++i) {
    const int32_t first = sample(x.data(), 1000, p, no_history, 0, i).token;
    CHECK(sample(x.data(), 1000, p, no_history, 0, i).token == first);
    CHECK(sample(x.data(), 1000, p, no_history, 0, i, scratch).token == first);
  }
}

TEST_CASE("different seeds draw different tokens", "[sampler]") {
  const std::vector<float> x(1000, 0.0f);  // uniform over 1000 tokens
  std::set<int32_t> drawn;
  sampling_params p;
  for (uint64_t seed = 0; seed < 200; ++seed) {
    p.seed = seed;
    drawn.insert(sample(x.data(), 1000, p, no_history, 0, 7).token);
  }
  CHECK(drawn.size() > 150);  // 200 draws from 1000 equally likely tokens: ~181 distinct
}

TEST_CASE("draws at temperature 1 follow the softmax distribution", "[sampler]") {
  const std::vector<float> x = {2.0f, 1.0f, 0.5f, 0.0f, -0.5f, -1.0f, 1.5f, -2.0f};
  const int vocab = static_cast<int>(x.size());
  const std::vector<double> prob = softmax(x);
  constexpr int draws = 20000;
  std::vector<int> count(vocab, 0);
  sampling_params p;
  p.seed = 2024;
  for (int i = 0; i < draws; ++i) ++count[sample(x.data(), vocab, p, no_history, 0, i).token];
  double chi2 = 0.0;
  for (int t = 0; t < vocab; ++t) {
    const double expected = prob[t] * draws;
    chi2 += (count[t] - expected) * (count[t] - expected) / expected;
  }
  CHECK(chi2 < 24.32);  // 7 degrees of freedom, p = 0.001
}

TEST_CASE("temperature sharpens and flattens the distribution", "[sampler]") {
  const std::vector<float> x = {1.0f, 0.0f};
  for (float t : {0.5f, 2.0f}) {
    sampling_params p;
    p.temperature = t;
    p.seed = 5;
    int zeros = 0;
    for (int i = 0; i < 10000; ++i) zeros += sample(x.data(), 2, p, no_history, 0, i).token == 0;
    CHECK(zeros / 10000.0 == Approx(softmax(x, t)[0]).margin(0.02));
  }
}

TEST_CASE("top-k never returns a token outside the k best", "[sampler]") {
  const int vocab = 5000;
  const std::vector<float> x = random_logits(vocab, 3, 0.3f);
  std::vector<int32_t> order(vocab);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return x[a] > x[b]; });
  const std::set<int32_t> top5(order.begin(), order.begin() + 5);
  sampling_params p;
  p.top_k = 5;
  std::set<int32_t> seen;
  for (int i = 0; i < 2000; ++i) {
    const int32_t t = sample(x.data(), vocab, p, no_history, 0, i).token;
    REQUIRE(top5.count(t) == 1);
    seen.insert(t);
  }
  CHECK(seen.size() == 5);
  p.top_k = 1;
  CHECK(sample(x.data(), vocab, p, no_history, 0, 0).token == order[0]);
}

TEST_CASE("top-p keeps the smallest set reaching the mass, and a tiny top-p is greedy", "[sampler]") {
  const int vocab = 30000;
  const std::vector<float> x = random_logits(vocab, 4);
  const auto best = std::max_element(x.begin(), x.end()) - x.begin();
  sampling_params p;
  p.top_p = 1e-6f;
  for (int i = 0; i < 100; ++i) REQUIRE(sample(x.data(), vocab, p, no_history, 0, i).token == best);

  const std::vector<float> y = {std::log(0.5f), std::log(0.3f), std::log(0.15f), std::log(0.05f)};
  p.top_p = 0.7f;  // {0.5, 0.3} reaches 0.7: tokens 2 and 3 are cut, then 0.5/0.8 vs 0.3/0.8
  int count[4] = {};
  for (int i = 0; i < 10000; ++i) ++count[sample(y.data(), 4, p, no_history, 0, i).token];
  CHECK(count[2] == 0);
  CHECK(count[3] == 0);
  CHECK(count[0] / 10000.0 == Approx(0.625).margin(0.02));
}

TEST_CASE("min-p drops tokens below a fraction of the best probability", "[sampler]") {
  const std::vector<float> y = {std::log(0.5f), std::log(0.3f), std::log(0.15f), std::log(0.05f)};
  sampling_params p;
  p.min_p = 0.4f;  // threshold 0.2: keeps 0.5 and 0.3
  int count[4] = {};
  for (int i = 0; i < 10000; ++i) ++count[sample(y.data(), 4, p, no_history, 0, i).token];
  CHECK(count[2] == 0);
  CHECK(count[3] == 0);
  CHECK(count[0] / 10000.0 == Approx(0.625).margin(0.02));
  p.min_p = 1.0f;
  for (int i = 0; i < 100; ++i) REQUIRE(sample(y.data(), 4, p, no_history, 0, i).token == 0);
}

TEST_CASE("sampling matches a full-sort reference for every truncation mix", "[sampler]") {
  const int vocab = 20000;
  const std::vector<float> x = random_logits(vocab, 6, 2.0f);
  struct mix { float temperature, top_p; int top_k; float min_p; };
  const mix mixes[] = {{1.0f, 1.0f, 0, 0.0f},  {0.7f, 0.9f, 0, 0.0f},  {1.3f, 1.0f, 50, 0.0f},
                       {1.0f, 0.5f, 40, 0.05f}, {0.8f, 1.0f, 0, 0.02f}, {2.0f, 0.95f, 1000, 0.0f},
                       {1.0f, 1.0f, vocab, 0.0f}};
  for (const mix& m : mixes) {
    sampling_params p;
    p.temperature = m.temperature;
    p.top_p = m.top_p;
    p.top_k = m.top_k;
    p.min_p = m.min_p;
    p.seed = 77;
    const reference_sampler reference(x, p);
    for (int i = 0; i < 300; ++i)
      REQUIRE(sample(x.data(), vocab, p, no_history, 0, i).token == reference.draw(i));
  }
}

TEST_CASE("a repeated token loses to a fresh one under each penalty", "[sampler]") {
  const std::vector<float> x = {2.0f, 1.9f, -1.0f};
  sampling_params p = greedy();
  const std::vector<int32_t> history = {0, 0};  // token 0 in the prompt, then generated
  p.repetition_penalty = 1.2f;
  CHECK(sample(x.data(), 3, p, history, 1, 0).token == 1);
  p = greedy();
  p.frequency_penalty = 0.2f;
  CHECK(sample(x.data(), 3, p, history, 1, 0).token == 1);
  p = greedy();
  p.presence_penalty = 0.2f;
  CHECK(sample(x.data(), 3, p, history, 1, 0).token == 1);
  p.presence_penalty = 0.2f;
  CHECK(sample(x.data(), 3, p, history, 2, 0).token == 0);  // presence ignores prompt tokens
}

TEST_CASE("penalties change exactly the logits of the tokens they apply to", "[sampler]") {
  std::vector<float> x = {2.0f, -2.0f, 1.0f, 3.0f, 0.5f};
  sampling_params p;
  p.repetition_penalty = 2.0f;
  p.frequency_penalty = 0.5f;
  p.presence_penalty = 0.25f;
  // prompt: 0, 1; output: 2, 2, 1
  troupe::apply_penalties(x.data(), 5, p, {0, 1, 2, 2, 1}, 2);
  CHECK(x[0] == Approx(1.0f));                      // prompt only: 2 / 2
  CHECK(x[1] == Approx(-4.0f - 0.5f - 0.25f));      // -2 * 2, then once in the output
  CHECK(x[2] == Approx(0.5f - 2 * 0.5f - 0.25f));  // 1 / 2, then twice in the output
  CHECK(x[3] == 3.0f);
  CHECK(x[4] == 0.5f);
}

TEST_CASE("logprobs are the raw log-softmax, and the top list is sorted", "[sampler]") {
  const int vocab = 1000;
  const std::vector<float> x = random_logits(vocab, 8);
  sampling_params p;
  p.temperature = 0.5f;
  p.top_k = 3;
  p.logprobs = 20;
  const auto r = sample(x.data(), vocab, p, no_history, 0, 11);
  const std::vector<double> prob = softmax(x);  // temperature and top-k do not change logprobs
  CHECK(r.logprob == Approx(std::log(prob[r.token])).margin(1e-5));
  REQUIRE(r.top.size() == 20);
  double total = 0.0;
  for (int t = 0; t < vocab; ++t) total += prob[t];
  CHECK(total == Approx(1.0).margin(1e-9));
  for (size_t i = 0; i < r.top.size(); ++i) {
    CHECK(r.top[i].logprob == Approx(std::log(prob[r.top[i].token])).margin(1e-5));
    if (i > 0) CHECK(r.top[i].logprob <= r.top[i - 1].logprob);
  }
  CHECK(r.top[0].token == std::max_element(x.begin(), x.end()) - x.begin());
  p.logprobs = 0;
  CHECK(sample(x.data(), vocab, p, no_history, 0, 11).top.empty());
}

TEST_CASE("exp of every token's logprob sums to one", "[sampler]") {
  const int vocab = 20;
  const std::vector<float> x = random_logits(vocab, 9);
  sampling_params p = greedy();
  p.logprobs = 20;
  p.repetition_penalty = 1.5f;
  const auto r = sample(x.data(), vocab, p, {3, 4, 3}, 1, 0);
  REQUIRE(r.top.size() == 20);
  double total = 0.0;
  std::set<int32_t> tokens;
  for (const auto& t : r.top) {
    total += std::exp(static_cast<double>(t.logprob));
    tokens.insert(t.token);
  }
  CHECK(tokens.size() == 20);
  CHECK(total == Approx(1.0).margin(1e-5));
  CHECK(r.top[0].token == r.token);
  CHECK(r.top[0].logprob == r.logprob);
}

TEST_CASE("sampling does not modify the logits and reuses scratch across vocab sizes", "[sampler]") {
  std::vector<float> x = random_logits(150000, 10);
  const std::vector<float> copy = x;
  troupe::sampler_scratch scratch;
  sampling_params p;
  p.seed = 3;
  p.repetition_penalty = 1.3f;
  const int32_t big = sample(x.data(), 150000, p, {1, 2, 3}, 1, 4, scratch).token;
  CHECK(x == copy);
  CHECK(sample(x.data(), 100, p, {1}, 1, 0, scratch).token < 100);
  CHECK(sample(x.data(), 150000, p, {1, 2, 3}, 1, 4, scratch).token == big);
  CHECK(sample(x.data(), 150000, p, {1, 2, 3}, 1, 4).token == big);
}
