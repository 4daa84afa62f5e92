#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <stdexcept>
#include <vector>

#include "kernel_test_util.h"
#include "kernels/attention.h"

using namespace troupe;
using troupe::test::cpu_ctx;
using troupe::test::f32_tensor;
using troupe::test::i32_tensor;
using troupe::test::random_floats;
using troupe::test::values;

namespace {

/// One sequence of a test batch: its kv length after the step and its query rows.
struct seq_spec {
  int ctx;
  int n_query;
};

/// A KV cache filled through kv_write, with each sequence's K/V also kept contiguous
/// so that the reference never reads the cache.
struct scenario {
  int n_heads, n_kv, head_dim, block_size, n_blocks = 0;
  std::vector<seq_spec> seqs;
  std::vector<std::vector<float>> k, v, q;   ///< per sequence: [ctx|n_query, heads, head_dim]
  std::vector<std::vector<int32_t>> tables;  ///< per sequence: its block ids, shuffled
  tensor k_cache, v_cache;

  scenario(std::mt19937& rng, std::vector<seq_spec> specs, int heads, int kv_heads, int hd, int bs)
      : n_heads(heads), n_kv(kv_heads), head_dim(hd), block_size(bs), seqs(std::move(specs)) {
    for (const auto& s : seqs) n_blocks += (s.ctx + bs - 1) / bs;
    n_blocks += 3;  // spare blocks nobody owns
    std::vector<int32_t> ids(static_cast<size_t>(n_blocks));
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), rng);
    k_cache = tensor({n_blocks, bs, kv_heads, hd}, dtype::f32, backend_kind::cpu);
    v_cache = tensor({n_blocks, bs, kv_heads, hd}, dtype::f32, backend_kind::cpu);
    size_t next = 0;
    std::vector<float> all_k, all_v;
    std::vector<int32_t> slots;
    for (const auto& s : seqs) {
      const size_t row = static_cast<size_t>(kv_heads * hd);
      k.push_back(random_floats(rng, static_cast<size_t>(s.ctx) * row));
      v.push_back(random_floats(rng, static_cast<size_t>(s.ctx) * row));
      q.push_back(random_floats(rng, static_cast<size_t>(s.n_query * heads * hd)));
      tables.emplace_back(
          ids.begin() + static_cast<long>(next),
          ids.begin() + static_cast<long>(next + static_cast<size_t>((s.ctx + bs - 1) / bs)));
      next += tables.back().size();
      for (int p = 0; p < s.ctx; ++p)
        slots.push_back(tables.back()[static_cast<size_t>(p / bs)] * bs + p % bs);
      all_k.insert(all_k.end(), k.back().begin(), k.back().end());
      all_v.insert(all_v.end(), v.back().begin(), v.back().end());
    }
    const int64_t rows = static_cast<int64_t>(slots.size());
    tensor tk = f32_tensor({rows, kv_heads, hd}, all_k),
           tv = f32_tensor({rows, kv_heads, hd}, all_v);
    tensor ts = i32_tensor({rows}, slots);
    kernels::kv_write(cpu_ctx(2), k_cache.view(), v_cache.view(), tk.view(), tv.view(), ts.view());
  }

  /// Runs paged_attention over the sequences `which`, in that order; returns [rows, heads, hd].
  std::vector<float> run(const std::vector<int>& which, int threads) const {
    int max_blocks = 0;
    for (int s : which)
      max_blocks =
          std::max(max_blocks, static_cast<int>(tables[static_cast<size_t>(s)].size()) + 1);
    std::vector<int32_t> qs{0}, cl, bt;
    std::vector<float> qv;
    for (int s : which) {
      const auto& spec = seqs[static_cast<size_t>(s)];
      qs.push_back(qs.back() + spec.n_query);
      cl.push_back(spec.ctx);
      auto row = tables[static_cast<size_t>(s)];
      row.resize(static_cast<size_t>(max_blocks), -1);  // padding that must never be read
      bt.insert(bt.end(), row.begin(), row.end());
      qv.insert(qv.end(), q[static_cast<size_t>(s)].begin(), q[static_cast<size_t>(s)].end());
    }
    const int n = static_cast<int>(which.size());
    const int64_t m = qs.back();
    tensor tq = f32_tensor({m, n_heads, head_dim}, qv),
           out({m, n_heads, head_dim}, dtype::f32, backend_kind::cpu);
    tensor tqs = i32_tensor({n + 1}, qs), tcl = i32_tensor({n}, cl),
           tbt = i32_tensor({n, max_blocks}, bt);
    kernels::attention_batch b;
    b.n_seqs = n;
    b.max_blocks = max_blocks;
    b.block_size = block_size;
    b.query_start = tqs.view();
    b.context_len = tcl.view();
    b.block_tables = tbt.view();
    kernels::paged_attention(cpu_ctx(threads), out.view(), tq.view(), k_cache.view(),
                             v_cache.view(), b, 1.0f / std::sqrt(static_cast<float>(head_dim)));
    return values(out);
  }

  /// Naive causal GQA attention for sequence s, in double: [n_query, heads, hd].
  std::vector<double> reference(int s) const {
    const auto& spec = seqs[static_cast<size_t>(s)];
    const auto& K = k[static_cast<size_t>(s)];
    const auto& V = v[static_cast<size_t>(s)];
    const auto& Q = q[static_cast<size_t>(s)];
    const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim));
    std::vector<double> out(Q.size());
    for (int j = 0; j < spec.n_query; ++j)
      for (int h = 0; h < n_heads; ++h) {
        const int pos = spec.ctx - spec.n_query + j, kvh = h / (n_heads / n_kv);
        const float* qr = &Q[static_cast<size_t>((j * n_heads + h) * head_dim)];
        std::vector<double> sc(static_cast<size_t>(pos + 1));
        for (int t = 0; t <= pos; ++t) {
          const float* kr = &K[static_cast<size_t>((t * n_kv + kvh) * head_dim)];
          double d = 0;
          for (int i = 0; i < head_dim; ++i) d += static_cast<double>(qr[i]) * kr[i];
          sc[static_cast<size_t>(t)] = d * scale;
        }
        const double mx = *std::max_element(sc.begin(), sc.end());
        double sum = 0;
        for (double& x : sc) sum += (x = std::exp(x - mx));
        for (int i = 0; i < head_dim; ++i) {
          double acc = 0;
          for (int t = 0; t <= pos; ++t)
            acc += sc[static_cast<size_t>(t)] *
                   V[static_cast<size_t>((t * n_kv + kvh) * head_dim + i)];
          out[static_cast<size_t>((j * n_heads + h) * head_dim + i)] = acc / sum;
        }
      }
    return out;
  }
};

}  // namespace

TEST_CASE("paged_attention matches a naive reference with GQA, shuffled blocks and mixed lengths",
          "[kernels]") {
  std::mt19937 rng(23);
  struct config {
    int head_dim, block_size;
  };
  for (config c : {config{64, 16}, config{12, 1}, config{64, 1}}) {
    INFO("head_dim=" << c.head_dim << " block_size=" << c.block_size);
    scenario sc(rng, {{1, 1}, {17, 17}, {769, 3}, {40, 1}, {33, 5}}, 9, 3, c.head_dim,
                c.block_size);
    auto got = sc.run({0, 1, 2, 3, 4}, 2);
    size_t row = 0;
    for (int s = 0; s < 5; ++s) {
      auto want = sc.reference(s);
      int64_t bad = 0;
      for (size_t i = 0; i < want.size(); ++i)
        if (std::abs(got[row + i] - want[i]) > 5e-5) ++bad;
      INFO("sequence " << s);
      CHECK(bad == 0);
      row += want.size();
    }
    CHECK(row == got.size());
  }
}

TEST_CASE("a paged_attention row is bitwise the same alone, in any batch and on any thread count",
          "[kernels]") {
  std::mt19937 rng(29);
  scenario sc(rng, {{769, 3}, {17, 17}, {5, 2}, {100, 1}}, 9, 3, 64, 16);
  const size_t row = static_cast<size_t>(9 * 64);
  auto alone = sc.run({0}, 1);
  auto batch = sc.run({1, 0, 3, 2}, 2);
  const size_t offset = 17 * row;  // sequence 0 follows the 17 rows of sequence 1
  CHECK(std::memcmp(alone.data(), batch.data() + offset, alone.size() * sizeof(float)) == 0);
  auto other = sc.run({3, 2, 0}, 2);
  CHECK(std::memcmp(alone.data(), other.data() + 3 * row, alone.size() * sizeof(float)) == 0);
}

TEST_CASE("a prefill row equals the same row computed as a decode step", "[kernels]") {
  std::mt19937 rng(31);
  // Sequence 0 prefills 17 rows; sequence 1 is its row 9 decoded alone (context 10).
  scenario s(rng, {{17, 17}, {10, 1}}, 9, 3, 64, 16);
  const size_t row = static_cast<size_t>(9 * 64);
  s.tables[1] = {s.tables[0][0]};  // the decode reads the prefill's first block
  s.q[1].assign(s.q[0].begin() + static_cast<long>(9 * row),
                s.q[0].begin() + static_cast<long>(10 * row));
  auto prefill = s.run({0}, 2);
  auto decode = s.run({1}, 1);
  CHECK(std::memcmp(decode.data(), prefill.data() + 9 * row, row * sizeof(float)) == 0);
}

TEST_CASE("kv_write stores each row at its slot and rejects a slot outside the cache",
          "[kernels]") {
  tensor kc({2, 2, 1, 2}, dtype::f32, backend_kind::cpu),
      vc({2, 2, 1, 2}, dtype::f32, backend_kind::cpu);
  std::fill(kc.f32(), kc.f32() + 8, 0.0f);
  std::fill(vc.f32(), vc.f32() + 8, 0.0f);
  tensor k = f32_tensor({2, 1, 2}, {1, 2, 3, 4}), v = f32_tensor({2, 1, 2}, {5, 6, 7, 8});
  tensor slots = i32_tensor({2}, {3, 0});
  kernels::kv_write(cpu_ctx(), kc.view(), vc.view(), k.view(), v.view(), slots.view());
  CHECK(values(kc) == std::vector<float>{3, 4, 0, 0, 0, 0, 1, 2});
  CHECK(values(vc) == std::vector<float>{7, 8, 0, 0, 0, 0, 5, 6});
  tensor bad = i32_tensor({2}, {4, 0});
  REQUIRE_THROWS_AS(
      kernels::kv_write(cpu_ctx(), kc.view(), vc.view(), k.view(), v.view(), bad.view()),
      std::out_of_range);
  REQUIRE_THROWS_WITH(
      kernels::kv_write(cpu_ctx(), kc.view(), vc.view(), k.view(), v.view(), bad.view()),
      Catch::Matchers::Contains("slot 4"));
  tensor k_bad({2, 2, 2}, dtype::f32, backend_kind::cpu);
  REQUIRE_THROWS_WITH(
      kernels::kv_write(cpu_ctx(), kc.view(), vc.view(), k_bad.view(), v.view(), slots.view()),
      Catch::Matchers::Contains("kv_write") && Catch::Matchers::Contains("[2, 2, 2]"));
}

TEST_CASE("paged_attention rejects inconsistent shapes and batch descriptions", "[kernels]") {
  tensor kc({4, 16, 3, 8}, dtype::f32, backend_kind::cpu),
      vc({4, 16, 3, 8}, dtype::f32, backend_kind::cpu);
  tensor q({2, 9, 8}, dtype::f32, backend_kind::cpu), out({2, 9, 8}, dtype::f32, backend_kind::cpu);
  tensor q_bad_heads({2, 8, 8}, dtype::f32, backend_kind::cpu);
  tensor qs = i32_tensor({2}, {0, 2}), cl = i32_tensor({1}, {20}), bt = i32_tensor({1, 2}, {3, 1});
  kernels::attention_batch b;
  b.n_seqs = 1;
  b.max_blocks = 2;
  b.block_size = 16;
  b.query_start = qs.view();
  b.context_len = cl.view();
  b.block_tables = bt.view();
  using Catch::Matchers::Contains;
  CHECK_NOTHROW(
      kernels::paged_attention(cpu_ctx(), out.view(), q.view(), kc.view(), vc.view(), b, 1.0f));
  REQUIRE_THROWS_WITH(
      kernels::paged_attention(cpu_ctx(), q_bad_heads.view(), q_bad_heads.view(), kc.view(),
                               vc.view(), b, 1.0f),
      Contains("paged_attention") && Contains("[2, 8, 8]") && Contains("n_kv_heads"));
  tensor short_cl = i32_tensor({1}, {1});
  b.context_len = short_cl.view();
  REQUIRE_THROWS_WITH(
      kernels::paged_attention(cpu_ctx(), out.view(), q.view(), kc.view(), vc.view(), b, 1.0f),
      Contains("context_len 1"));
  tensor long_cl = i32_tensor({1}, {33});
  b.context_len = long_cl.view();
  REQUIRE_THROWS_WITH(
      kernels::paged_attention(cpu_ctx(), out.view(), q.view(), kc.view(), vc.view(), b, 1.0f),
      Contains("exceeds its block table"));
  tensor bad_block = i32_tensor({1, 2}, {3, 4});
  b.context_len = cl.view();
  b.block_tables = bad_block.view();
  REQUIRE_THROWS_AS(
      kernels::paged_attention(cpu_ctx(), out.view(), q.view(), kc.view(), vc.view(), b, 1.0f),
      std::out_of_range);
  b.block_tables = bt.view();
  b.block_size = 8;
  REQUIRE_THROWS_WITH(
      kernels::paged_attention(cpu_ctx(), out.view(), q.view(), kc.view(), vc.view(), b, 1.0f),
      Contains("block_size 8"));
}
