// The forward split over tensor-parallel ranks and pipeline stages (threads with real
// UCX communicators) against the whole model in one shard context.
#include <catch2/catch.hpp>
#include <cstring>
#include <future>
#include <thread>

#include "engine_fixture.h"
#include "parallel/ucx_communicator.h"

using namespace troupe;
using namespace troupe::test;
using parallel::ucx_communicator;

namespace {

constexpr int kBlockSize = 16;
constexpr int kMaxBlocks = 64;

/// One sequence with contiguous blocks 0, 1, 2, ...: rows tokens[start, start + n).
batch_input one_sequence(const std::vector<int32_t>& tokens, int start) {
  batch_input b;
  const int n = static_cast<int>(tokens.size()) - start;
  for (int i = 0; i < n; ++i) {
    b.tokens.push_back(tokens[static_cast<size_t>(start + i)]);
    b.positions.push_back(start + i);
    b.slots.push_back(start + i);
  }
  b.query_start = {0, n};
  b.context_len = {start + n};
  b.max_blocks = kMaxBlocks;
  for (int i = 0; i < kMaxBlocks; ++i) b.block_tables.push_back(i);
  b.logit_rows = {n - 1};
  return b;
}

context_params small_context() {
  context_params p;
  p.n_blocks = kMaxBlocks;
  p.block_size = kBlockSize;
  p.max_batch_tokens = 256;
  p.max_logit_rows = 1;
  return p;
}

/// `n` communicators of one group, connected (each connect runs on its own thread).
std::vector<std::unique_ptr<ucx_communicator>> make_group(int n) {
  std::vector<std::unique_ptr<ucx_communicator>> g;
  std::vector<std::vector<char>> addrs;
  for (int r = 0; r < n; ++r) {
    g.push_back(std::make_unique<ucx_communicator>(r, n));
    addrs.push_back(g.back()->local_address());
  }
  std::vector<std::thread> ts;
  for (auto& c : g)
    ts.emplace_back([&c, &addrs] { c->connect(addrs, std::chrono::steady_clock::now() + std::chrono::seconds(10)); });
  for (auto& t : ts) t.join();
  return g;
}

int32_t argmax(tensor_view logits) {
  const float* p = logits.f32();
  return static_cast<int32_t>(std::max_element(p, p + logits.shape[1]) - p);
}

/// Greedy decoding of `n` tokens on a set of shards run in parallel threads; `last`
/// indexes the shard whose logits count. Returns per step the logits of that shard.
std::vector<std::vector<float>> run_shards(std::vector<shard_context*> shards, size_t last,
                                           std::vector<int32_t> tokens, int n) {
  std::vector<std::vector<float>> out;
  int start = 0;
  for (int step = 0; step < n; ++step) {
    auto b = one_sequence(tokens, start);
    std::vector<std::future<tensor_view>> fs;
    for (auto* s : shards) fs.push_back(std::async(std::launch::async, [s, &b] { return s->forward(b); }));
    std::vector<tensor_view> res;
    for (auto& f : fs) res.push_back(f.get());
    const tensor_view l = res[last];
    out.emplace_back(l.f32(), l.f32() + l.shape[1]);
    start = static_cast<int>(tokens.size());
    tokens.push_back(argmax(l));
  }
  return out;
}

std::vector<int32_t> greedy_of(const std::vector<std::vector<float>>& logits) {
  std::vector<int32_t> t;
  for (const auto& l : logits) t.push_back(static_cast<int32_t>(std::max_element(l.begin(), l.end()) - l.begin()));
  return t;
}

std::vector<std::vector<float>> reference(const std::vector<int32_t>& prompt, int n) {
  shard_context whole(*shared_default_model(), small_context(), {backend_kind::cpu, 2, nullptr});
  return run_shards({&whole}, 0, prompt, n);
}

std::vector<int32_t> prompt() {
  return shared_default_model()->tokenizer().encode("The three laws of robotics say that a robot", true, true);
}

}  // namespace

TEST_CASE("two pipeline stages give bitwise the logits of the whole model", "[parallel][pipeline][slow]") {
  load_options first, second;
  first.layer_end = 15;
  first.load_head = false;
  second.layer_begin = 15;
  second.load_embeddings = true;  // tied: the output projection is the embedding table
  auto m0 = model::load(default_model(), first);
  auto m1 = model::load(default_model(), second);
  auto link = make_group(2);
  parallel_env e0, e1;
  e0.next_stage = link[0].get();
  e1.prev_stage = link[1].get();
  shard_context s0(*m0, small_context(), {backend_kind::cpu, 1, nullptr}, e0);
  shard_context s1(*m1, small_context(), {backend_kind::cpu, 1, nullptr}, e1);
  CHECK(s0.is_first_stage());
  CHECK_FALSE(s0.is_last_stage());
  CHECK(s1.is_last_stage());
  auto split = run_shards({&s0, &s1}, 1, prompt(), 6);
  auto whole = reference(prompt(), 6);
  for (size_t i = 0; i < whole.size(); ++i) {
    INFO("step " << i);
    CHECK(std::memcmp(split[i].data(), whole[i].data(), whole[i].size() * sizeof(float)) == 0);
  }
}

namespace {

void check_tensor_parallel(int tp, bool uneven) {
  auto group = make_group(tp);
  std::vector<std::shared_ptr<const model>> models;
  std::vector<std::unique_ptr<shard_context>> shards;
  for (int r = 0; r < tp; ++r) {
    load_options o;
    o.tp_rank = r;
    o.tp_size = tp;
    o.allow_uneven_heads = uneven;
    models.push_back(model::load(default_model(), o));
    parallel_env env;
    env.tensor_group = group[static_cast<size_t>(r)].get();
    shards.push_back(std::make_unique<shard_context>(*models.back(), small_context(),
                                                     kernels::op_context{backend_kind::cpu, 1, nullptr}, env));
  }
  std::vector<shard_context*> ptrs;
  for (auto& s : shards) ptrs.push_back(s.get());
  auto split = run_shards(ptrs, 0, prompt(), 8);
  auto whole = reference(prompt(), 8);
  // Every rank holds the same residual stream after each all-reduce, so rank 0's logits
  // stand for the group; they differ from one shard's only by summation order.
  float max_dev = 0;
  for (size_t i = 0; i < whole.size(); ++i)
    for (size_t v = 0; v < whole[i].size(); ++v) max_dev = std::max(max_dev, std::fabs(split[i][v] - whole[i][v]));
  WARN("tensor " << tp << (uneven ? " (uneven heads)" : "") << ": max logit deviation " << max_dev);
  CHECK(max_dev < 1e-3f);
  CHECK(greedy_of(split) == greedy_of(whole));
}

}  // namespace

TEST_CASE("tensor 3 splits heads evenly and matches the whole model", "[parallel][tensor][slow]") {
  check_tensor_parallel(3, false);
}

TEST_CASE("tensor 2 splits 9 heads 5/4 and matches the whole model", "[parallel][tensor][slow]") {
  check_tensor_parallel(2, true);
}
