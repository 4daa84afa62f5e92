#pragma once
/// The router's approximate view of the replicas' prefix caches: prefix-block key
/// (runtime/engine/prefix_hash.h) -> the replicas believed to cache that block. Fed by the
/// replicas' summaries (prefix_summary) and by the router's own routing decisions (a
/// replica given a prompt will cache its blocks). Approximate on purpose: a key may be
/// reported late, or stay after the replica evicted the block until the replica's next
/// summary or until it ages out; a wrong guess only costs a cache miss.
///
/// Bounded: at most `capacity` keys, the least recently used (added or matched) dropped
/// first; each key lists each replica at most once.
#include <cstddef>
#include <cstdint>
#include <list>
#include <unordered_map>
#include <vector>

namespace troupe {

/// Key -> replicas, LRU-bounded. Not thread-safe: owned by the router actor.
class prefix_index {
 public:
  /// Holds at most `capacity` keys (at least 1).
  explicit prefix_index(size_t capacity = 65536);

  /// Replica `replica` caches the block `key` (marks the key most recently used).
  void add(uint64_t key, int32_t replica);
  /// Replica `replica` no longer caches `key`; the key goes when no replica is left.
  void remove(uint64_t key, int32_t replica);
  /// Forgets every key of `replica` (it failed, or sent a snapshot).
  void forget(int32_t replica);
  /// For each replica 0..n_replicas-1: how many leading keys of `chain` it caches, without
  /// a gap (a prefix cache serves a block only after the blocks before it). Marks the
  /// matched keys most recently used.
  std::vector<int> match(const std::vector<uint64_t>& chain, size_t n_replicas);

  /// Keys held.
  size_t size() const { return entries_.size(); }
  /// Keys that replica `replica` is believed to cache.
  size_t count(int32_t replica) const;
  size_t capacity() const { return capacity_; }

 private:
  struct entry {
    std::vector<int32_t> replicas;        ///< each at most once
    std::list<uint64_t>::iterator lru;   ///< its place in lru_
  };
  void touch(entry& e);

  size_t capacity_;
  std::unordered_map<uint64_t, entry> entries_;
  std::list<uint64_t> lru_;  ///< keys, least recently used first
};

}  // namespace troupe
