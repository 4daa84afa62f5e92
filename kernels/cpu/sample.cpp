// CPU logits processing: argmax and sampling per row. sample_host is also the host
// sampler's draw (runtime/engine/sampler.h), so the reference is the sampler itself.
#include "kernels/sample.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>

#include "kernels/base/rng.h"
#include "kernels/cpu/op_checks.h"

namespace troupe::kernels::cpu {
namespace {

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
int32_t draw(const float* x, int vocab, float x_max, const sample_row& p, sample_scratch& s) {
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
  const double target = static_cast<double>(uniform01(p.seed, p.token_index)) * z_keep;
  return key_id(keys[find_crossing(keys, kept, w.data(), target, false).index]);
}

/// The `n` highest raw logprobs, descending, ties by id.
std::vector<std::pair<int32_t, float>> top_logprobs(const float* x, int vocab, int n, double lse,
                                                     std::vector<rank_key>& keys) {
  n = std::min(n, vocab);
  keys.resize(vocab);
  for (int i = 0; i < vocab; ++i) keys[i] = make_key(x[i], i);
  std::partial_sort(keys.begin(), keys.begin() + n, keys.end());
  std::vector<std::pair<int32_t, float>> top;
  top.reserve(n);
  for (int i = 0; i < n; ++i) {
    const int32_t t = key_id(keys[i]);
    top.push_back({t, static_cast<float>(static_cast<double>(x[t]) - lse)});
  }
  return top;
}


/// Checks tokens i32 [m] and logits f32 [m, vocab] on the host.
void check(const char* op, tensor_view tokens, tensor_view logits) {
  require_host(op, "tokens", tokens, dtype::i32);
  require_host(op, "logits", logits);
  require_rank(op, "logits", logits, 2);
  require(logits.shape[1] > 0 && logits.shape[1] <= INT32_MAX, op,
          "logits " + logits.shape.str() + " needs a vocab in [1, 2^31)");
  require_shape(op, "tokens", tokens, shape_t{logits.shape[0]});
}

std::string show(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

/// Checks a row's sampling fields (the host sampler's validate() says the same).
void check_row(const sample_row& p) {
  const auto reject = [](const char* field, const char* rule, double got) {
    throw std::invalid_argument(std::string(field) + " must be " + rule + ", got " + show(got));
  };
  if (!(p.temperature >= 0.0f && p.temperature <= 100.0f)) reject("temperature", "in [0, 100]", p.temperature);
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f)) reject("top_p", "in (0, 1]", p.top_p);
  if (p.top_k < -1) reject("top_k", "-1 or 0 (off) or >= 1", p.top_k);
  if (!(p.min_p >= 0.0f && p.min_p <= 1.0f)) reject("min_p", "in [0, 1]", p.min_p);
}

}  // namespace

row_sample sample_host(const float* x, int vocab, const sample_row& p, int n_top,
                       sample_scratch& scratch) {
  check_row(p);
  if (vocab <= 0) throw std::invalid_argument("vocab must be >= 1, got " + std::to_string(vocab));
  for (int i = 0; i < vocab; ++i)
    if (std::isnan(x[i]) || x[i] == std::numeric_limits<float>::infinity())
      throw std::invalid_argument("logits[" + std::to_string(i) + "] must be finite or -inf, got " +
                                  show(x[i]));
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

  row_sample r;
  r.token = greedy ? best : draw(x, vocab, x_max, p, scratch);
  r.logprob = static_cast<float>(static_cast<double>(x[r.token]) - lse);
  if (n_top > 0) r.top = top_logprobs(x, vocab, n_top, lse, scratch.keys);
  return r;
}

void argmax(const op_context& ctx, tensor_view tokens, tensor_view logits) {
  check("argmax", tokens, logits);
  const int64_t m = logits.shape[0], vocab = logits.shape[1];
  for (int64_t r = 0; r < m; ++r) {
    const float* x = logits.f32() + r * vocab;
    int32_t best = 0;
    for (int64_t i = 1; i < vocab; ++i)
      if (x[i] > x[best]) best = static_cast<int32_t>(i);
    tokens.i32()[r] = best;
  }
}

void sample(const op_context& ctx, tensor_view tokens, tensor_view logits,
            const std::vector<sample_row>& rows) {
  const char* op = "sample";
  check(op, tokens, logits);
  require(static_cast<int64_t>(rows.size()) == logits.shape[0], op,
          std::to_string(rows.size()) + " parameter rows for logits " + logits.shape.str());
  const int64_t m = logits.shape[0];
  const int vocab = static_cast<int>(logits.shape[1]);
  sample_scratch scratch;
  for (int64_t r = 0; r < m; ++r) {
    try {
      tokens.i32()[r] = sample_host(logits.f32() + r * vocab, vocab, rows[static_cast<size_t>(r)], 0, scratch).token;
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument(std::string(op) + ": row " + std::to_string(r) + ": " + e.what());
    }
  }
}

}  // namespace troupe::kernels::cpu
