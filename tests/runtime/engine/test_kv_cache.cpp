#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdint>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <stdexcept>
#include <vector>

#include "runtime/engine/kv_cache.h"

namespace troupe {

/// Reads block_manager's internals to check its invariants (a friend of the class).
struct block_manager_test_access {
  /// Cached, unreferenced blocks, least recently used first.
  static std::vector<int32_t> evictable(const block_manager& m) {
    return {m.evictable_.begin(), m.evictable_.end()};
  }
  static std::vector<int32_t> free_list(const block_manager& m) { return m.free_list_; }
  static bool published(const block_manager& m, int32_t b) {
    return m.blocks_[static_cast<size_t>(b)].published;
  }

  /// Simulates a hash collision: re-keys block `b` under the chained hash of `toks`
  /// (whole blocks from the start of a prompt), as if that prefix hashed to its key.
  static void rekey_as_prefix(block_manager& m, int32_t b,
                              const std::vector<int32_t>& toks) {
    uint64_t h = 0;
    for (size_t i = 0; i < toks.size(); i += static_cast<size_t>(m.block_size()))
      h = m.chain_hash(h, toks.data() + i);
    auto& info = m.blocks_[static_cast<size_t>(b)];
    m.prefix_table_.erase(info.hash);
    info.hash = h;
    m.prefix_table_[info.hash] = b;
  }

  /// Checks every structural invariant; `live` are the sequences the caller started.
  static void check(const block_manager& m, const std::set<seq_id>& live) {
    const int n = m.n_blocks();
    std::vector<int> refs(static_cast<size_t>(n), 0);
    for (seq_id id : live) {
      REQUIRE(m.has_sequence(id));
      const auto& table = m.block_table(id);
      std::set<int32_t> distinct(table.begin(), table.end());
      REQUIRE(distinct.size() == table.size());
      for (int32_t b : table) {
        REQUIRE(b >= 0);
        REQUIRE(b < n);
        ++refs[static_cast<size_t>(b)];
      }
    }
    REQUIRE(m.seqs_.size() == live.size());
    std::vector<int> where(static_cast<size_t>(n), 0);  // 1 free, 2 evictable, 4 used
    for (int32_t b : m.free_list_) where[static_cast<size_t>(b)] += 1;
    for (int32_t b : m.evictable_) where[static_cast<size_t>(b)] += 2;
    int used = 0;
    for (int b = 0; b < n; ++b) {
      const auto& info = m.blocks_[static_cast<size_t>(b)];
      REQUIRE(info.ref_count == refs[static_cast<size_t>(b)]);
      if (info.ref_count > 0) {
        where[static_cast<size_t>(b)] += 4;
        ++used;
      }
      const int w = where[static_cast<size_t>(b)];
      REQUIRE((w == 1 || w == 2 || w == 4));  // in exactly one place
      if (w == 1) REQUIRE_FALSE(info.published);
      if (w == 2) {
        REQUIRE(info.published);
        REQUIRE(*m.evictable_pos_[static_cast<size_t>(b)] == b);
      }
      if (info.published) {
        auto it = m.prefix_table_.find(info.hash);
        REQUIRE(it != m.prefix_table_.end());
        REQUIRE(it->second == b);
      }
    }
    for (const auto& [h, b] : m.prefix_table_) {
      REQUIRE(m.blocks_[static_cast<size_t>(b)].published);
      REQUIRE(m.blocks_[static_cast<size_t>(b)].hash == h);
    }
    REQUIRE(m.n_used() == used);
    REQUIRE(m.n_available() == static_cast<int>(m.free_list_.size() + m.evictable_.size()));
    REQUIRE(m.n_available() + m.n_used() == n);
  }
};

}  // namespace troupe

using troupe::block_manager;
using access = troupe::block_manager_test_access;

namespace {

/// Tokens base, base+1, ..., base+n-1.
std::vector<int32_t> iota_tokens(int n, int32_t base = 0) {
  std::vector<int32_t> t(static_cast<size_t>(n));
  std::iota(t.begin(), t.end(), base);
  return t;
}

/// Begins `id`, reserves and commits the whole prompt as a finished prefill would.
int run_prefill(block_manager& m, troupe::seq_id id, const std::vector<int32_t>& toks) {
  int cached = m.begin_sequence(id, toks);
  REQUIRE(m.reserve(id, static_cast<int>(toks.size())));
  m.commit(id, toks, static_cast<int>(toks.size()));
  return cached;
}

std::vector<int32_t> head(const std::vector<int32_t>& v, size_t n) {
  return {v.begin(), v.begin() + static_cast<std::ptrdiff_t>(n)};
}

}  // namespace

TEST_CASE("a fresh manager has all blocks available and none used", "[kv]") {
  block_manager m(10, 16);
  REQUIRE(m.n_blocks() == 10);
  REQUIRE(m.block_size() == 16);
  REQUIRE(m.n_available() == 10);
  REQUIRE(m.n_used() == 0);
  REQUIRE_FALSE(m.has_sequence(1));
  REQUIRE(m.stats().reused_blocks == 0);
  REQUIRE(m.stats().evicted_blocks == 0);
}

TEST_CASE("a manager with no blocks or a zero block size is rejected", "[kv]") {
  REQUIRE_THROWS_WITH(block_manager(0, 16), Catch::Contains("n_blocks"));
  REQUIRE_THROWS_WITH(block_manager(8, 0), Catch::Contains("block_size"));
}

TEST_CASE("reserve allocates ceil(n / block_size) blocks and grows incrementally", "[kv]") {
  block_manager m(10, 16);
  REQUIRE(m.begin_sequence(1, iota_tokens(17)) == 0);
  REQUIRE(m.reserve(1, 17));
  REQUIRE(m.block_table(1).size() == 2);
  REQUIRE(m.n_used() == 2);
  REQUIRE(m.n_available() == 8);
  REQUIRE(m.reserve(1, 32));  // still fits in two blocks
  REQUIRE(m.block_table(1).size() == 2);
  REQUIRE(m.reserve(1, 33));
  REQUIRE(m.block_table(1).size() == 3);
  REQUIRE(m.reserve(1, 5));  // shrinking asks free nothing
  REQUIRE(m.block_table(1).size() == 3);
  access::check(m, {1});
}

TEST_CASE("reserve fails without side effects when blocks are short", "[kv]") {
  block_manager m(4, 16);
  m.begin_sequence(1, iota_tokens(20));
  REQUIRE(m.reserve(1, 20));
  const auto before = m.block_table(1);
  REQUIRE_FALSE(m.reserve(1, 16 * 7));
  REQUIRE(m.block_table(1) == before);
  REQUIRE(m.n_available() == 2);
  REQUIRE(m.n_used() == 2);
  REQUIRE(m.reserve(1, 16 * 4));  // exactly what is left still works
  REQUIRE(m.n_available() == 0);
  access::check(m, {1});
}

TEST_CASE("a second sequence with the same 200-token prompt adopts 12 blocks", "[kv]") {
  block_manager m(64, 16);
  const auto prompt = iota_tokens(200, 1000);
  REQUIRE(run_prefill(m, 1, prompt) == 0);
  REQUIRE(m.block_table(1).size() == 13);
  REQUIRE(m.begin_sequence(2, prompt) == 192);
  const auto& shared = m.block_table(2);
  REQUIRE(shared.size() == 12);
  REQUIRE(std::equal(shared.begin(), shared.end(), m.block_table(1).begin()));
  REQUIRE(m.stats().reused_blocks == 12);
  REQUIRE(m.stats().reused_tokens == 192);
  REQUIRE(m.n_used() == 13);
  REQUIRE(m.reserve(2, 200));
  REQUIRE(m.block_table(2).size() == 13);
  REQUIRE(m.block_table(2)[12] != m.block_table(1)[12]);
  access::check(m, {1, 2});
}

TEST_CASE("a prompt that is entirely cached still leaves one token to compute", "[kv]") {
  block_manager m(64, 16);
  const auto prompt = iota_tokens(192);
  run_prefill(m, 1, prompt);
  REQUIRE(m.begin_sequence(2, prompt) == 176);
  REQUIRE(m.begin_sequence(3, head(prompt, 177)) == 176);
  REQUIRE(m.begin_sequence(4, head(prompt, 16)) == 0);
  REQUIRE(m.begin_sequence(5, head(prompt, 17)) == 16);
  auto longer = prompt;
  longer.push_back(7);
  REQUIRE(m.begin_sequence(6, longer) == 192);
  access::check(m, {1, 2, 3, 4, 5, 6});
}

TEST_CASE("a different first block shares nothing even when later blocks are identical",
          "[kv]") {
  block_manager m(64, 16);
  const auto a = iota_tokens(100);
  run_prefill(m, 1, a);
  auto b = a;
  b[3] = -5;  // only the first block differs
  REQUIRE(m.begin_sequence(2, b) == 0);
  REQUIRE(m.block_table(2).empty());
  REQUIRE(m.stats().reused_blocks == 0);
  auto c = a;
  c[40] = -5;  // third block differs: the first two are shared
  REQUIRE(m.begin_sequence(3, c) == 32);
  access::check(m, {1, 2, 3});
}

TEST_CASE("ending a sequence keeps its published blocks reusable and frees the rest",
          "[kv]") {
  block_manager m(8, 4);
  const auto prompt = iota_tokens(10);  // two full blocks and a partial one
  run_prefill(m, 1, prompt);
  m.end_sequence(1);
  REQUIRE_FALSE(m.has_sequence(1));
  REQUIRE(m.n_used() == 0);
  REQUIRE(m.n_available() == 8);
  REQUIRE(access::evictable(m).size() == 2);
  REQUIRE(access::free_list(m).size() == 6);
  REQUIRE(m.begin_sequence(2, prompt) == 8);
  REQUIRE(m.n_used() == 2);
  REQUIRE(access::evictable(m).empty());
  access::check(m, {2});
}

TEST_CASE("cached blocks are evicted least recently used first", "[kv]") {
  block_manager m(4, 4);
  const auto a = iota_tokens(5, 100);
  const auto b = iota_tokens(5, 200);
  run_prefill(m, 1, a);
  m.end_sequence(1);
  run_prefill(m, 2, b);
  m.end_sequence(2);
  REQUIRE(access::evictable(m).size() == 2);
  REQUIRE(access::free_list(m).size() == 2);
  m.begin_sequence(3, iota_tokens(12, 300));
  REQUIRE(m.reserve(3, 12));  // two free blocks, then evicts a's block
  REQUIRE(m.stats().evicted_blocks == 1);
  m.end_sequence(3);
  REQUIRE(m.begin_sequence(4, a) == 0);
  REQUIRE(m.begin_sequence(5, b) == 4);
  access::check(m, {4, 5});
}

TEST_CASE("reusing a cached block makes it the most recently used", "[kv]") {
  block_manager m(4, 4);
  const auto a = iota_tokens(5, 100);
  const auto b = iota_tokens(5, 200);
  run_prefill(m, 1, a);
  m.end_sequence(1);
  run_prefill(m, 2, b);
  m.end_sequence(2);
  REQUIRE(m.begin_sequence(3, a) == 4);  // touches a's block
  m.end_sequence(3);
  m.begin_sequence(4, iota_tokens(12, 300));
  REQUIRE(m.reserve(4, 12));
  REQUIRE(m.stats().evicted_blocks == 1);
  m.end_sequence(4);
  REQUIRE(m.begin_sequence(5, b) == 0);
  REQUIRE(m.begin_sequence(6, a) == 4);
  access::check(m, {5, 6});
}

TEST_CASE("a sequence's tail blocks are evicted before the prefix they extend", "[kv]") {
  block_manager m(3, 4);
  const auto prompt = iota_tokens(9);
  run_prefill(m, 1, prompt);
  const auto first = m.block_table(1);
  m.end_sequence(1);
  REQUIRE(access::evictable(m) == std::vector<int32_t>{first[1], first[0]});
  m.begin_sequence(2, iota_tokens(8, 50));
  REQUIRE(m.reserve(2, 8));  // the free block, then the second cached block
  REQUIRE(m.stats().evicted_blocks == 1);
  m.end_sequence(2);
  REQUIRE(m.begin_sequence(3, prompt) == 4);
  access::check(m, {3});
}

TEST_CASE("eviction happens only once the free list is empty", "[kv]") {
  block_manager m(6, 4);
  const auto a = iota_tokens(9);
  run_prefill(m, 1, a);
  m.end_sequence(1);  // 2 cached, 4 free
  m.begin_sequence(2, iota_tokens(16, 50));
  REQUIRE(m.reserve(2, 16));
  REQUIRE(m.stats().evicted_blocks == 0);
  REQUIRE(access::free_list(m).empty());
  REQUIRE(access::evictable(m).size() == 2);
  REQUIRE(m.begin_sequence(3, a) == 8);
  m.end_sequence(3);
  m.begin_sequence(4, iota_tokens(4, 90));
  REQUIRE(m.reserve(4, 4));
  REQUIRE(m.stats().evicted_blocks == 1);
  access::check(m, {2, 4});
}

TEST_CASE("a duplicate publish keeps the first cached block", "[kv]") {
  block_manager m(16, 4);
  const auto prompt = iota_tokens(10);
  REQUIRE(m.begin_sequence(1, prompt) == 0);
  REQUIRE(m.begin_sequence(2, prompt) == 0);  // both start before either commits
  REQUIRE(m.reserve(1, 10));
  REQUIRE(m.reserve(2, 10));
  m.commit(1, prompt, 10);
  m.commit(2, prompt, 10);
  const auto first = m.block_table(1);
  const auto second = m.block_table(2);
  REQUIRE(access::published(m, first[0]));
  REQUIRE(access::published(m, first[1]));
  REQUIRE_FALSE(access::published(m, second[0]));
  REQUIRE_FALSE(access::published(m, second[1]));
  REQUIRE(m.begin_sequence(3, prompt) == 8);
  REQUIRE(m.block_table(3) == head(first, 2));
  m.end_sequence(2);
  REQUIRE(access::free_list(m).size() == 13);  // 2's three blocks came back
  REQUIRE(access::evictable(m).empty());
  access::check(m, {1, 3});
}

TEST_CASE("shared blocks are not freed while another sequence uses them", "[kv]") {
  block_manager m(6, 4);
  const auto prompt = iota_tokens(9);
  run_prefill(m, 1, prompt);
  REQUIRE(m.begin_sequence(2, prompt) == 8);
  m.end_sequence(1);
  REQUIRE(m.n_used() == 2);
  REQUIRE(m.n_available() == 4);
  m.begin_sequence(3, iota_tokens(30, 70));
  REQUIRE_FALSE(m.reserve(3, 20));  // would need the shared blocks
  REQUIRE(m.reserve(3, 16));
  const auto& shared = m.block_table(2);
  for (int32_t b : m.block_table(3))
    REQUIRE(std::find(shared.begin(), shared.end(), b) == shared.end());
  REQUIRE(m.stats().evicted_blocks == 0);
  access::check(m, {2, 3});
}

TEST_CASE("a cached block whose parent was evicted is never matched and gets replaced",
          "[kv]") {
  block_manager m(8, 4);
  const auto prompt = iota_tokens(9);
  m.begin_sequence(1, prompt);
  m.begin_sequence(2, prompt);
  REQUIRE(m.reserve(1, 9));
  REQUIRE(m.reserve(2, 9));
  m.commit(1, prompt, 4);  // 1 publishes block 0
  m.commit(2, prompt, 9);  // 2 duplicates block 0, publishes block 1 under 1's block 0
  const int32_t orphan = m.block_table(2)[1];
  REQUIRE(access::published(m, orphan));
  m.end_sequence(1);
  m.end_sequence(2);  // cached: 1's block 0 (older), then 2's block 1
  m.begin_sequence(3, iota_tokens(4 * 7, 500));
  REQUIRE(m.reserve(3, 4 * 7));  // six free blocks, then evicts 1's block 0
  REQUIRE(m.stats().evicted_blocks == 1);
  m.end_sequence(3);
  REQUIRE(m.begin_sequence(4, prompt) == 0);
  REQUIRE(m.reserve(4, 9));
  m.commit(4, prompt, 9);
  REQUIRE_FALSE(access::published(m, orphan));
  REQUIRE(m.begin_sequence(5, prompt) == 8);
  REQUIRE(m.block_table(5) == head(m.block_table(4), 2));
  access::check(m, {4, 5});
}

TEST_CASE("a chain whose cached parent was evicted mid-sequence stops publishing", "[kv]") {
  block_manager m(8, 4);
  const auto prompt = iota_tokens(9);
  m.begin_sequence(1, prompt);
  m.begin_sequence(2, prompt);
  REQUIRE(m.reserve(1, 9));
  REQUIRE(m.reserve(2, 9));
  m.commit(1, prompt, 4);
  m.commit(2, prompt, 4);  // duplicate: 2's chain hangs from 1's block 0
  m.end_sequence(1);
  m.begin_sequence(3, iota_tokens(4 * 5, 500));
  REQUIRE(m.reserve(3, 4 * 5));  // four free blocks, then evicts 1's block 0
  REQUIRE(m.stats().evicted_blocks == 1);
  m.commit(2, prompt, 9);
  REQUIRE_FALSE(access::published(m, m.block_table(2)[1]));
  REQUIRE(m.begin_sequence(4, prompt) == 0);
  access::check(m, {2, 3, 4});
}

TEST_CASE("a hash collision never hands a sequence another prompt's blocks", "[kv]") {
  block_manager m(8, 4);
  const auto a = iota_tokens(5, 10);
  const auto b = iota_tokens(5, 20);
  run_prefill(m, 1, a);
  access::rekey_as_prefix(m, m.block_table(1)[0], head(b, 4));
  REQUIRE(m.begin_sequence(2, b) == 0);
  REQUIRE(m.stats().reused_blocks == 0);
  REQUIRE(m.reserve(2, 5));
  m.commit(2, b, 5);  // the live entry keeps the key; b's block stays private
  REQUIRE_FALSE(access::published(m, m.block_table(2)[0]));
  access::check(m, {1, 2});
}

TEST_CASE("a colliding block is not matched under a re-published parent of another prefix",
          "[kv]") {
  block_manager m(8, 4);
  const auto p = iota_tokens(13, 100);  // blocks P0 P1 P2 and one more token
  m.begin_sequence(1, p);
  m.begin_sequence(2, p);
  REQUIRE(m.reserve(1, 13));
  REQUIRE(m.reserve(2, 13));
  m.commit(1, p, 8);   // 1 publishes P0, P1
  m.commit(2, p, 13);  // 2 duplicates both and publishes P2 under 1's P1
  const int32_t x = m.block_table(1)[1];
  const int32_t child = m.block_table(2)[2];
  m.end_sequence(1);
  m.end_sequence(2);  // cached: 1's P1, 1's P0, 2's P2; five blocks free
  m.begin_sequence(3, iota_tokens(16, 900));
  REQUIRE(m.reserve(3, 16));     // four of the free blocks
  auto q = iota_tokens(4, 500);  // Q0 P1 and one more token
  q.insert(q.end(), p.begin() + 4, p.begin() + 8);
  q.push_back(1);
  REQUIRE(m.begin_sequence(4, q) == 0);
  REQUIRE(m.reserve(4, 4));  // the last free block
  REQUIRE(m.reserve(4, 8));  // evicts 1's P1: x now holds P1 after Q0
  REQUIRE(m.block_table(4)[1] == x);
  REQUIRE(m.reserve(4, 9));  // evicts 1's P0
  m.commit(4, q, 9);
  REQUIRE(access::published(m, x));
  REQUIRE(access::published(m, child));
  auto q_p2 = head(q, 8);
  q_p2.insert(q_p2.end(), p.begin() + 8, p.begin() + 12);
  access::rekey_as_prefix(m, child, q_p2);
  q_p2.push_back(1);
  REQUIRE(m.begin_sequence(5, q_p2) == 8);  // child's KV followed P0 P1, not Q0 P1
  access::check(m, {3, 4, 5});
}

TEST_CASE("without prefix caching nothing is shared or cached", "[kv]") {
  block_manager m(8, 4, false);
  const auto prompt = iota_tokens(9);
  REQUIRE(run_prefill(m, 1, prompt) == 0);
  REQUIRE(m.begin_sequence(2, prompt) == 0);
  m.end_sequence(1);
  REQUIRE(access::evictable(m).empty());
  REQUIRE(access::free_list(m).size() == 8);
  access::check(m, {2});
}

TEST_CASE("bad sequence ids and counts are rejected with the sequence named", "[kv]") {
  block_manager m(8, 4);
  m.begin_sequence(7, iota_tokens(5));
  REQUIRE_THROWS_AS(m.begin_sequence(7, iota_tokens(5)), std::logic_error);
  REQUIRE_THROWS_AS(m.begin_sequence(8, {}), std::invalid_argument);
  REQUIRE_THROWS_AS(m.end_sequence(42), std::out_of_range);
  REQUIRE_THROWS_WITH(m.end_sequence(42), Catch::Contains("sequence 42"));
  REQUIRE_THROWS_WITH(m.block_table(43), Catch::Contains("sequence 43"));
  REQUIRE_THROWS_AS(m.block_table(43), std::out_of_range);
  REQUIRE_THROWS_AS(m.reserve(44, 4), std::out_of_range);
  REQUIRE_THROWS_AS(m.commit(45, iota_tokens(4), 4), std::out_of_range);
  REQUIRE_THROWS_AS(m.reserve(7, -1), std::invalid_argument);
  REQUIRE(m.reserve(7, 5));
  REQUIRE_THROWS_WITH(m.commit(7, iota_tokens(12), 9), Catch::Contains("sequence 7"));
  REQUIRE_THROWS_AS(m.commit(7, iota_tokens(3), 4), std::invalid_argument);
  access::check(m, {7});
}

namespace {

/// The stress test's model of one live sequence.
struct sim_seq {
  std::vector<int32_t> tokens;
  int n_computed = 0;
  size_t n_known_blocks = 0;  ///< table entries whose content the model tracked
};

/// Random prompts over a tiny vocabulary drawn from a few shared stems, so prefixes hit.
std::vector<int32_t> random_prompt(std::mt19937& rng,
                                   const std::vector<std::vector<int32_t>>& stems) {
  const auto& stem = stems[rng() % stems.size()];
  std::vector<int32_t> t(
      stem.begin(), stem.begin() + static_cast<std::ptrdiff_t>(rng() % (stem.size() + 1)));
  const size_t extra = 1 + rng() % 10;
  for (size_t i = 0; i < extra; ++i) t.push_back(static_cast<int32_t>(rng() % 3));
  return t;
}

/// One scheduler step for `id`: computes a random chunk of its pending tokens (decoding
/// one first when none is pending), tracking what each block's KV holds in `content`.
/// Returns false, after checking nothing changed, when the blocks could not be reserved.
bool sim_step(block_manager& m, std::mt19937& rng, troupe::seq_id id, sim_seq& s,
              std::map<int32_t, std::vector<int32_t>>& content) {
  const int bs = m.block_size();
  if (s.n_computed == static_cast<int>(s.tokens.size()))
    s.tokens.push_back(static_cast<int32_t>(rng() % 3));
  const auto todo = static_cast<unsigned>(static_cast<int>(s.tokens.size()) - s.n_computed);
  const int target = s.n_computed + 1 + static_cast<int>(rng() % todo);
  const size_t before = m.block_table(id).size();
  const int avail = m.n_available();
  if (!m.reserve(id, target)) {
    REQUIRE(m.block_table(id).size() == before);
    REQUIRE(m.n_available() == avail);
    REQUIRE(avail < (target + bs - 1) / bs - static_cast<int>(before));
    return false;
  }
  const auto& table = m.block_table(id);
  for (size_t i = s.n_known_blocks; i < table.size(); ++i) content[table[i]].clear();
  s.n_known_blocks = table.size();
  const int full_before = s.n_computed / bs;
  m.commit(id, s.tokens, target);
  for (int i = full_before; i < target / bs; ++i)
    content[table[static_cast<size_t>(i)]] =
        head(s.tokens, static_cast<size_t>(i + 1) * bs);
  s.n_computed = target;
  return true;
}

}  // namespace

TEST_CASE("a seeded random mix of begin, reserve, commit and end keeps every invariant",
          "[kv]") {
  const int bs = 4;
  block_manager m(48, bs);
  std::mt19937 rng(12345);
  std::vector<std::vector<int32_t>> stems;
  for (int s = 0; s < 4; ++s) {
    std::vector<int32_t> stem;
    for (int i = 0; i < 24; ++i) stem.push_back(static_cast<int32_t>(rng() % 3));
    stems.push_back(stem);
  }
  std::map<troupe::seq_id, sim_seq> live;
  std::map<int32_t, std::vector<int32_t>> content;  // block -> full prefix its KV holds
  troupe::seq_id next_id = 1;
  int64_t reused = 0;
  for (int step = 0; step < 20000; ++step) {
    const auto op = rng() % 10;
    if ((op < 3 && live.size() < 12) || live.empty()) {
      sim_seq s;
      s.tokens = random_prompt(rng, stems);
      const int cached = m.begin_sequence(next_id, s.tokens);
      REQUIRE(cached % bs == 0);
      REQUIRE(cached < static_cast<int>(s.tokens.size()));
      const auto& table = m.block_table(next_id);
      REQUIRE(table.size() == static_cast<size_t>(cached / bs));
      for (size_t i = 0; i < table.size(); ++i)  // adopted KV is exactly this prefix
        REQUIRE(content.at(table[i]) == head(s.tokens, (i + 1) * bs));
      s.n_computed = cached;
      s.n_known_blocks = table.size();
      reused += cached / bs;
      live.emplace(next_id++, std::move(s));
    } else {
      auto it = std::next(live.begin(), static_cast<std::ptrdiff_t>(rng() % live.size()));
      if (op < 5 || it->second.tokens.size() > 60 ||
          !sim_step(m, rng, it->first, it->second, content)) {
        m.end_sequence(it->first);
        live.erase(it);
      }
    }
    std::set<troupe::seq_id> ids;
    for (const auto& kv : live) ids.insert(kv.first);
    access::check(m, ids);
  }
  REQUIRE(m.stats().reused_blocks == reused);
  REQUIRE(m.stats().reused_tokens == reused * bs);
  REQUIRE(reused > 100);                    // the mix really exercised sharing
  REQUIRE(m.stats().evicted_blocks > 100);  // and eviction
}

TEST_CASE("forget_cached drops every cached prefix block and keeps live tables", "[kv]") {
  block_manager m(8, 4);
  std::vector<int32_t> toks{1, 2, 3, 4, 5, 6, 7, 8, 9};
  m.begin_sequence(1, toks);
  REQUIRE(m.reserve(1, 9));
  m.commit(1, toks, 9);
  m.end_sequence(1);  // two published blocks stay cached
  m.begin_sequence(2, {42, 43, 44, 45, 46});
  REQUIRE(m.reserve(2, 5));
  m.forget_cached();
  CHECK(m.n_available() == 8 - 2);
  CHECK(m.block_table(2).size() == 2);
  CHECK(m.begin_sequence(3, toks) == 0);  // the old prefix is not found any more
}
