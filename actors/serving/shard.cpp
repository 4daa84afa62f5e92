// The shard actor. Design: the compute (loading, connecting, steps) runs on one
// std::thread per shard, fed by a FIFO job queue (shard_runner below). That thread never
// touches the actor: it reports each completion by anon_send-ing a private message to the
// actor (through a weak address, so it never keeps the actor alive), and the actor, on
// its own execution context, delivers the stored response promise.
//
// The completion messages are not part of the typed interface `shard_actor` (peers must
// not send them, and `remote_actor<shard_actor>` must keep matching): the typed actor
// receives them through its default handler, which runs them against a small untyped
// behavior (`completions`). Anything else still goes to `print_and_drop`.
#include "actors/serving/shard.h"

#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>

#include "actors/actor_system_config.h"
#include "actors/serving/compute_priority.h"
#include "actors/serving/device_releases.h"
#include "actors/serving/shard_faults.h"
#include "actors/serving/shard_job.h"
#include "kernels/base/progress.h"

namespace troupe {

namespace {

// Private completions, worker thread -> shard actor.
using loaded_atom = caf::atom_constant<caf::atom("shloaded")>;     // shard_addresses
using load_failed_atom = caf::atom_constant<caf::atom("shloadfail")>;  // std::string why
using connected_atom = caf::atom_constant<caf::atom("shconnectd")>;  // uint64_t job
using step_done_atom = caf::atom_constant<caf::atom("shstepdone")>;  // uint64_t job, step_output
using job_failed_atom = caf::atom_constant<caf::atom("shjobfail")>;  // uint64_t job, caf::error

using progress_fn = std::function<void(const std::string&)>;

using relinked_atom = caf::atom_constant<caf::atom("shrelinked")>;  // uint64_t job, bool adopted, shard_addresses
using stall_check_atom = caf::atom_constant<caf::atom("shstallchk")>;  // the stall watchdog's timer

/// The worker thread and its queue. Shared by the actor's state and the thread itself, so
/// a thread still busy when its shard stops (detached then) owns everything it touches.
class shard_runner : public std::enable_shared_from_this<shard_runner> {
 public:
  shard_runner(shard_spec spec, progress_fn progress, caf::actor_addr owner)
      : spec_(std::move(spec)), name_(shard_name(spec_)), progress_(std::move(progress)),
        owner_(std::move(owner)) {}

  ~shard_runner() {
    if (thread_.joinable()) thread_.detach();  // only when stop() was never called
  }

  /// Starts the thread: load, then jobs in posting order.
  void start() {
    auto me = shared_from_this();
    thread_ = std::thread([me] { me->main(); });
  }

  /// Queues a job (runs after loading and after every job posted before it).
  void post(shard_job job) {
    {
      std::lock_guard<std::mutex> lock(mx_);
      jobs_.push_back(std::move(job));
    }
    cv_.notify_one();
  }

  /// Makes the worker's blocked and later transfers fail at once; applies to a worker
  /// that is still loading as soon as it exists. Any thread.
  void abort() noexcept {
    std::lock_guard<std::mutex> lock(mx_);
    aborted_ = true;
    if (worker_) worker_->abort();
  }

  /// A new head adopts the shard: the old owner's queued steps fail at once and its step in
  /// flight at its next transfer (a peer it waits for may never send), so the relink
  /// posted next runs now instead of after them. Any thread.
  void cut_short_for_adoption(const std::string& why) {
    std::vector<uint64_t> dropped;
    {
      std::lock_guard<std::mutex> lock(mx_);
      for (auto it = jobs_.begin(); it != jobs_.end();) {
        if (it->kind != job_kind::step) {
          ++it;
          continue;
        }
        dropped.push_back(it->id);
        it = jobs_.erase(it);
      }
      if (worker_) worker_->abort();  // the relink replaces the aborted links
    }
    for (uint64_t id : dropped)
      reply(job_failed_atom::value, id, caf::make_error(caf::sec::runtime_error, name_ + ": step dropped: " + why));
  }

  /// Aborts and drops queued jobs without waiting: a thread that has finished is joined,
  /// one still busy (loading, or stuck in a step) is detached and holds its device in
  /// device_releases until it ends. Called once, from the actor; never blocks.
  void stop() {
    abort();
    {
      std::lock_guard<std::mutex> lock(mx_);
      closing_ = true;
    }
    cv_.notify_all();
    bool finished = false;
    {
      std::lock_guard<std::mutex> lock(done_mx_);
      finished = finished_;
      if (!finished) {
        retired_ = true;
        device_releases::instance().retire(spec_.device);
      }
    }
    if (finished) {
      thread_.join();  // it is past its last use of the worker
      return;
    }
    if (busy_)
      logger()->warn("{}: worker thread still busy at stop (loading or in a job); detached, {} is released when it "
                     "ends", name_, spec_.device);
    thread_.detach();  // an idle one ends as soon as it has freed its worker
  }

  /// Progress beats of the worker thread so far (layers computed, transfers polled).
  uint64_t beats() const { return beats_.load(std::memory_order_relaxed); }
  /// The step the worker is in: its id + 1, 0 when it runs no step.
  uint64_t running_step() const { return running_step_.load(); }

 private:
  void main() {
    renice_compute_thread(spec_.device, name_);
    progress_beats::attach(&beats_);
    busy_ = true;
    if (load()) {
      busy_ = false;
      while (auto job = next_job()) {
        busy_ = true;
        run(*job);
        busy_ = false;
      }
    }
    std::unique_ptr<shard_worker> w;
    {
      std::lock_guard<std::mutex> lock(mx_);
      w = std::move(worker_);
    }
    w.reset();  // communicators and context are released on the thread that used them
    std::lock_guard<std::mutex> lock(done_mx_);
    finished_ = true;
    if (retired_) device_releases::instance().release(spec_.device);
  }

  /// Waits for stopped shards' workers on this device (bounded by release_wait_ms).
  void wait_for_device() {
    const auto bound = std::chrono::milliseconds(spec_.release_wait_ms);
    const bool free = device_releases::instance().wait(spec_.device, bound, [this] {
      std::lock_guard<std::mutex> lock(mx_);
      return aborted_;
    });
    if (free) return;
    throw std::runtime_error("device " + spec_.device + " is still held by a stopped shard's worker after " +
                             std::to_string(bound.count()) + " ms (fault_tolerance.release_wait)");
  }

  bool load() {
    try {
      hang_ = shard_faults::read_hang_fault();
      token_ = shard_faults::read_token_fault();
      wait_for_device();
      auto w = std::make_unique<shard_worker>(spec_, progress_);
      auto addresses = w->addresses();
      {
        std::lock_guard<std::mutex> lock(mx_);
        worker_ = std::move(w);
        if (aborted_) worker_->abort();
      }
      reply(loaded_atom::value, std::move(addresses));
      return true;
    } catch (const std::exception& e) {
      const std::string cause = e.what();
      report("failed: " + cause);
      std::string why = name_ + " (stage " + std::to_string(spec_.stage) + ", tensor rank " +
                        std::to_string(spec_.tp_rank) + ") failed to load";
      if (cause.find(spec_.model_path) == std::string::npos) why += " model '" + spec_.model_path + "'";
      reply(load_failed_atom::value, why + ": " + cause);
      return false;
    }
  }

  std::optional<shard_job> next_job() {
    std::unique_lock<std::mutex> lock(mx_);
    cv_.wait(lock, [this] { return closing_ || !jobs_.empty(); });
    if (closing_) return std::nullopt;
    auto job = std::move(jobs_.front());
    jobs_.pop_front();
    return job;
  }

  /// A step: beats at its start, then the forward (which beats per layer and transfer).
  step_output run_step(step_request& r) {  // fills its ahead rows in place (shard_worker::run)
    running_step_ = r.step_id + 1;
    progress_beats::beat();
    ++steps_run_;
    if (hang_ && name_ == "shard " + hang_->shard && steps_run_ == hang_->step && shard_faults::claim_fault(hang_->text)) {
      logger()->warn("{}: TROUPE_FAULT_HANG: the worker hangs for {} ms in step {}", name_, hang_->sleep.count(),
                     r.step_id);
      std::this_thread::sleep_for(hang_->sleep);
    }
    struct clear {
      std::atomic<uint64_t>& v;
      ~clear() { v = 0; }
    } done{running_step_};
    auto out = worker_->run(r);
    if (token_ && name_ == "shard " + token_->shard && steps_run_ == token_->step && !out.samples.empty() &&
        shard_faults::claim_fault(token_->text)) {
      logger()->warn("{}: TROUPE_FAULT_TOKEN: step {} answers token {} for {}", name_, r.step_id,
                     out.samples[0].token ^ 1, out.samples[0].token);
      out.samples[0].token ^= 1;
    }
    return out;
  }

  /// TROUPE_PIPELINE=1: overlapped steps are pipelined (run_pipelined). Off by default until
  /// measured on a GPU.
  static bool pipelining() {
    static const bool on = [] {
      const char* e = std::getenv("TROUPE_PIPELINE");
      return e && e[0] == '1';
    }();
    return on;
  }

  /// Overlapped steps on a device shard: begins the next queued step while this one runs
  /// (shard_worker::begin), so the device finds it queued; returns with none in flight.
  /// Steps with injected faults (chaos tests) take run_step instead.
  void run_pipelined(shard_job first) {
    std::deque<shard_job> flight;
    auto fail = [this](const shard_job& j, const std::string& why) {
      reply(job_failed_atom::value, j.id,
            caf::make_error(caf::sec::runtime_error,
                            name_ + ": step " + std::to_string(j.step.step_id) + " failed: " + why));
    };
    auto begin = [&](shard_job j) {
      try {
        running_step_ = j.step.step_id + 1;
        progress_beats::beat();
        ++steps_run_;
        worker_->begin(j.step);
        flight.push_back(std::move(j));
      } catch (const std::exception& e) {
        fail(j, e.what());
      }
    };
    begin(std::move(first));
    while (!flight.empty()) {
      if (flight.size() == 1)
        if (auto next = next_pipelined()) begin(std::move(*next));
      bool done = true;  // a device error shows in complete(), which fails the steps in flight
      try {
        done = flight.size() > 1 || worker_->front_done();
      } catch (const std::exception&) {
      }
      if (!done) {
        std::this_thread::yield();
        continue;
      }
      try {
        auto out = worker_->complete();
        reply(step_done_atom::value, flight.front().id, std::move(out));
        flight.pop_front();
      } catch (const std::exception& e) {
        for (const auto& j : flight) fail(j, e.what());
        flight.clear();
      }
    }
    running_step_ = 0;
  }

  /// The next queued job when it is a step the worker can begin now (left queued otherwise).
  std::optional<shard_job> next_pipelined() {
    std::lock_guard<std::mutex> lock(mx_);
    if (closing_ || aborted_ || jobs_.empty() || jobs_.front().kind != job_kind::step ||
        !worker_->can_begin(jobs_.front().step))
      return std::nullopt;
    auto job = std::move(jobs_.front());
    jobs_.pop_front();
    return job;
  }

  void run(shard_job& job) {
    if (job.kind == job_kind::step && job.step.keep_tokens && pipelining() && !hang_ && !token_ &&
        worker_->can_begin(job.step))
      return run_pipelined(std::move(job));
    const std::string what = job.kind == job_kind::step      ? "step " + std::to_string(job.step.step_id)
                             : job.kind == job_kind::relink ? std::string("relink")
                                                            : std::string("connect");
    try {
      if (job.kind == job_kind::step) {
        auto out = run_step(job.step);
        reply(step_done_atom::value, job.id, std::move(out));
      } else if (job.kind == job_kind::relink) {
        shard_addresses a;
        {
          std::lock_guard<std::mutex> lock(mx_);  // abort() reads the communicators relink replaces
          a = worker_->relink(job.drop_context);
        }
        reply(relinked_atom::value, job.id, job.drop_context, std::move(a));
      } else {
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(spec_.timeout_ms);
        if (job.peers.kv_blocks > 0 && !job.peers.keep_kv) worker_->set_kv_blocks(job.peers.kv_blocks);
        worker_->connect(job.peers.tensor_group, job.peers.prev, job.peers.next, deadline, job.peers.keep_kv);
        const shard_context* ctx = worker_->context();
        report(ctx && ctx->graph_count() > 0
                   ? "connected (" + std::to_string(ctx->graph_count()) + " decode graphs captured)"
                   : std::string("connected"));
        reply(connected_atom::value, job.id);
      }
    } catch (const std::exception& e) {
      if (job.kind == job_kind::connect) report("failed: connect: " + std::string(e.what()));
      reply(job_failed_atom::value, job.id,
            caf::make_error(caf::sec::runtime_error, name_ + ": " + what + " failed: " + e.what()));
    }
  }

  void report(const std::string& what) {
    if (progress_) progress_(what);
  }

  /// Sends a completion to the actor if it is still alive.
  template <class... Ts>
  void reply(Ts&&... xs) {
    if (auto dest = caf::actor_cast<caf::actor>(owner_)) caf::anon_send(dest, std::forward<Ts>(xs)...);
  }

  const shard_spec spec_;
  const std::string name_;
  const progress_fn progress_;
  const caf::actor_addr owner_;  // weak: the thread never keeps the actor alive
  std::thread thread_;
  std::optional<shard_faults::hang_fault> hang_;    // worker thread only
  std::optional<shard_faults::token_fault> token_;  // worker thread only
  uint64_t steps_run_ = 0;          // worker thread only
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

enum class load_phase { loading, loaded, failed };

struct shard_state {
  std::string label;  // "shard s0r0"
  std::shared_ptr<shard_runner> runner;
  load_phase phase = load_phase::loading;
  shard_addresses addresses;  // when loaded
  caf::error load_error;      // when failed
  std::vector<caf::typed_response_promise<shard_addresses>> waiting;  // addresses before loaded
  std::map<uint64_t, caf::typed_response_promise<caf::ok_atom>> connects;
  std::map<uint64_t, caf::typed_response_promise<step_output>> steps;
  std::map<uint64_t, caf::typed_response_promise<shard_addresses>> relinks;
  uint64_t next_job = 0;
  uint64_t term = 0;  // the owner's term: steps, connects and relinks of an older one are refused
  // The stall watchdog (fault_tolerance.stall_timeout), armed while steps are pending:
  std::chrono::milliseconds stall_timeout{0};  // 0 = off
  bool watching = false;                       // a stall_check_atom timer is on its way
  uint64_t seen_beats = 0;                     // the worker's beats at the last change
  uint64_t seen_step = 0;                      // the step it was in then (id + 1)
  std::chrono::steady_clock::time_point seen_at;  // when the beats or the step last changed
  caf::behavior completions;  // the private completion messages (see the top of this file)

  /// Answers everything still pending with `e`.
  void fail_pending(const caf::error& e) {
    for (auto& rp : waiting) rp.deliver(e);
    for (auto& [id, rp] : connects) rp.deliver(e);
    for (auto& [id, rp] : steps) rp.deliver(e);
    for (auto& [id, rp] : relinks) rp.deliver(e);
    waiting.clear();
    connects.clear();
    steps.clear();
    relinks.clear();
  }

  ~shard_state() {
    if (!runner) return;
    fail_pending(caf::make_error(caf::sec::runtime_error, label + " stopped"));
    runner->stop();
  }

  static inline const char* name = "troupe.shard";
};

using shard_ptr = shard_actor::stateful_pointer<shard_state>;

/// Arms the stall watchdog when steps are pending and it is not running yet.
void watch_steps(shard_ptr self) {
  auto& st = self->state;
  if (st.stall_timeout.count() == 0 || st.watching || st.steps.empty()) return;
  st.watching = true;
  st.seen_beats = st.runner->beats();
  st.seen_step = st.runner->running_step();
  st.seen_at = std::chrono::steady_clock::now();
  caf::delayed_anon_send(caf::actor_cast<caf::actor>(self), std::max(st.stall_timeout / 4, std::chrono::milliseconds(10)),
                         stall_check_atom::value);
}

/// One look of the stall watchdog: a step whose worker has not beaten for stall_timeout is
/// stalled; the shard fails what is pending and stops, like a failed shard (its worker,
/// stuck, is detached and keeps its device until it ends).
void check_stall(shard_ptr self) {
  auto& st = self->state;
  st.watching = false;
  if (st.steps.empty()) return;
  const auto now = std::chrono::steady_clock::now();
  const uint64_t beats = st.runner->beats(), step = st.runner->running_step();
  if (step == 0 || beats != st.seen_beats || step != st.seen_step) {
    st.seen_beats = beats;
    st.seen_step = step;
    st.seen_at = now;
  } else if (now - st.seen_at >= st.stall_timeout) {
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now - st.seen_at).count();
    const auto why = st.label + ": step " + std::to_string(step - 1) + " made no progress for " + std::to_string(ms) +
                     " ms (fault_tolerance.stall_timeout " + std::to_string(st.stall_timeout.count()) +
                     " ms): the shard is stalled and stops";
    logger()->error("{}", why);
    const auto e = caf::make_error(caf::sec::runtime_error, why);
    st.fail_pending(e);
    self->quit(e);
    return;
  }
  st.watching = true;
  caf::delayed_anon_send(caf::actor_cast<caf::actor>(self), std::max(st.stall_timeout / 4, std::chrono::milliseconds(10)),
                         stall_check_atom::value);
}

caf::behavior completion_behavior(shard_ptr self) {
  return {
      [self](loaded_atom, shard_addresses& a) {
        auto& st = self->state;
        st.phase = load_phase::loaded;
        st.addresses = std::move(a);
        for (auto& rp : st.waiting) rp.deliver(st.addresses);
        st.waiting.clear();
      },
      [self](load_failed_atom, std::string& why) {
        auto& st = self->state;
        st.phase = load_phase::failed;
        st.load_error = caf::make_error(caf::sec::runtime_error, std::move(why));
        st.fail_pending(st.load_error);
      },
      [self](connected_atom, uint64_t id) {
        auto& st = self->state;
        if (auto it = st.connects.find(id); it != st.connects.end()) {
          it->second.deliver(caf::ok_atom::value);
          st.connects.erase(it);
        }
      },
      [self](step_done_atom, uint64_t id, step_output& out) {
        auto& st = self->state;
        if (auto it = st.steps.find(id); it != st.steps.end()) {
          it->second.deliver(std::move(out));
          st.steps.erase(it);
        }
      },
      [self](relinked_atom, uint64_t id, bool adopted, shard_addresses& a) {
        auto& st = self->state;
        if (adopted) st.addresses = a;  // what addresses_atom answers for the new head
        if (auto it = st.relinks.find(id); it != st.relinks.end()) {
          it->second.deliver(std::move(a));
          st.relinks.erase(it);
        }
      },
      [self](stall_check_atom) { check_stall(self); },
      [self](job_failed_atom, uint64_t id, caf::error& e) {
        auto& st = self->state;
        if (auto it = st.connects.find(id); it != st.connects.end()) {
          it->second.deliver(e);
          st.connects.erase(it);
        } else if (auto is = st.steps.find(id); is != st.steps.end()) {
          is->second.deliver(e);
          st.steps.erase(is);
        } else if (auto ir = st.relinks.find(id); ir != st.relinks.end()) {
          ir->second.deliver(e);
          st.relinks.erase(ir);
        }
      },
  };
}

/// Term fencing: an error naming both terms when `t` is older than the owner's term
/// (`what`: "step 7"), else none.
caf::error refuse_older(shard_ptr self, head_term t, const std::string& what) {
  const auto owner = self->state.term;
  if (t.value >= owner) return {};
  return caf::make_error(caf::sec::invalid_argument, self->state.label + ": refused " + what + " of term " +
                                                         std::to_string(t.value) + ": its owner leads term " +
                                                         std::to_string(owner) + " (a deposed leader's message)");
}

/// Queues a relink job (`drop_context`: for adoption by a new head) and promises its
/// addresses.
caf::typed_response_promise<shard_addresses> post_relink(shard_ptr self, bool drop_context) {
  auto& st = self->state;
  shard_job job;
  job.id = ++st.next_job;
  job.kind = job_kind::relink;
  job.drop_context = drop_context;
  auto rp = self->make_response_promise<shard_addresses>();
  st.relinks.emplace(job.id, rp);
  st.runner->post(std::move(job));
  return rp;
}

shard_actor::behavior_type shard_impl(shard_ptr self, shard_spec spec, progress_fn progress, head_term owner) {
  auto& st = self->state;
  st.label = shard_name(spec);
  st.term = owner.value;
  st.completions = completion_behavior(self);
  st.stall_timeout = std::chrono::milliseconds(spec.stall_timeout_ms);
  self->set_default_handler([self](caf::scheduled_actor* ptr, caf::message_view& x) -> caf::result<caf::message> {
    auto msg = x.copy_content_to_message();
    if (self->state.completions(msg)) return caf::message{};
    return caf::print_and_drop(ptr, x);
  });
  st.runner = std::make_shared<shard_runner>(std::move(spec), std::move(progress), self->address());
  st.runner->start();
  return {
      [self](addresses_atom) -> caf::result<shard_addresses> {
        auto& st = self->state;
        if (st.phase == load_phase::loaded) return st.addresses;
        if (st.phase == load_phase::failed) return st.load_error;
        auto rp = self->make_response_promise<shard_addresses>();
        st.waiting.push_back(rp);
        return rp;
      },
      [self](connect_atom, head_term t, shard_peers& peers) -> caf::result<caf::ok_atom> {
        auto& st = self->state;
        if (auto refused = refuse_older(self, t, "a connect")) return refused;
        if (st.phase == load_phase::failed) return st.load_error;
        shard_job job;
        job.id = ++st.next_job;
        job.peers = std::move(peers);
        auto rp = self->make_response_promise<caf::ok_atom>();
        st.connects.emplace(job.id, rp);
        st.runner->post(std::move(job));
        return rp;
      },
      [self](step_atom, head_term t, step_request& r) -> caf::result<step_output> {
        auto& st = self->state;
        if (t.value < st.term) return refuse_older(self, t, "step " + std::to_string(r.step_id));
        if (st.phase == load_phase::failed) return st.load_error;
        shard_job job;
        job.id = ++st.next_job;
        job.kind = job_kind::step;
        job.step = std::move(r);
        auto rp = self->make_response_promise<step_output>();
        st.steps.emplace(job.id, rp);
        st.runner->post(std::move(job));
        watch_steps(self);
        return rp;
      },
      [self](relink_atom, head_term t) -> caf::result<shard_addresses> {
        auto& st = self->state;
        if (auto refused = refuse_older(self, t, "a relink")) return refused;
        if (st.phase == load_phase::failed) return st.load_error;
        return post_relink(self, false);
      },
      [self](adopt_atom, head_term t) -> caf::result<shard_addresses> {
        auto& st = self->state;
        if (auto refused = refuse_older(self, t, "an adoption")) return refused;
        if (st.phase != load_phase::loaded) return caf::make_error(caf::sec::runtime_error, st.label + " is not loaded");
        st.term = t.value;  // the old owner's steps are refused from now on
        st.runner->cut_short_for_adoption("the head of term " + std::to_string(t.value) + " adopted the shard");
        return post_relink(self, true);
      },
      [self](abort_atom) { self->state.runner->abort(); },
  };
}

}  // namespace

shard_actor spawn_shard(caf::actor_system& sys, shard_spec spec, progress_fn progress, head_term owner) {
  return sys.spawn(shard_impl, std::move(spec), std::move(progress), owner);
}

}  // namespace troupe
