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
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>

#include "actors/actor_system_config.h"

namespace troupe {

namespace {

// Private completions, worker thread -> shard actor.
using loaded_atom = caf::atom_constant<caf::atom("shloaded")>;     // shard_addresses
using load_failed_atom = caf::atom_constant<caf::atom("shloadfail")>;  // std::string why
using connected_atom = caf::atom_constant<caf::atom("shconnectd")>;  // uint64_t job
using step_done_atom = caf::atom_constant<caf::atom("shstepdone")>;  // uint64_t job, step_output
using job_failed_atom = caf::atom_constant<caf::atom("shjobfail")>;  // uint64_t job, caf::error

using progress_fn = std::function<void(const std::string&)>;

using relinked_atom = caf::atom_constant<caf::atom("shrelinked")>;  // uint64_t job, shard_addresses

/// What a queued job does.
enum class job_kind { connect, step, relink };

/// One queued job: a connect, a step or a relink.
struct shard_job {
  uint64_t id = 0;
  job_kind kind = job_kind::connect;
  shard_peers peers;   // connect
  step_request step;   // step
};

/// The worker thread and its queue. Shared by the actor's state and the thread itself,
/// so a thread detached after `shard_join_bound` still owns everything it touches.
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

  /// Aborts, drops queued jobs and joins the thread; detaches it when it has not
  /// finished within `bound` (e.g. still loading). Called once, from the actor.
  void stop(std::chrono::milliseconds bound) {
    abort();
    {
      std::lock_guard<std::mutex> lock(mx_);
      closing_ = true;
    }
    cv_.notify_all();
    bool finished = false;
    {
      std::unique_lock<std::mutex> lock(done_mx_);
      finished = done_cv_.wait_for(lock, bound, [this] { return finished_; });
    }
    if (finished) {
      thread_.join();
    } else {
      logger()->warn("{}: worker thread still busy after {} ms; detached", name_, bound.count());
      thread_.detach();
    }
  }

 private:
  void main() {
    if (load()) {
      while (auto job = next_job()) run(*job);
    }
    std::unique_ptr<shard_worker> w;
    {
      std::lock_guard<std::mutex> lock(mx_);
      w = std::move(worker_);
    }
    w.reset();  // communicators and context are released on the thread that used them
    {
      std::lock_guard<std::mutex> lock(done_mx_);
      finished_ = true;
    }
    done_cv_.notify_all();
  }

  bool load() {
    try {
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

  void run(shard_job& job) {
    const std::string what = job.kind == job_kind::step      ? "step " + std::to_string(job.step.step_id)
                             : job.kind == job_kind::relink ? std::string("relink")
                                                            : std::string("connect");
    try {
      if (job.kind == job_kind::step) {
        auto out = worker_->run(job.step);
        reply(step_done_atom::value, job.id, std::move(out));
      } else if (job.kind == job_kind::relink) {
        shard_addresses a;
        {
          std::lock_guard<std::mutex> lock(mx_);  // abort() reads the communicators relink replaces
          a = worker_->relink();
        }
        reply(relinked_atom::value, job.id, std::move(a));
      } else {
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(spec_.timeout_ms);
        if (job.peers.kv_blocks > 0 && !job.peers.keep_kv) worker_->set_kv_blocks(job.peers.kv_blocks);
        worker_->connect(job.peers.tensor_group, job.peers.prev, job.peers.next, deadline, job.peers.keep_kv);
        report("connected");
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

  std::mutex mx_;  // guards the queue, the flags and the worker pointer
  std::condition_variable cv_;
  std::deque<shard_job> jobs_;
  bool closing_ = false;
  bool aborted_ = false;
  std::unique_ptr<shard_worker> worker_;  // set once loaded; used without the lock by the thread only

  std::mutex done_mx_;
  std::condition_variable done_cv_;
  bool finished_ = false;
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
    runner->stop(shard_join_bound);
  }

  static inline const char* name = "troupe.shard";
};

using shard_ptr = shard_actor::stateful_pointer<shard_state>;

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
      [self](relinked_atom, uint64_t id, shard_addresses& a) {
        auto& st = self->state;
        if (auto it = st.relinks.find(id); it != st.relinks.end()) {
          it->second.deliver(std::move(a));
          st.relinks.erase(it);
        }
      },
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

shard_actor::behavior_type shard_impl(shard_ptr self, shard_spec spec, progress_fn progress) {
  auto& st = self->state;
  st.label = shard_name(spec);
  st.completions = completion_behavior(self);
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
      [self](connect_atom, shard_peers& peers) -> caf::result<caf::ok_atom> {
        auto& st = self->state;
        if (st.phase == load_phase::failed) return st.load_error;
        shard_job job;
        job.id = ++st.next_job;
        job.peers = std::move(peers);
        auto rp = self->make_response_promise<caf::ok_atom>();
        st.connects.emplace(job.id, rp);
        st.runner->post(std::move(job));
        return rp;
      },
      [self](step_atom, step_request& r) -> caf::result<step_output> {
        auto& st = self->state;
        if (st.phase == load_phase::failed) return st.load_error;
        shard_job job;
        job.id = ++st.next_job;
        job.kind = job_kind::step;
        job.step = std::move(r);
        auto rp = self->make_response_promise<step_output>();
        st.steps.emplace(job.id, rp);
        st.runner->post(std::move(job));
        return rp;
      },
      [self](relink_atom) -> caf::result<shard_addresses> {
        auto& st = self->state;
        if (st.phase == load_phase::failed) return st.load_error;
        shard_job job;
        job.id = ++st.next_job;
        job.kind = job_kind::relink;
        auto rp = self->make_response_promise<shard_addresses>();
        st.relinks.emplace(job.id, rp);
        st.runner->post(std::move(job));
        return rp;
      },
      [self](abort_atom) { self->state.runner->abort(); },
  };
}

}  // namespace

shard_actor spawn_shard(caf::actor_system& sys, shard_spec spec, progress_fn progress) {
  return sys.spawn(shard_impl, std::move(spec), std::move(progress));
}

}  // namespace troupe
