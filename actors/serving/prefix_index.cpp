#include "actors/serving/prefix_index.h"

#include <algorithm>

namespace troupe {

prefix_index::prefix_index(size_t capacity) : capacity_(std::max<size_t>(capacity, 1)) {}

void prefix_index::touch(entry& e) { lru_.splice(lru_.end(), lru_, e.lru); }

void prefix_index::add(uint64_t key, int32_t replica) {
  auto it = entries_.find(key);
  if (it == entries_.end()) {
    if (entries_.size() >= capacity_) {  // age out the least recently used key
      entries_.erase(lru_.front());
      lru_.pop_front();
    }
    lru_.push_back(key);
    it = entries_.emplace(key, entry{{}, std::prev(lru_.end())}).first;
  } else {
    touch(it->second);
  }
  auto& r = it->second.replicas;
  if (std::find(r.begin(), r.end(), replica) == r.end()) r.push_back(replica);
}

void prefix_index::remove(uint64_t key, int32_t replica) {
  auto it = entries_.find(key);
  if (it == entries_.end()) return;
  auto& r = it->second.replicas;
  r.erase(std::remove(r.begin(), r.end(), replica), r.end());
  if (!r.empty()) return;
  lru_.erase(it->second.lru);
  entries_.erase(it);
}

void prefix_index::forget(int32_t replica) {
  for (auto it = entries_.begin(); it != entries_.end();) {
    auto& r = it->second.replicas;
    r.erase(std::remove(r.begin(), r.end(), replica), r.end());
    if (r.empty()) {
      lru_.erase(it->second.lru);
      it = entries_.erase(it);
    } else {
      ++it;
    }
  }
}

std::vector<int> prefix_index::match(const std::vector<uint64_t>& chain, size_t n_replicas) {
  std::vector<int> depth(n_replicas, 0);
  for (size_t i = 0; i < chain.size(); ++i) {
    auto it = entries_.find(chain[i]);
    if (it == entries_.end()) break;
    bool advanced = false;
    for (int32_t r : it->second.replicas)
      if (r >= 0 && static_cast<size_t>(r) < n_replicas && depth[static_cast<size_t>(r)] == static_cast<int>(i)) {
        depth[static_cast<size_t>(r)]++;
        advanced = true;
      }
    if (!advanced) break;
    touch(it->second);
  }
  return depth;
}

size_t prefix_index::count(int32_t replica) const {
  size_t n = 0;
  for (const auto& [key, e] : entries_)
    if (std::find(e.replicas.begin(), e.replicas.end(), replica) != e.replicas.end()) ++n;
  return n;
}

}  // namespace troupe
