#pragma once
/// Progress beats: a thread doing long work (a shard's worker) counts that it advances, so
/// that a watchdog on another thread can tell a slow step from a stuck one. Beats are
/// thread-local: a thread that attached no counter beats nowhere, at the cost of one load.
#include <atomic>
#include <cstdint>

namespace troupe {

/// Where the calling thread's beats go.
class progress_beats {
 public:
  /// Makes the calling thread's beats count into `counter` (null: nowhere).
  static void attach(std::atomic<uint64_t>* counter) noexcept { target() = counter; }
  /// One beat of the calling thread: a layer computed, a transfer polled.
  static void beat() noexcept {
    if (auto* c = target()) c->fetch_add(1, std::memory_order_relaxed);
  }

 private:
  static std::atomic<uint64_t>*& target() noexcept {
    static thread_local std::atomic<uint64_t>* counter = nullptr;
    return counter;
  }
};

}  // namespace troupe
