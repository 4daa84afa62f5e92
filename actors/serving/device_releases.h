#pragma once
/// The devices that stopped shards' worker threads still hold (actors/serving/shard.cpp):
/// a shard stopped while its worker is busy detaches that worker, whose memory is freed
/// only when it ends; a new shard on the same device waits for it before it loads.
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <string>

namespace troupe {

/// Workers of stopped shards that are still running, by device. A new shard on the same
/// device waits for them before it loads: their memory is freed only when they end.
class device_releases {
 public:
  /// Never destroyed: detached workers may still release at process exit.
  static device_releases& instance() {
    static auto* r = new device_releases();
    return *r;
  }
  /// A stopped shard's worker on `device` still runs.
  void retire(const std::string& device) {
    std::lock_guard<std::mutex> lock(mx_);
    ++held_[device];
  }
  /// That worker ended and freed what it held.
  void release(const std::string& device) {
    {
      std::lock_guard<std::mutex> lock(mx_);
      auto it = held_.find(device);
      if (it != held_.end() && --it->second == 0) held_.erase(it);
    }
    cv_.notify_all();
  }
  /// Waits (in slices, so that `cancelled` is seen) until no stopped worker holds `device`;
  /// false when `bound` passed first or `cancelled` returned true.
  template <class Cancelled>
  bool wait(const std::string& device, std::chrono::milliseconds bound, Cancelled cancelled) {
    const auto until = std::chrono::steady_clock::now() + bound;
    std::unique_lock<std::mutex> lock(mx_);
    while (held_.count(device)) {
      const auto now = std::chrono::steady_clock::now();
      if (now >= until || cancelled()) return false;
      cv_.wait_for(lock, std::min<std::chrono::steady_clock::duration>(until - now, std::chrono::milliseconds(50)));
    }
    return true;
  }

 private:
  std::mutex mx_;
  std::condition_variable cv_;
  std::map<std::string, int> held_;
};

}  // namespace troupe
