#include "runtime/sampler.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <sstream>
#include <stdexcept>

#include "runtime/rng.h"

namespace troupe {

namespace {

std::string show(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

[[noreturn]] void reject(const std::string& field, const std::string& rule, const std::string& got) {
  throw std::invalid_argument(field + " must be " + rule + ", got " + got);
}

/// True when lo <= v <= hi (false for NaN).
bool in_closed(float v, float lo, float hi) { return v >= lo && v <= hi; }

/// Checks everything sample() takes besides the parameters.
void check_inputs(const float* logits, int vocab, const std::vector<int32_t>& history,
                  int n_prompt) {
  if (vocab <= 0) reject("vocab", ">= 1", std::to_string(vocab));
  if (logits == nullptr) throw std::invalid_argument("logits must not be null");
  if (n_prompt < 0 || static_cast<size_t>(n_prompt) > history.size())
    reject("n_prompt", "in [0, " + std::to_string(history.size()) + "] (the history length)",
           std::to_string(n_prompt));
  for (size_t i = 0; i < history.size(); ++i)
    if (history[i] < 0 || history[i] >= vocab)
      reject("history[" + std::to_string(i) + "]", "a token id in [0, " + std::to_string(vocab) + ")",
             std::to_string(history[i]));
}

/// Applies the penalties without re-checking the inputs (already checked by the caller).
void penalize(float* x, const sampling_params& p, const std::vector<int32_t>& history,
              int n_prompt) {
  std::vector<int32_t> toks;
  if (p.repetition_penalty != 1.0f) {
    toks.assign(history.begin(), history.end());
    std::sort(toks.begin(), toks.end());
    toks.erase(std::unique(toks.begin(), toks.end()), toks.end());
    for (int32_t t : toks) x[t] = x[t] > 0.0f ? x[t] / p.repetition_penalty : x[t] * p.repetition_penalty;
  }
  if (p.frequency_penalty != 0.0f || p.presence_penalty != 0.0f) {
    toks.assign(history.begin() + n_prompt, history.end());
    std::sort(toks.begin(), toks.end());
    for (size_t i = 0; i < toks.size();) {
      size_t j = i;
      while (j < toks.size() && toks[j] == toks[i]) ++j;
      const float count = static_cast<float>(j - i);
      x[toks[i]] -= p.frequency_penalty * count + p.presence_penalty;
      i = j;
    }
  }
}

/// A candidate as one integer whose ascending order is descending logit, ties by ascending id:
/// the high word is the logit's bits mapped to an order-reversed unsigned, the low word the id.
using rank_key = uint64_t;

rank_key make_key(float logit, int32_t id) {
  if (logit == 0.0f) logit = 0.0f;  // -0 and +0 are the same logit
  uint32_t bits;
  std::memcpy(&bits, &logit, sizeof bits);
  const uint32_t ascending = (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
  return (static_cast<uint64_t>(~ascending) << 32) | static_cast<uint32_t>(id);
}

int32_t key_id(rank_key k) { return static_cast<int32_t>(k & 0xffffffffu); }

/// Where a running mass crosses a target in descending-probability order.
struct crossing {
  size_t index;  // position in keys (keys[0, index] are the index + 1 best candidates)
  double mass;   // cumulative weight of keys[0, index]
};

/// Finds the first position, in descending-probability order, at which the cumulative weight
/// of keys[0, n) exceeds `target` (or reaches it when `inclusive`), without sorting them all:
/// a quickselect that recurses by mass instead of by count (expected O(n)). Afterwards
/// keys[0, index] hold the index + 1 best candidates. When the mass never crosses (rounding),
/// the last candidate in order is returned.
crossing find_crossing(std::vector<rank_key>& keys, size_t n, const float* w, double target,
                       bool inclusive) {
  const auto crosses = [&](double cum) { return inclusive ? cum >= target : cum > target; };
  constexpr size_t small = 64;
  size_t lo = 0, hi = n;
  double base = 0.0;  // weight of keys[0, lo), all better than keys[lo, hi)
  while (hi - lo > small) {
    // Median of three distinct keys: at least one candidate ranks below the pivot.
    const rank_key a = keys[lo], b = keys[lo + (hi - lo) / 2], c = keys[hi - 1];
    const rank_key pivot = std::max(std::min(a, b), std::min(std::max(a, b), c));
    const auto mid_it = std::partition(keys.begin() + lo, keys.begin() + hi,
                                       [pivot](rank_key k) { return k <= pivot; });
    const size_t mid = static_cast<size_t>(mid_it - keys.begin());
    double mass = 0.0;
    for (size_t i = lo; i < mid; ++i) mass += w[key_id(keys[i])];
    if (crosses(base + mass)) {
      hi = mid;
    } else {
      base += mass;
      lo = mid;
    }
  }
  std::sort(keys.begin() + lo, keys.begin() + hi);
  double cum = base;
  for (size_t i = lo; i < hi; ++i) {
    cum += w[key_id(keys[i])];
    if (crosses(cum)) return {i, cum};
  }
  return {hi - 1, cum};
}

/// Temperature, top-k, top-p, min-p and the inverse-CDF draw over the penalized logits x.
/// s.weights must hold exp(x - x_max) already when the temperature is 1.
int32_t draw(const float* x, int vocab, float x_max, const sampling_params& p,
             uint64_t token_index, sampler_scratch& s) {
  std::vector<float>& w = s.weights;
  const bool have_w = p.temperature == 1.0f;
  const float inv_t = 1.0f / p.temperature;
  std::vector<rank_key>& keys = s.keys;
  keys.clear();
  double z_norm = 0.0;  // mass that top-p is relative to: the top-k set, or the whole vocab
  if (p.top_k > 0 && p.top_k < vocab) {
    for (int i = 0; i < vocab; ++i) keys.push_back(make_key(x[i], i));
    std::nth_element(keys.begin(), keys.begin() + p.top_k, keys.end());
    keys.resize(p.top_k);
    for (rank_key k : keys) {
      const int32_t t = key_id(k);
      if (!have_w) w[t] = std::exp((x[t] - x_max) * inv_t);
      z_norm += w[t];
    }
  } else {
    for (int i = 0; i < vocab; ++i) {
      if (!have_w) w[i] = std::exp((x[i] - x_max) * inv_t);
      z_norm += w[i];
      if (w[i] > 0.0f) keys.push_back(make_key(x[i], i));
    }
  }
  // min-p keeps tokens with prob >= min_p * max prob, i.e. w >= min_p (the best token has
  // w == 1); zero-weight tokens can never be drawn and are dropped too. Both cut a suffix
  // of the descending order, so top-p's prefix masses are unchanged.
  double z_keep = 0.0;
  size_t kept = 0;
  for (rank_key k : keys) {
    const float wt = w[key_id(k)];
    if (wt > 0.0f && wt >= p.min_p) {
      keys[kept++] = k;
      z_keep += wt;
    }
  }
  if (p.top_p < 1.0f) {
    // Smallest prefix (by descending prob) whose mass reaches top_p; at least one token.
    const crossing cut = find_crossing(keys, kept, w.data(), p.top_p * z_norm, true);
    kept = cut.index + 1;
    z_keep = cut.mass;
  }
  const double target = static_cast<double>(uniform01(p.seed, token_index)) * z_keep;
  return key_id(keys[find_crossing(keys, kept, w.data(), target, false).index]);
}

/// The `n` highest raw logprobs, descending, ties by id.
std::vector<token_logprob> top_logprobs(const float* x, int vocab, int n, double lse,
                                        std::vector<rank_key>& keys) {
  n = std::min(n, vocab);
  keys.resize(vocab);
  for (int i = 0; i < vocab; ++i) keys[i] = make_key(x[i], i);
  std::partial_sort(keys.begin(), keys.begin() + n, keys.end());
  std::vector<token_logprob> top;
  top.reserve(n);
  for (int i = 0; i < n; ++i) {
    const int32_t t = key_id(keys[i]);
    top.push_back({t, static_cast<float>(static_cast<double>(x[t]) - lse)});
  }
  return top;
}

}  // namespace

void validate(const sampling_params& p) {
  if (!in_closed(p.temperature, 0.0f, 100.0f)) reject("temperature", "in [0, 100]", show(p.temperature));
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f)) reject("top_p", "in (0, 1]", show(p.top_p));
  if (p.top_k < -1) reject("top_k", "-1 or 0 (off) or >= 1", std::to_string(p.top_k));
  if (!in_closed(p.min_p, 0.0f, 1.0f)) reject("min_p", "in [0, 1]", show(p.min_p));
  if (!(p.repetition_penalty > 0.0f && std::isfinite(p.repetition_penalty)))
    reject("repetition_penalty", "in (0, inf)", show(p.repetition_penalty));
  if (!in_closed(p.frequency_penalty, -2.0f, 2.0f))
    reject("frequency_penalty", "in [-2, 2]", show(p.frequency_penalty));
  if (!in_closed(p.presence_penalty, -2.0f, 2.0f))
    reject("presence_penalty", "in [-2, 2]", show(p.presence_penalty));
  if (p.logprobs < 0 || p.logprobs > max_logprobs)
    reject("logprobs", "in [0, " + std::to_string(max_logprobs) + "]", std::to_string(p.logprobs));
  if (p.max_tokens < 1) reject("max_tokens", ">= 1", std::to_string(p.max_tokens));
  if (p.stop.size() > max_stop_strings)
    reject("stop", "at most " + std::to_string(max_stop_strings) + " strings",
           std::to_string(p.stop.size()) + " strings");
  for (size_t i = 0; i < p.stop.size(); ++i)
    if (p.stop[i].empty()) reject("stop[" + std::to_string(i) + "]", "a non-empty string", "\"\"");
  for (size_t i = 0; i < p.stop_token_ids.size(); ++i)
    if (p.stop_token_ids[i] < 0)
      reject("stop_token_ids[" + std::to_string(i) + "]", ">= 0", std::to_string(p.stop_token_ids[i]));
}

void apply_penalties(float* logits, int vocab, const sampling_params& p,
                     const std::vector<int32_t>& history, int n_prompt) {
  check_inputs(logits, vocab, history, n_prompt);
  penalize(logits, p, history, n_prompt);
}

sample_result sample(const float* logits, int vocab, const sampling_params& p,
                     const std::vector<int32_t>& history, int n_prompt, uint64_t token_index) {
  sampler_scratch scratch;
  return sample(logits, vocab, p, history, n_prompt, token_index, scratch);
}

sample_result sample(const float* logits, int vocab, const sampling_params& p,
                     const std::vector<int32_t>& history, int n_prompt, uint64_t token_index,
                     sampler_scratch& scratch) {
  validate(p);
  check_inputs(logits, vocab, history, n_prompt);
  for (int i = 0; i < vocab; ++i)
    if (std::isnan(logits[i]) || logits[i] == std::numeric_limits<float>::infinity())
      throw std::invalid_argument("logits[" + std::to_string(i) + "] must be finite or -inf, got " +
                                  show(logits[i]));
  std::vector<float>& x = scratch.logits;
  x.assign(logits, logits + vocab);
  penalize(x.data(), p, history, n_prompt);

  int32_t best = 0;  // argmax, ties -> lowest id
  for (int i = 1; i < vocab; ++i)
    if (x[i] > x[best]) best = i;
  const float x_max = x[best];
  if (x_max == -std::numeric_limits<float>::infinity())
    throw std::invalid_argument("logits are all -inf (after penalties): no token can be sampled");
  const bool greedy = p.temperature < greedy_temperature;
  double sum = 0.0;
  if (p.temperature == 1.0f) {  // the softmax weights are the sampling weights: keep them
    scratch.weights.resize(vocab);
    for (int i = 0; i < vocab; ++i) sum += scratch.weights[i] = std::exp(x[i] - x_max);
  } else {
    scratch.weights.resize(greedy ? 0 : vocab);
    for (int i = 0; i < vocab; ++i) sum += std::exp(x[i] - x_max);
  }
  const double lse = static_cast<double>(x_max) + std::log(sum);

  sample_result r;
  r.token = greedy ? best : draw(x.data(), vocab, x_max, p, token_index, scratch);
  r.logprob = static_cast<float>(static_cast<double>(x[r.token]) - lse);
  if (p.logprobs > 0) r.top = top_logprobs(x.data(), vocab, p.logprobs, lse, scratch.keys);
  return r;
}

}  // namespace troupe
