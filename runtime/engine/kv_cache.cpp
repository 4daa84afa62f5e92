#include "runtime/engine/kv_cache.h"

#include "runtime/engine/prefix_hash.h"

#include <algorithm>

#include <cstring>
#include <stdexcept>
#include <string>

/// Prefix matching is exact. The chained 64-bit hash is only the key of prefix_table_;
/// a hit is accepted when the block's stored token ids equal the prompt's and its
/// recorded parent is the very publication (block id + generation) adopted one level
/// up. By induction the whole prefix is then identical, so a hash collision (accidental
/// or crafted) can cost a cache miss but never hand a sequence another prompt's KV.
/// A block whose parent was evicted is stale: unreachable, and replaced in the table
/// when the same prefix is published again.

namespace troupe {

namespace {

std::string seq_name(seq_id id) { return "sequence " + std::to_string(id); }

}  // namespace

block_manager::block_manager(int n_blocks, int block_size, bool prefix_caching)
    : n_blocks_(n_blocks), block_size_(block_size), prefix_caching_(prefix_caching) {
  if (n_blocks <= 0)
    throw std::invalid_argument("block_manager: n_blocks must be positive, got " +
                                std::to_string(n_blocks));
  if (block_size <= 0)
    throw std::invalid_argument("block_manager: block_size must be positive, got " +
                                std::to_string(block_size));
  blocks_.resize(static_cast<size_t>(n_blocks));
  evictable_pos_.resize(static_cast<size_t>(n_blocks));
  if (prefix_caching_)
    block_tokens_.resize(static_cast<size_t>(n_blocks) * static_cast<size_t>(block_size));
  free_list_.reserve(static_cast<size_t>(n_blocks));
  // Popped from the back: block 0 is handed out first.
  for (int b = n_blocks - 1; b >= 0; --b) free_list_.push_back(b);
}

int block_manager::n_available() const {
  return static_cast<int>(free_list_.size() + evictable_.size());
}

int block_manager::n_used() const { return n_blocks_ - n_available(); }

block_manager::seq_info& block_manager::find_seq(seq_id id, const char* where) {
  auto it = seqs_.find(id);
  if (it == seqs_.end())
    throw std::out_of_range(std::string("block_manager::") + where + ": unknown " +
                            seq_name(id));
  return it->second;
}

bool block_manager::has_sequence(seq_id id) const { return seqs_.count(id) != 0; }

const std::vector<int32_t>& block_manager::block_table(seq_id id) const {
  auto it = seqs_.find(id);
  if (it == seqs_.end())
    throw std::out_of_range("block_manager::block_table: unknown " + seq_name(id));
  return it->second.blocks;
}

uint64_t block_manager::chain_hash(uint64_t prev, const int32_t* toks) const {
  return chain_block_hash(prev, toks, block_size_);
}

void block_manager::journal(uint64_t key, bool cached) {
  if (max_changes_ == 0 || overflowed_) return;
  changes_[key] = cached;
  if (changes_.size() > max_changes_) {
    overflowed_ = true;  // the next take is a snapshot
    changes_.clear();
  }
}

void block_manager::track_prefix_changes(size_t max_changes) {
  max_changes_ = max_changes;
  overflowed_ = false;
  changes_.clear();
}

prefix_changes block_manager::take_prefix_changes(size_t max_snapshot) {
  if (overflowed_) return prefix_snapshot(max_snapshot);
  prefix_changes out;
  for (const auto& [key, cached] : changes_) (cached ? out.added : out.removed).push_back(key);
  changes_.clear();
  return out;
}

prefix_changes block_manager::prefix_snapshot(size_t max_keys) {
  prefix_changes out;
  out.reset = true;
  for (const auto& [key, b] : prefix_table_) {
    if (out.added.size() >= max_keys) break;
    if (blocks_[static_cast<size_t>(b)].published) out.added.push_back(key);
  }
  overflowed_ = false;
  changes_.clear();
  return out;
}

bool block_manager::is_live(int32_t b, uint64_t gen) const {
  return b < 0 || (blocks_[static_cast<size_t>(b)].published &&
                   blocks_[static_cast<size_t>(b)].gen == gen);
}

bool block_manager::matches(int32_t b, const int32_t* toks, int32_t parent,
                            uint64_t parent_gen) const {
  const block_info& info = blocks_[static_cast<size_t>(b)];
  if (!info.published || info.parent != parent) return false;
  if (parent >= 0 && info.parent_gen != parent_gen) return false;
  const int32_t* stored = block_tokens_.data() + static_cast<size_t>(b) * block_size_;
  return std::memcmp(stored, toks, sizeof(int32_t) * static_cast<size_t>(block_size_)) == 0;
}

int block_manager::take_block() {
  if (!free_list_.empty()) {
    int32_t b = free_list_.back();
    free_list_.pop_back();
    return b;
  }
  if (evictable_.empty()) return -1;
  int32_t b = evictable_.front();
  evictable_.pop_front();
  block_info& info = blocks_[static_cast<size_t>(b)];
  prefix_table_.erase(info.hash);
  journal(info.hash, false);
  info.published = false;
  ++stats_.evicted_blocks;
  return b;
}

void block_manager::release_block(int32_t b) {
  block_info& info = blocks_[static_cast<size_t>(b)];
  if (--info.ref_count > 0) return;
  if (info.published) {
    evictable_pos_[static_cast<size_t>(b)] = evictable_.insert(evictable_.end(), b);
  } else {
    free_list_.push_back(b);
  }
}

void block_manager::unpublish(int32_t b) {
  block_info& info = blocks_[static_cast<size_t>(b)];
  prefix_table_.erase(info.hash);
  journal(info.hash, false);
  info.published = false;
  if (info.ref_count == 0) {
    evictable_.erase(evictable_pos_[static_cast<size_t>(b)]);
    free_list_.push_back(b);
  }
}

void block_manager::limit_blocks(int n) {
  if (n <= 0 || n > n_blocks_)
    throw std::invalid_argument("block_manager: cannot limit " + std::to_string(n_blocks_) + " blocks to " +
                                std::to_string(n));
  for (int32_t b = n; b < n_blocks_; ++b)
    if (blocks_[static_cast<size_t>(b)].ref_count > 0)
      throw std::logic_error("block_manager: block " + std::to_string(b) + " is in use: cannot limit the cache to " +
                             std::to_string(n) + " blocks");
  for (int32_t b = n; b < n_blocks_; ++b)
    if (blocks_[static_cast<size_t>(b)].published) unpublish(b);
  free_list_.erase(std::remove_if(free_list_.begin(), free_list_.end(), [n](int32_t b) { return b >= n; }),
                   free_list_.end());
  n_blocks_ = n;
}

void block_manager::forget_cached() {
  for (int32_t b = 0; b < n_blocks_; ++b)
    if (blocks_[static_cast<size_t>(b)].published) unpublish(b);
  for (auto& [id, s] : seqs_) s.chain_broken = true;  // their earlier levels are gone
}

void block_manager::publish_block(seq_info& s, int32_t b, uint64_t h, const int32_t* toks) {
  block_info& info = blocks_[static_cast<size_t>(b)];
  info.published = true;
  info.hash = h;
  info.gen = ++next_gen_;
  info.parent = s.parent;
  info.parent_gen = s.parent_gen;
  std::memcpy(block_tokens_.data() + static_cast<size_t>(b) * block_size_, toks,
              sizeof(int32_t) * static_cast<size_t>(block_size_));
  prefix_table_.emplace(h, b);
  journal(h, true);
  s.parent = b;
  s.parent_gen = info.gen;
}

int block_manager::begin_sequence(seq_id id, const std::vector<int32_t>& tokens) {
  if (seqs_.count(id))
    throw std::logic_error("block_manager::begin_sequence: " + seq_name(id) +
                           " already exists");
  if (tokens.empty())
    throw std::invalid_argument("block_manager::begin_sequence: " + seq_name(id) +
                                " has an empty prompt");
  seq_info s;
  stats_.queried_tokens += static_cast<int64_t>(tokens.size());
  if (prefix_caching_) {
    const size_t max_adopt = (tokens.size() - 1) / static_cast<size_t>(block_size_);
    uint64_t h = 0;
    for (size_t i = 0; i < max_adopt; ++i) {
      const int32_t* toks = tokens.data() + i * static_cast<size_t>(block_size_);
      uint64_t next = chain_hash(h, toks);
      auto it = prefix_table_.find(next);
      if (it == prefix_table_.end() || !matches(it->second, toks, s.parent, s.parent_gen))
        break;
      int32_t b = it->second;
      block_info& info = blocks_[static_cast<size_t>(b)];
      if (info.ref_count++ == 0) evictable_.erase(evictable_pos_[static_cast<size_t>(b)]);
      s.blocks.push_back(b);
      s.parent = b;
      s.parent_gen = info.gen;
      h = next;
    }
    s.n_committed_blocks = static_cast<int>(s.blocks.size());
    s.last_hash = h;
    stats_.reused_blocks += s.n_committed_blocks;
    stats_.reused_tokens += static_cast<int64_t>(s.n_committed_blocks) * block_size_;
  }
  int cached = s.n_committed_blocks * block_size_;
  seqs_.emplace(id, std::move(s));
  return cached;
}

bool block_manager::reserve(seq_id id, int n_tokens) {
  seq_info& s = find_seq(id, "reserve");
  if (n_tokens < 0)
    throw std::invalid_argument("block_manager::reserve: " + seq_name(id) +
                                " asks for a negative token count " +
                                std::to_string(n_tokens));
  const int64_t want = (static_cast<int64_t>(n_tokens) + block_size_ - 1) / block_size_;
  const int64_t need = want - static_cast<int64_t>(s.blocks.size());
  if (need <= 0) return true;
  if (need > n_available()) return false;
  for (int64_t i = 0; i < need; ++i) {
    int32_t b = take_block();
    blocks_[static_cast<size_t>(b)].ref_count = 1;
    s.blocks.push_back(b);
  }
  return true;
}

void block_manager::commit(seq_id id, const std::vector<int32_t>& tokens, int n_computed) {
  seq_info& s = find_seq(id, "commit");
  const int64_t capacity = static_cast<int64_t>(s.blocks.size()) * block_size_;
  if (n_computed < 0 || static_cast<size_t>(n_computed) > tokens.size() ||
      n_computed > capacity)
    throw std::invalid_argument("block_manager::commit: " + seq_name(id) + " reports " +
                                std::to_string(n_computed) + " computed tokens, but has " +
                                std::to_string(tokens.size()) + " tokens and room for " +
                                std::to_string(capacity));
  const int n_full = n_computed / block_size_;
  for (; s.n_committed_blocks < n_full; ++s.n_committed_blocks) {
    if (!prefix_caching_) continue;
    const int32_t* toks = tokens.data() + static_cast<size_t>(s.n_committed_blocks) *
                                              static_cast<size_t>(block_size_);
    const uint64_t h = chain_hash(s.last_hash, toks);
    s.last_hash = h;
    if (s.chain_broken) continue;
    if (!is_live(s.parent, s.parent_gen)) {
      // The cached block this chain hangs from was evicted meanwhile.
      s.chain_broken = true;
      continue;
    }
    auto it = prefix_table_.find(h);
    if (it != prefix_table_.end()) {
      const int32_t existing = it->second;
      const block_info& e = blocks_[static_cast<size_t>(existing)];
      if (matches(existing, toks, s.parent, s.parent_gen)) {
        // Duplicate of a block already cached: keep the first; ours stays private.
        s.parent = existing;
        s.parent_gen = e.gen;
        continue;
      }
      if (is_live(e.parent, e.parent_gen)) {
        // A genuine hash collision with a live entry: keep it, stop publishing.
        s.chain_broken = true;
        continue;
      }
      unpublish(existing);  // stale: its prefix is gone, it can never be matched
    }
    publish_block(s, s.blocks[static_cast<size_t>(s.n_committed_blocks)], h, toks);
  }
}

void block_manager::end_sequence(seq_id id) {
  seq_info& s = find_seq(id, "end_sequence");
  // Tail first, so a prompt's last blocks are evicted before the prefix they hang from.
  for (auto it = s.blocks.rbegin(); it != s.blocks.rend(); ++it) release_block(*it);
  seqs_.erase(id);
}

}  // namespace troupe
