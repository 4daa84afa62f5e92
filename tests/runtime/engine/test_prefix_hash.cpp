// The prefix-cache keys the router and block_manager share (runtime/engine/prefix_hash.h),
// and block_manager's journal of its prefix table (what a replica summarizes for the
// router): the keys a manager publishes are exactly the keys prefix_block_hashes computes
// from the same tokens, evictions are reported as removed, and an overflowing journal
// turns into a snapshot.
#include <catch2/catch.hpp>
#include <algorithm>
#include <numeric>
#include <set>
#include <vector>

#include "runtime/engine/kv_cache.h"
#include "runtime/engine/prefix_hash.h"

using namespace troupe;

namespace {

std::vector<int32_t> tokens_from(int32_t first, int n) {
  std::vector<int32_t> t(static_cast<size_t>(n));
  std::iota(t.begin(), t.end(), first);
  return t;
}

std::set<uint64_t> as_set(const std::vector<uint64_t>& v) { return {v.begin(), v.end()}; }

/// Runs a whole prompt of `tokens` through `m` as sequence `id` and ends it.
void run_sequence(block_manager& m, seq_id id, const std::vector<int32_t>& tokens) {
  m.begin_sequence(id, tokens);
  REQUIRE(m.reserve(id, static_cast<int>(tokens.size())));
  m.commit(id, tokens, static_cast<int>(tokens.size()));
  m.end_sequence(id);
}

}  // namespace

TEST_CASE("prefix keys chain over the whole prefix and stop before the last token", "[kv][prefix-hash]") {
  const auto a = tokens_from(1, 64);
  auto b = a;
  b[0] = 999;  // differs in the first block only
  const auto ka = prefix_block_hashes(a, 16);
  const auto kb = prefix_block_hashes(b, 16);
  CHECK(ka.size() == 3);  // (64 - 1) / 16: the last token is always computed
  CHECK(prefix_block_hashes(tokens_from(1, 65), 16).size() == 4);
  CHECK(prefix_block_hashes(a, 16, 2).size() == 2);
  CHECK(prefix_block_hashes({}, 16).empty());
  REQUIRE(kb.size() == 3);
  for (size_t i = 0; i < 3; ++i) CHECK(ka[i] != kb[i]);  // every later key depends on block 0
  CHECK(ka[0] == chain_block_hash(0, a.data(), 16));
  CHECK(ka[1] == chain_block_hash(ka[0], a.data() + 16, 16));
}

TEST_CASE("the keys a block manager publishes are the keys prefix_block_hashes computes", "[kv][prefix-hash]") {
  block_manager m(64, 16);
  m.track_prefix_changes(1024);
  CHECK_FALSE(m.has_prefix_changes());
  const auto prompt = tokens_from(7, 81);  // 5 full blocks
  run_sequence(m, 1, prompt);
  REQUIRE(m.has_prefix_changes());
  const auto changes = m.take_prefix_changes(1024);
  CHECK_FALSE(changes.reset);
  CHECK(changes.removed.empty());
  CHECK(as_set(changes.added) == as_set(prefix_block_hashes(prompt, 16)));
  CHECK_FALSE(m.has_prefix_changes());
  // A second sequence with the same prompt adopts the blocks: nothing new to report.
  run_sequence(m, 2, prompt);
  CHECK_FALSE(m.has_prefix_changes());
}

TEST_CASE("evicted and forgotten blocks are journaled as removed keys", "[kv][prefix-hash]") {
  block_manager m(5, 16);
  m.track_prefix_changes(1024);
  const auto first = tokens_from(1, 33);  // 2 full blocks cached, 3 blocks reserved
  run_sequence(m, 1, first);
  const auto first_keys = as_set(m.take_prefix_changes(1024).added);
  REQUIRE(first_keys.size() == 2);
  // A 5-block prompt needs the cached blocks' space: the first prompt's blocks go.
  const auto second = tokens_from(500, 65);
  run_sequence(m, 2, second);
  const auto changes = m.take_prefix_changes(1024);
  CHECK_FALSE(changes.reset);
  CHECK(as_set(changes.removed) == first_keys);
  CHECK(as_set(changes.added) == as_set(prefix_block_hashes(second, 16)));
  m.forget_cached();
  const auto gone = m.take_prefix_changes(1024);
  CHECK(gone.added.empty());
  CHECK(as_set(gone.removed) == as_set(prefix_block_hashes(second, 16)));
}

TEST_CASE("a journal past its bound becomes a capped snapshot of the keys cached", "[kv][prefix-hash]") {
  block_manager m(64, 16);
  m.track_prefix_changes(4);
  const auto prompt = tokens_from(3, 161);  // 10 full blocks: more than 4 changes
  run_sequence(m, 1, prompt);
  auto changes = m.take_prefix_changes(1000);
  CHECK(changes.reset);
  CHECK(changes.removed.empty());
  CHECK(as_set(changes.added) == as_set(prefix_block_hashes(prompt, 16)));
  run_sequence(m, 2, tokens_from(9000, 161));
  changes = m.take_prefix_changes(3);
  CHECK(changes.reset);
  CHECK(changes.added.size() == 3);
  const auto snapshot = m.prefix_snapshot(1000);
  CHECK(snapshot.reset);
  CHECK(snapshot.added.size() == 20);
  CHECK_FALSE(m.has_prefix_changes());
}
