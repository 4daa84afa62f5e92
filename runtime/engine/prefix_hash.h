#pragma once
/// The keys of the prefix cache: a 64-bit hash per full KV block, chained over the whole
/// prefix (block i's key depends on every token of blocks 0..i), so equal keys mean
/// (barring collisions) equal prefixes. block_manager keys its prefix table with them;
/// the router computes the same keys from a request's prompt to find the replica whose
/// cache holds the longest prefix of it. One definition, so the two always agree.
#include <cstddef>
#include <cstdint>
#include <vector>

namespace troupe {

/// The key of the block `tokens[0, block_size)` that follows a prefix whose last block
/// has key `prev` (0 for the first block): FNV-1a over the token ids' bytes, seeded with
/// `prev`, then a splitmix64 finalizer.
uint64_t chain_block_hash(uint64_t prev, const int32_t* tokens, int block_size);

/// The chained keys of the full blocks of `tokens` a new sequence may adopt from the
/// cache: at most (tokens.size() - 1) / block_size of them (the last token is always
/// computed, as block_manager::begin_sequence does), and at most `max_blocks`.
std::vector<uint64_t> prefix_block_hashes(const std::vector<int32_t>& tokens, int block_size,
                                          std::size_t max_blocks = SIZE_MAX);

}  // namespace troupe
