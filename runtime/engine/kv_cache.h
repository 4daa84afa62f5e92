#pragma once
/// Paged KV-cache bookkeeping: fixed-size blocks, per-sequence block tables, a free
/// list, and a prefix table that lets sequences with identical prompt prefixes share
/// full blocks (vLLM's automatic prefix caching). Holds no tensor data: the shard
/// context owns the K/V storage; this class only hands out block ids.
#include <cstddef>
#include <cstdint>
#include <list>
#include <unordered_map>
#include <vector>

namespace troupe {

using seq_id = uint64_t;

/// Counters for metrics and tests.
struct block_stats {
  int64_t reused_blocks = 0;    ///< blocks adopted from the prefix table, total
  int64_t reused_tokens = 0;    ///< tokens skipped thanks to reuse, total
  int64_t evicted_blocks = 0;   ///< cached blocks recycled for new data, total
  int64_t queried_tokens = 0;   ///< tokens of sequences started (looked up in the prefix table), total
};

/// What changed in the prefix table since the last block_manager::take_prefix_changes:
/// the keys (prefix_hash.h) of blocks published and of blocks no longer cached. A key
/// appears in at most one of the two lists (its last state wins).
struct prefix_changes {
  /// The journal overflowed (or a snapshot was asked for): forget every key reported
  /// before; `added` holds the keys cached now (capped), `removed` is empty.
  bool reset = false;
  std::vector<uint64_t> added;    ///< keys now cached
  std::vector<uint64_t> removed;  ///< keys no longer cached (evicted, forgotten)
};

/// Hands out KV blocks to sequences. Not thread-safe: owned by one scheduler.
class block_manager {
 public:
  /// `n_blocks` blocks of `block_size` token slots each.
  block_manager(int n_blocks, int block_size, bool prefix_caching = true);

  int block_size() const { return block_size_; }
  int n_blocks() const { return n_blocks_; }
  /// Blocks a new allocation can take: free ones plus cached ones nobody uses.
  int n_available() const;
  /// Blocks referenced by at least one live sequence.
  int n_used() const;

  /// Starts sequence `id` with prompt `tokens`: adopts the cached full blocks that match
  /// the longest prefix and returns how many tokens they cover (a multiple of
  /// block_size, always < tokens.size() so at least one token is computed).
  int begin_sequence(seq_id id, const std::vector<int32_t>& tokens);

  /// Makes room for the sequence to hold `n_tokens` tokens in total. Returns false, and
  /// changes nothing, when not enough blocks are available.
  bool reserve(seq_id id, int n_tokens);

  /// Records that the KV of `tokens[0, n_computed)` is now stored; every block that
  /// became full is published in the prefix table (keyed by a hash chained over the
  /// whole prefix, so a block is only matched after the same prefix).
  void commit(seq_id id, const std::vector<int32_t>& tokens, int n_computed);

  /// Ends the sequence. Its published blocks stay cached (evicted LRU when the space is
  /// needed); its other blocks return to the free list.
  void end_sequence(seq_id id);

  /// The KV storage behind the blocks was lost (its shards were replaced): forget every
  /// cached prefix so nothing is reused from it. Live sequences keep their blocks; their
  /// owners must recompute them (scheduler::reset).
  void forget_cached();

  /// Uses only blocks [0, n) from now on (the shards' memory holds fewer than configured).
  /// Throws std::logic_error when a live sequence holds a block at or past n.
  void limit_blocks(int n);

  /// The sequence's block ids, in position order.
  const std::vector<int32_t>& block_table(seq_id id) const;
  bool has_sequence(seq_id id) const;
  const block_stats& stats() const { return stats_; }

  /// Starts journaling the prefix table's changes for take_prefix_changes, at most
  /// `max_changes` distinct keys between two takes (beyond that the next take is a
  /// snapshot); 0 stops journaling.
  void track_prefix_changes(std::size_t max_changes);
  /// Whether take_prefix_changes has anything to report.
  bool has_prefix_changes() const { return overflowed_ || !changes_.empty(); }
  /// The changes journaled since the last take (a snapshot of at most `max_snapshot`
  /// keys when the journal overflowed), and clears the journal.
  prefix_changes take_prefix_changes(std::size_t max_snapshot);
  /// Every key cached now (at most `max_keys`) as a reset; clears the journal.
  prefix_changes prefix_snapshot(std::size_t max_keys);

 private:
  friend struct block_manager_test_access;  ///< tests check the internal invariants

  /// A published block is matched exactly, never by hash alone: its own token ids must
  /// be equal and its parent must be the very publication (block id + generation) the
  /// walk adopted one level up. The chained hash is only the lookup key.
  struct block_info {
    int ref_count = 0;
    uint64_t hash = 0;        ///< prefix hash when published
    bool published = false;
    uint64_t gen = 0;         ///< publication generation (unique per publish)
    int32_t parent = -1;      ///< published block of the previous level, -1 for level 0
    uint64_t parent_gen = 0;  ///< generation of `parent` when this block was published
  };
  struct seq_info {
    std::vector<int32_t> blocks;
    int n_committed_blocks = 0;  ///< full blocks already published / hashed
    uint64_t last_hash = 0;      ///< chained hash of the committed prefix
    int32_t parent = -1;         ///< published block holding the last committed level
    uint64_t parent_gen = 0;     ///< its generation
    bool chain_broken = false;   ///< a level could not be published: publish no more
  };
  int take_block();
  void release_block(int32_t b);
  uint64_t chain_hash(uint64_t prev, const int32_t* toks) const;
  bool is_live(int32_t b, uint64_t gen) const;
  bool matches(int32_t b, const int32_t* toks, int32_t parent, uint64_t parent_gen) const;
  void publish_block(seq_info& s, int32_t b, uint64_t h, const int32_t* toks);
  void unpublish(int32_t b);
  seq_info& find_seq(seq_id id, const char* where);
  void journal(uint64_t key, bool cached);

  int n_blocks_;
  int block_size_;
  bool prefix_caching_;
  uint64_t next_gen_ = 0;
  std::vector<block_info> blocks_;
  /// [n_blocks * block_size] token ids of each published block, for exact matching
  std::vector<int32_t> block_tokens_;
  std::vector<int32_t> free_list_;
  std::list<int32_t> evictable_;  ///< cached, unreferenced blocks, least recently used first
  /// [n_blocks] position of each block in evictable_, valid while published with ref 0
  std::vector<std::list<int32_t>::iterator> evictable_pos_;
  std::unordered_map<uint64_t, int32_t> prefix_table_;
  std::unordered_map<seq_id, seq_info> seqs_;
  block_stats stats_;
  std::size_t max_changes_ = 0;                    ///< journal bound; 0 = not journaling
  bool overflowed_ = false;                    ///< more than max_changes_ since the last take
  std::unordered_map<uint64_t, bool> changes_; ///< key -> cached now (last state wins)
};

}  // namespace troupe
