#include "parallel/partition.h"

#include <algorithm>
#include <limits>
#include <string>
#include <tuple>
#include <utility>

namespace troupe::parallel {

namespace {

std::string str(int64_t v) { return std::to_string(v); }

/// Parameters a stage carries besides its layers.
struct stage_extras {
  int64_t first = 0;  ///< token embeddings
  int64_t last = 0;   ///< final norm + output projection
};

/// Parameters of a stage `s` (of `n_stages`) holding `n` layers.
int64_t stage_cost(const stage_extras& x, int64_t per_layer, int s, int n_stages, int n) {
  int64_t cost = per_layer * n;
  if (s == 0) cost += x.first;
  if (s == n_stages - 1) cost += x.last;
  return cost;
}

/// The smallest possible weight of the heaviest stage (contiguous split, each stage >= 1 layer).
int64_t min_max_cost(const stage_extras& x, int64_t per_layer, int n_layers, int n_stages) {
  constexpr int64_t inf = std::numeric_limits<int64_t>::max();
  // best[k]: lightest heaviest stage over the stages so far covering the first k layers.
  std::vector<int64_t> best(static_cast<size_t>(n_layers) + 1, inf), next(best.size());
  best[0] = 0;
  for (int s = 0; s < n_stages; ++s) {
    std::fill(next.begin(), next.end(), inf);
    for (int k = 0; k < n_layers; ++k) {
      if (best[static_cast<size_t>(k)] == inf) continue;
      for (int n = 1; k + n <= n_layers; ++n) {
        const int64_t m = std::max(best[static_cast<size_t>(k)], stage_cost(x, per_layer, s, n_stages, n));
        next[static_cast<size_t>(k + n)] = std::min(next[static_cast<size_t>(k + n)], m);
      }
    }
    best.swap(next);
  }
  return best[static_cast<size_t>(n_layers)];
}

/// Layer counts per stage: every stage within `bound`, smallest sum of squared stage weights.
std::vector<int> spread_under(const stage_extras& x, int64_t per_layer, int n_layers, int n_stages,
                              int64_t bound) {
  constexpr double inf = std::numeric_limits<double>::infinity();
  const size_t width = static_cast<size_t>(n_layers) + 1;
  std::vector<double> best(width, inf), next(width);
  std::vector<std::vector<int>> choice(static_cast<size_t>(n_stages), std::vector<int>(width, 0));
  best[0] = 0;
  for (int s = 0; s < n_stages; ++s) {
    std::fill(next.begin(), next.end(), inf);
    for (int k = 0; k < n_layers; ++k) {
      if (best[static_cast<size_t>(k)] == inf) continue;
      for (int n = 1; k + n <= n_layers; ++n) {
        const int64_t cost = stage_cost(x, per_layer, s, n_stages, n);
        if (cost > bound) break;
        const double v = best[static_cast<size_t>(k)] + static_cast<double>(cost) * static_cast<double>(cost);
        if (v < next[static_cast<size_t>(k + n)]) {
          next[static_cast<size_t>(k + n)] = v;
          choice[static_cast<size_t>(s)][static_cast<size_t>(k + n)] = n;
        }
      }
    }
    best.swap(next);
  }
  std::vector<int> counts(static_cast<size_t>(n_stages));
  int k = n_layers;
  for (int s = n_stages - 1; s >= 0; --s) {
    counts[static_cast<size_t>(s)] = choice[static_cast<size_t>(s)][static_cast<size_t>(k)];
    k -= counts[static_cast<size_t>(s)];
  }
  return counts;
}

void check_override(const std::vector<int>& counts, int n_layers, int n_stages) {
  if (static_cast<int64_t>(counts.size()) != n_stages)
    throw partition_error("layers_per_stage has " + str(static_cast<int64_t>(counts.size())) + " entries for " +
                          str(n_stages) + " pipeline stages");
  int64_t sum = 0;
  for (size_t s = 0; s < counts.size(); ++s) {
    if (counts[s] < 1)
      throw partition_error("layers_per_stage[" + str(static_cast<int64_t>(s)) + "] is " + str(counts[s]) +
                            "; every pipeline stage needs at least one layer");
    sum += counts[s];
  }
  if (sum != n_layers)
    throw partition_error("layers_per_stage sums to " + str(sum) + " layers, but the model has " +
                          str(n_layers));
}

/// Rank `rank`'s contiguous share of `n` items split over `parts` (the first n % parts get one more).
std::pair<int, int> even_split(int n, int parts, int rank) {
  const int base = n / parts, extra = n % parts;
  const int begin = rank * base + std::min(rank, extra);
  return {begin, base + (rank < extra ? 1 : 0)};
}

/// Checks tp and rank against the model; throws partition_error naming the numbers.
void check_tensor_request(const model_shape& c, int tp, int rank, bool allow_uneven) {
  if (tp < 1) throw partition_error("tensor parallel size must be at least 1, got " + str(tp));
  if (rank < 0 || rank >= tp)
    throw partition_error("tensor rank " + str(rank) + " is outside [0, " + str(tp) + ")");
  if (c.n_heads < tp)
    throw partition_error("tensor " + str(tp) + " exceeds the " + str(c.n_heads) +
                          " attention heads; every rank needs at least one head");
  if (c.ffn < tp)
    throw partition_error("tensor " + str(tp) + " exceeds the " + str(c.ffn) + " MLP columns");
  if (c.n_kv_heads < 1 || c.n_heads % c.n_kv_heads != 0)
    throw partition_error("the " + str(c.n_kv_heads) + " kv heads do not divide the " + str(c.n_heads) +
                          " attention heads");
  if (allow_uneven) return;
  if (c.n_heads % tp != 0) {
    const int more = (c.n_heads + tp - 1) / tp, less = c.n_heads / tp;
    throw partition_error("tensor " + str(tp) + " does not divide the " + str(c.n_heads) +
                          " attention heads of '" + c.name + "'; set parallel.allow_uneven_heads to split them " +
                          str(more) + "/" + str(less) + " per rank, or pick a tensor size that divides " +
                          str(c.n_heads));
  }
  if (c.n_kv_heads % tp != 0 && tp % c.n_kv_heads != 0)
    throw partition_error("tensor " + str(tp) + " neither divides nor is a multiple of the " + str(c.n_kv_heads) +
                          " kv heads of '" + c.name +
                          "'; set parallel.allow_uneven_heads to store kv heads that straddle two ranks on both");
}

}  // namespace

int64_t layer_params(const model_shape& c) {
  const int64_t h = c.hidden, q = int64_t{c.n_heads} * c.head_dim, kv = int64_t{c.n_kv_heads} * c.head_dim;
  int64_t n = 2 * h;                 // attn_norm, ffn_norm
  n += q * h + 2 * kv * h + h * q;   // wq, wk, wv, wo
  if (c.attn_bias) n += q + 2 * kv;  // bq, bk, bv
  n += 3 * int64_t{c.ffn} * h;       // w_gate, w_up, w_down
  return n;
}

std::vector<layer_range> plan_pipeline(const model_shape& c, int n_stages, const std::vector<int>& layers_per_stage) {
  if (n_stages < 1) throw partition_error("pipeline stage count must be at least 1, got " + str(n_stages));
  if (n_stages > c.n_layers)
    throw partition_error("cannot split the " + str(c.n_layers) + " layers of '" + c.name + "' into " +
                          str(n_stages) + " pipeline stages; every stage needs at least one layer");
  std::vector<int> counts = layers_per_stage;
  if (!counts.empty()) {
    check_override(counts, c.n_layers, n_stages);
  } else {
    const stage_extras x{int64_t{c.vocab} * c.hidden, int64_t{c.hidden} + int64_t{c.vocab} * c.hidden};
    const int64_t per_layer = layer_params(c);
    const int64_t bound = min_max_cost(x, per_layer, c.n_layers, n_stages);
    counts = spread_under(x, per_layer, c.n_layers, n_stages, bound);
  }
  std::vector<layer_range> plan;
  int begin = 0;
  for (int n : counts) {
    plan.push_back({begin, begin + n});
    begin += n;
  }
  return plan;
}

tensor_slice plan_tensor(const model_shape& c, int tp, int rank, bool allow_uneven) {
  check_tensor_request(c, tp, rank, allow_uneven);
  tensor_slice s;
  s.rank = rank;
  s.size = tp;
  s.kv_group = c.n_heads / c.n_kv_heads;
  std::tie(s.head_begin, s.n_heads) = even_split(c.n_heads, tp, rank);
  const int head_last = s.head_begin + s.n_heads - 1;
  s.kv_head_begin = s.head_begin / s.kv_group;
  s.n_kv_heads = head_last / s.kv_group - s.kv_head_begin + 1;
  std::tie(s.ffn_begin, s.ffn_size) = even_split(c.ffn, tp, rank);
  return s;
}

}  // namespace troupe::parallel
