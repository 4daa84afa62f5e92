// The router's approximate index of the replicas' prefix caches (actors/serving/
// prefix_index.h): a replica's match is the run of leading keys it holds without a gap,
// removals and forgetting a replica take effect at once, and the index never holds more
// keys than its capacity (the least recently used go first).
#include <catch2/catch.hpp>
#include <vector>

#include "actors/serving/prefix_index.h"

using namespace troupe;

TEST_CASE("a replica matches the leading keys it holds, up to the first gap", "[router][prefix-index]") {
  prefix_index idx(100);
  for (uint64_t k : {11, 12, 13, 14}) idx.add(k, 0);
  for (uint64_t k : {11, 12}) idx.add(k, 1);
  idx.add(14, 1);  // no 13: key 14 alone cannot be served after the gap
  CHECK(idx.match({11, 12, 13, 14, 15}, 3) == std::vector<int>{4, 2, 0});
  CHECK(idx.match({99, 11}, 2) == std::vector<int>{0, 0});  // the first block decides
  CHECK(idx.match({}, 2) == std::vector<int>{0, 0});
  CHECK(idx.size() == 4);
  CHECK(idx.count(1) == 3);
}

TEST_CASE("removed keys and forgotten replicas no longer match", "[router][prefix-index]") {
  prefix_index idx(100);
  for (uint64_t k : {1, 2, 3}) {
    idx.add(k, 0);
    idx.add(k, 1);
  }
  idx.remove(2, 0);
  CHECK(idx.match({1, 2, 3}, 2) == std::vector<int>{1, 3});
  idx.forget(1);
  CHECK(idx.match({1, 2, 3}, 2) == std::vector<int>{1, 0});
  CHECK(idx.size() == 2);  // key 2 had no replica left
  idx.remove(1, 0);
  idx.remove(3, 0);
  CHECK(idx.size() == 0);
}

TEST_CASE("the index holds at most its capacity and drops the least recently used keys", "[router][prefix-index]") {
  prefix_index idx(3);
  idx.add(1, 0);
  idx.add(2, 0);
  idx.add(3, 0);
  CHECK(idx.match({1}, 1) == std::vector<int>{1});  // key 1 is now the most recently used
  idx.add(4, 0);                                     // key 2 goes
  CHECK(idx.size() == 3);
  CHECK(idx.match({1}, 1) == std::vector<int>{1});
  CHECK(idx.match({2}, 1) == std::vector<int>{0});
  for (uint64_t k = 10; k < 1000; ++k) idx.add(k, static_cast<int32_t>(k % 4));
  CHECK(idx.size() == 3);
  CHECK(idx.capacity() == 3);
}
