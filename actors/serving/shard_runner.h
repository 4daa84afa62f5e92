#pragma once
/// The shard actor's worker thread (actors/serving/shard.cpp): loading, connecting and
/// steps run here, fed by a FIFO job queue, and each completion goes back to the actor as a
/// private message (through a weak address: the thread never keeps the actor alive).
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "actors/serving/shard.h"
#include "actors/serving/shard_faults.h"
#include "actors/serving/shard_job.h"
#include "runtime/engine/shard_worker.h"

namespace troupe {
namespace shard_completion {

// Private completions, worker thread -> shard actor.
using loaded_atom = caf::atom_constant<caf::atom("shloaded")>;     // shard_addresses
using load_failed_atom = caf::atom_constant<caf::atom("shloadfail")>;  // std::string why
using connected_atom = caf::atom_constant<caf::atom("shconnectd")>;  // uint64_t job
using step_done_atom = caf::atom_constant<caf::atom("shstepdone")>;  // uint64_t job, step_output
using job_failed_atom = caf::atom_constant<caf::atom("shjobfail")>;  // uint64_t job, caf::error

using progress_fn = std::function<void(const std::string&)>;

using relinked_atom = caf::atom_constant<caf::atom("shrelinked")>;  // uint64_t job, bool adopted, shard_addresses
using stall_check_atom = caf::atom_constant<caf::atom("shstallchk")>;  // the stall watchdog's timer

}  // namespace shard_completion

/// The worker thread and its queue. Shared by the actor's state and the thread itself, so
/// a thread still busy when its shard stops (detached then) owns everything it touches.
class shard_runner : public std::enable_shared_from_this<shard_runner> {
 public:
  shard_runner(shard_spec spec, shard_completion::progress_fn progress, caf::actor_addr owner)
      : spec_(std::move(spec)), name_(shard_name(spec_)), progress_(std::move(progress)),
        owner_(std::move(owner)) {}

  ~shard_runner();

  /// Starts the thread: load, then jobs in posting order.
  void start();

  /// Queues a job (runs after loading and after every job posted before it).
  void post(shard_job job);

  /// Makes the worker's blocked and later transfers fail at once; applies to a worker
  /// that is still loading as soon as it exists. Any thread.
  void abort() noexcept;

  /// A new head adopts the shard: the old owner's queued steps fail at once and its step in
  /// flight at its next transfer (a peer it waits for may never send), so the relink
  /// posted next runs now instead of after them. Any thread.
  void cut_short_for_adoption(const std::string& why);

  /// Aborts and drops queued jobs without waiting: a thread that has finished is joined,
  /// one still busy (loading, or stuck in a step) is detached and holds its device in
  /// device_releases until it ends. Called once, from the actor; never blocks.
  void stop();

  /// Progress beats of the worker thread so far (layers computed, transfers polled).
  uint64_t beats() const { return beats_.load(std::memory_order_relaxed); }
  /// The step the worker is in: its id + 1, 0 when it runs no step.
  uint64_t running_step() const { return running_step_.load(); }

 private:
  void main();

  /// Waits for stopped shards' workers on this device (bounded by release_wait_ms).
  void wait_for_device();

  bool load();

  std::optional<shard_job> next_job();

  /// A step: beats at its start, then the forward (which beats per layer and transfer).
  step_output run_step(step_request& r);

  /// Overlapped steps are pipelined (run_pipelined) unless TROUPE_PIPELINE=0. On one H100 it
  /// took 2-7% off the decode step at batch 1-256 over two calls (docs/benchmarks.md, 2026-12-05).
  static bool pipelining();

  /// Overlapped steps on a device shard: begins the next queued step while this one runs
  /// (shard_worker::begin), so the device finds it queued; returns with none in flight.
  /// Steps with injected faults (chaos tests) take run_step instead.
  void run_pipelined(shard_job first);

  /// Begins the last step of `flight` on the worker; a step that cannot begin is failed and
  /// taken off `flight` (the worker then holds what `flight` holds).
  void begin_pipelined(std::deque<shard_job>& flight);

  /// Answers step `j` with an error naming `why` (nothing when even that fails: the
  /// replica's step deadline then fails it).
  void fail_job(const shard_job& j, const std::string& why) noexcept;

  /// The next queued job when it is a step the worker can begin now (left queued otherwise).
  std::optional<shard_job> next_pipelined();

  void run(shard_job& job);

  /// Logs `r` when it took longer than TROUPE_SLOW_STEP_MS: host and device time, its shape,
  /// and whether it ran as a decode graph replay (`replayed`) or eagerly; a diagnostic, off
  /// when unset.
  void note_step(const step_request& r, const step_output& out, bool replayed) noexcept;

  /// The worker's context's decode graph replays so far (0 before one exists).
  int64_t graph_replays() const;

  /// Logs the time the worker had no step before step `step_id` when it is at least
  /// TROUPE_SLOW_STEP_MS and under a second (the device idled for want of a step).
  void note_gap(uint64_t step_id) noexcept;

  void report(const std::string& what);

  /// Sends a completion to the actor if it is still alive.
  template <class... Ts>
  void reply(Ts&&... xs) {
    if (auto dest = caf::actor_cast<caf::actor>(owner_)) caf::anon_send(dest, std::forward<Ts>(xs)...);
  }

  const shard_spec spec_;
  const std::string name_;
  const shard_completion::progress_fn progress_;
  const caf::actor_addr owner_;  // weak: the thread never keeps the actor alive
  std::thread thread_;
  std::optional<shard_faults::hang_fault> hang_;    // worker thread only
  std::optional<shard_faults::token_fault> token_;  // worker thread only
  uint64_t steps_run_ = 0;          // worker thread only
  std::chrono::steady_clock::time_point last_end_{};  // worker thread only: when the last step ended
  std::atomic<uint64_t> beats_{0};
  std::atomic<uint64_t> running_step_{0};
  std::atomic<bool> busy_{false};  // loading or running a job (for the stop's log line)

  std::mutex mx_;  // guards the queue, the flags and the worker pointer
  std::condition_variable cv_;
  std::deque<shard_job> jobs_;
  bool closing_ = false;
  bool aborted_ = false;
  std::unique_ptr<shard_worker> worker_;  // set once loaded; used without the lock by the thread only

  std::mutex done_mx_;  // guards finished_ and retired_
  bool finished_ = false;
  bool retired_ = false;  // stopped while busy: holds spec_.device in device_releases
};

}  // namespace troupe
