#include "runtime/engine/prefix_hash.h"

#include <algorithm>

namespace troupe {

namespace {

constexpr uint64_t fnv_offset = 14695981039346656037ULL;
constexpr uint64_t fnv_prime = 1099511628211ULL;

uint64_t splitmix64_finalize(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

}  // namespace

uint64_t chain_block_hash(uint64_t prev, const int32_t* tokens, int block_size) {
  uint64_t h = fnv_offset ^ prev;
  for (int i = 0; i < block_size; ++i) {
    auto v = static_cast<uint32_t>(tokens[i]);
    for (int byte = 0; byte < 4; ++byte) {
      h ^= (v >> (8 * byte)) & 0xffu;
      h *= fnv_prime;
    }
  }
  return splitmix64_finalize(h);
}

std::vector<uint64_t> prefix_block_hashes(const std::vector<int32_t>& tokens, int block_size, size_t max_blocks) {
  std::vector<uint64_t> out;
  if (tokens.empty() || block_size <= 0) return out;
  const size_t n = std::min(max_blocks, (tokens.size() - 1) / static_cast<size_t>(block_size));
  out.reserve(n);
  uint64_t h = 0;
  for (size_t i = 0; i < n; ++i) {
    h = chain_block_hash(h, tokens.data() + i * static_cast<size_t>(block_size), block_size);
    out.push_back(h);
  }
  return out;
}

}  // namespace troupe
