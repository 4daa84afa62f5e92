// Partition plans: layers to pipeline stages and heads / MLP columns to tensor ranks.
#include <catch2/catch.hpp>

#include <algorithm>
#include <string>
#include <vector>

#include "parallel/partition.h"

using namespace troupe;
using namespace troupe::parallel;
using Catch::Contains;

namespace {

model_shape shape(const std::string& name, int layers, int hidden, int heads, int kv_heads, int ffn, int vocab) {
  model_shape c;
  c.name = name;
  c.n_layers = layers;
  c.hidden = hidden;
  c.n_heads = heads;
  c.n_kv_heads = kv_heads;
  c.head_dim = hidden / heads;
  c.ffn = ffn;
  c.vocab = vocab;
  return c;
}

model_shape smollm2() { return shape("SmolLM2-135M", 30, 576, 9, 3, 1536, 49152); }
model_shape llama3_8b() { return shape("Llama-3-8B", 32, 4096, 32, 8, 14336, 128256); }

std::vector<int> sizes(const std::vector<layer_range>& plan) {
  std::vector<int> n;
  for (const auto& r : plan) n.push_back(r.size());
  return n;
}

/// Parameters stage `s` of `n` stages carries when it holds `layers` layers.
int64_t stage_weight(const model_shape& c, int s, int n, int layers) {
  int64_t w = layer_params(c) * layers;
  if (s == 0) w += int64_t{c.vocab} * c.hidden;
  if (s == n - 1) w += int64_t{c.vocab} * c.hidden + c.hidden;
  return w;
}

int64_t heaviest(const model_shape& c, const std::vector<int>& counts) {
  int64_t m = 0;
  for (size_t s = 0; s < counts.size(); ++s)
    m = std::max(m, stage_weight(c, static_cast<int>(s), static_cast<int>(counts.size()), counts[s]));
  return m;
}

void check_contiguous(const std::vector<layer_range>& plan, int n_layers) {
  REQUIRE_FALSE(plan.empty());
  CHECK(plan.front().begin == 0);
  CHECK(plan.back().end == n_layers);
  for (size_t s = 0; s + 1 < plan.size(); ++s) CHECK(plan[s].end == plan[s + 1].begin);
  for (const auto& r : plan) CHECK(r.size() >= 1);
}

}  // namespace

TEST_CASE("a SmolLM2 layer has the parameters of its norms, attention and MLP", "[partition]") {
  const int64_t h = 576;
  CHECK(layer_params(smollm2()) == 2 * h + 576 * h + 2 * 192 * h + h * 576 + 3 * 1536 * h);
  model_shape biased = smollm2();
  biased.attn_bias = true;
  CHECK(layer_params(biased) == layer_params(smollm2()) + 576 + 2 * 192);
}

TEST_CASE("SmolLM2 over 2 stages splits 15/15: embeddings and output projection weigh alike", "[partition]") {
  const auto c = smollm2();
  const auto plan = plan_pipeline(c, 2);
  check_contiguous(plan, 30);
  CHECK(sizes(plan) == std::vector<int>{15, 15});
  for (int first = 1; first < 30; ++first) CHECK(heaviest(c, sizes(plan)) <= heaviest(c, {first, 30 - first}));
}

TEST_CASE("SmolLM2 over 3 and 4 stages gives the embedding and output stages fewer layers", "[partition]") {
  const auto c = smollm2();
  const auto three = plan_pipeline(c, 3);
  check_contiguous(three, 30);
  CHECK(sizes(three) == std::vector<int>{8, 15, 7});
  CHECK(three[0].size() < three[1].size());
  for (int a = 1; a < 29; ++a)
    for (int b = 1; a + b < 30; ++b) CHECK(heaviest(c, sizes(three)) <= heaviest(c, {a, b, 30 - a - b}));
  const auto four = plan_pipeline(c, 4);
  check_contiguous(four, 30);
  CHECK(sizes(four) == std::vector<int>{4, 11, 11, 4});
}

TEST_CASE("one stage holds every layer and 30 stages hold one layer each", "[partition]") {
  const auto c = smollm2();
  CHECK(sizes(plan_pipeline(c, 1)) == std::vector<int>{30});
  const auto all = plan_pipeline(c, 30);
  check_contiguous(all, 30);
  CHECK(sizes(all) == std::vector<int>(30, 1));
}

TEST_CASE("Llama-3-8B over 2 and 4 stages is balanced by parameters", "[partition]") {
  const auto c = llama3_8b();
  CHECK(sizes(plan_pipeline(c, 2)) == std::vector<int>{16, 16});
  const auto four = plan_pipeline(c, 4);
  check_contiguous(four, 32);
  CHECK(four[0].size() < four[1].size());
  CHECK(four[3].size() < four[2].size());
}

TEST_CASE("a layers_per_stage override is honored as given", "[partition]") {
  const auto plan = plan_pipeline(smollm2(), 3, {10, 5, 15});
  REQUIRE(plan.size() == 3);
  CHECK(plan[0].begin == 0);
  CHECK(plan[0].end == 10);
  CHECK(plan[1].begin == 10);
  CHECK(plan[1].end == 15);
  CHECK(plan[2].begin == 15);
  CHECK(plan[2].end == 30);
}

TEST_CASE("bad layers_per_stage overrides are rejected naming the problem", "[partition]") {
  const auto c = smollm2();
  CHECK_THROWS_AS(plan_pipeline(c, 2, {10, 10, 10}), partition_error);
  CHECK_THROWS_WITH(plan_pipeline(c, 2, {10, 10, 10}), Contains("layers_per_stage has 3 entries for 2 pipeline stages"));
  CHECK_THROWS_WITH(plan_pipeline(c, 2, {30, 0}), Contains("layers_per_stage[1] is 0") &&
                                                      Contains("at least one layer"));
  CHECK_THROWS_WITH(plan_pipeline(c, 2, {-1, 31}), Contains("layers_per_stage[0] is -1"));
  CHECK_THROWS_WITH(plan_pipeline(c, 2, {14, 15}), Contains("sums to 29 layers") && Contains("model has 30"));
}

TEST_CASE("a stage count below 1 or above the layer count is rejected", "[partition]") {
  const auto c = smollm2();
  CHECK_THROWS_WITH(plan_pipeline(c, 0), Contains("at least 1, got 0"));
  CHECK_THROWS_WITH(plan_pipeline(c, 31), Contains("30 layers") && Contains("31 pipeline stages"));
}

TEST_CASE("tensor 3 splits SmolLM2's 9 heads 3 per rank with one kv head each", "[partition]") {
  const auto c = smollm2();
  for (int r = 0; r < 3; ++r) {
    const auto s = plan_tensor(c, 3, r);
    CHECK(s.rank == r);
    CHECK(s.size == 3);
    CHECK(s.head_begin == 3 * r);
    CHECK(s.n_heads == 3);
    CHECK(s.kv_head_begin == r);
    CHECK(s.n_kv_heads == 1);
    CHECK(s.kv_group == 3);
    CHECK(s.ffn_begin == 512 * r);
    CHECK(s.ffn_size == 512);
  }
}

TEST_CASE("tensor 9 gives each rank one head and replicates its kv head", "[partition]") {
  const auto c = smollm2();
  for (int r = 0; r < 9; ++r) {
    const auto s = plan_tensor(c, 9, r);
    CHECK(s.head_begin == r);
    CHECK(s.n_heads == 1);
    CHECK(s.kv_head_begin == r / 3);
    CHECK(s.n_kv_heads == 1);
    CHECK(s.ffn_size == 1536 / 9 + (r < 1536 % 9 ? 1 : 0));
  }
}

TEST_CASE("tensor 2 on 9 heads is rejected naming both numbers unless uneven heads are allowed", "[partition]") {
  const auto c = smollm2();
  CHECK_THROWS_AS(plan_tensor(c, 2, 0), partition_error);
  CHECK_THROWS_WITH(plan_tensor(c, 2, 0), Contains("tensor 2 does not divide the 9 attention heads") &&
                                              Contains("parallel.allow_uneven_heads") && Contains("5/4"));
}

TEST_CASE("tensor 2 with uneven heads allowed splits 5/4 with kv ranges 0-1 and 1-2", "[partition]") {
  const auto c = smollm2();
  const auto a = plan_tensor(c, 2, 0, true), b = plan_tensor(c, 2, 1, true);
  CHECK(a.head_begin == 0);
  CHECK(a.n_heads == 5);
  CHECK(a.kv_head_begin == 0);
  CHECK(a.n_kv_heads == 2);
  CHECK(b.head_begin == 5);
  CHECK(b.n_heads == 4);
  CHECK(b.kv_head_begin == 1);
  CHECK(b.n_kv_heads == 2);
  CHECK(a.ffn_begin == 0);
  CHECK(a.ffn_size == 768);
  CHECK(b.ffn_begin == 768);
  CHECK(b.ffn_size == 768);
}

TEST_CASE("Llama-3-8B splits its 32 heads and 8 kv heads over tensor 2, 4 and 8", "[partition]") {
  const auto c = llama3_8b();
  for (int tp : {2, 4, 8}) {
    for (int r = 0; r < tp; ++r) {
      const auto s = plan_tensor(c, tp, r);
      CHECK(s.n_heads == 32 / tp);
      CHECK(s.head_begin == r * 32 / tp);
      CHECK(s.n_kv_heads == 8 / tp);
      CHECK(s.kv_head_begin == r * 8 / tp);
      CHECK(s.kv_group == 4);
      CHECK(s.ffn_size == 14336 / tp);
      CHECK(s.ffn_begin == r * 14336 / tp);
    }
  }
  const auto s = plan_tensor(c, 16, 5);
  CHECK(s.n_heads == 2);
  CHECK(s.kv_head_begin == 2);
  CHECK(s.n_kv_heads == 1);
}

TEST_CASE("kv heads that neither rule places need uneven heads allowed", "[partition]") {
  const auto c = shape("twelve", 4, 768, 12, 4, 3072, 1000);
  CHECK_THROWS_WITH(plan_tensor(c, 6, 0), Contains("tensor 6 neither divides nor is a multiple of the 4 kv heads"));
  const auto s = plan_tensor(c, 6, 1, true);
  CHECK(s.head_begin == 2);
  CHECK(s.n_heads == 2);
  CHECK(s.kv_head_begin == 0);
  CHECK(s.n_kv_heads == 2);
}

TEST_CASE("impossible tensor sizes and ranks are rejected", "[partition]") {
  const auto c = smollm2();
  CHECK_THROWS_WITH(plan_tensor(c, 0, 0), Contains("at least 1, got 0"));
  CHECK_THROWS_WITH(plan_tensor(c, 3, 3), Contains("tensor rank 3 is outside [0, 3)"));
  CHECK_THROWS_WITH(plan_tensor(c, 3, -1), Contains("tensor rank -1"));
  CHECK_THROWS_WITH(plan_tensor(c, 10, 0, true), Contains("tensor 10 exceeds the 9 attention heads"));
  auto narrow = shape("narrow", 2, 64, 4, 4, 2, 100);
  CHECK_THROWS_WITH(plan_tensor(narrow, 4, 0), Contains("tensor 4 exceeds the 2 MLP columns"));
}

TEST_CASE("every query head's kv head lies in its rank's kv range, over many shapes", "[partition]") {
  for (int n_kv = 1; n_kv <= 8; ++n_kv) {
    for (int group = 1; group <= 8; ++group) {
      const int heads = n_kv * group;
      const auto c = shape("m", 2, heads * 8, heads, n_kv, 3 * heads + 1, 100);
      for (int tp = 1; tp <= heads; ++tp) {
        INFO("heads " << heads << ", kv heads " << n_kv << ", tp " << tp);
        int next_head = 0, next_col = 0, min_heads = heads, max_heads = 0;
        for (int r = 0; r < tp; ++r) {
          const auto s = plan_tensor(c, tp, r, true);
          CHECK(s.head_begin == next_head);
          CHECK(s.ffn_begin == next_col);
          CHECK(s.kv_group == group);
          next_head += s.n_heads;
          next_col += s.ffn_size;
          min_heads = std::min(min_heads, s.n_heads);
          max_heads = std::max(max_heads, s.n_heads);
          for (int h = s.head_begin; h < s.head_begin + s.n_heads; ++h) {
            CHECK(h / group >= s.kv_head_begin);
            CHECK(h / group < s.kv_head_begin + s.n_kv_heads);
          }
          CHECK(s.kv_head_begin == s.head_begin / group);
          CHECK(s.kv_head_begin + s.n_kv_heads - 1 == (s.head_begin + s.n_heads - 1) / group);
        }
        CHECK(next_head == heads);
        CHECK(next_col == c.ffn);
        CHECK(max_heads - min_heads <= 1);
      }
    }
  }
}
