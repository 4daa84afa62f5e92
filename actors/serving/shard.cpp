// The shard actor. Design: the compute (loading, connecting, steps) runs on one
// std::thread per shard, fed by a FIFO job queue (shard_runner, actors/serving/shard_runner.h). That thread never
// touches the actor: it reports each completion by anon_send-ing a private message to the
// actor (through a weak address, so it never keeps the actor alive), and the actor, on
// its own execution context, delivers the stored response promise.
//
// The completion messages are not part of the typed interface `shard_actor` (peers must
// not send them, and `remote_actor<shard_actor>` must keep matching): the typed actor
// receives them through its default handler, which runs them against a small untyped
// behavior (`completions`). Anything else still goes to `print_and_drop`.
#include "actors/serving/shard.h"

#include <map>
#include <memory>
#include <utility>

#include "actors/actor_system_config.h"
#include "actors/serving/shard_runner.h"

namespace troupe {

namespace {

using namespace shard_completion;

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
