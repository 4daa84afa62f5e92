#include "actors/cluster/node_agent.h"

#include <algorithm>
#include <optional>

#include "actors/actor_system_config.h"
#include "actors/link_security.h"
#include "actors/serving/compute_priority.h"

namespace troupe {

namespace {

/// A shard this agent spawned and still monitors.
struct local_shard {
  shard_actor handle;
  std::string name;               // "shard s0r1"
  std::vector<char> spec_bytes;   // its shard_spec, serialized: what a new head must ask for to adopt it
};

struct node_agent_state {
  node_agent_options opts;
  std::vector<local_shard> shards;  // alive shards spawned here
  /// Loaded shards kept after the head was lost (fault_tolerance.head_grace), until a new
  /// head adopts them (asks for the same spec) or the grace ends.
  std::vector<local_shard> orphans;
  caf::node_id orphaned_by;     // the head process that lost them: it may not adopt them...
  uint64_t orphaned_term = 0;   // ...in the term it had then (a later term is a new leadership)
  uint64_t orphan_gen = 0;      // bumps when the orphans change; stale grace timers are ignored
  supervisor_actor supervisor;  // set while attached
  uint64_t generation = 0;      // bumps on attach/stop/loss; stale timers are ignored
  uint64_t seq = 0;             // heartbeat sequence number
  uint64_t attach_seq = 0;      // `seq` when the current registration began (fencing)
  uint64_t term = 0;            // the highest head term seen (several heads; 0 = none)
  static inline const char* name = "troupe.node_agent";
};

using agent_ptr = node_agent_actor::stateful_pointer<node_agent_state>;

void notify(agent_ptr self, node_event e, const std::string& detail) {
  if (self->state.opts.on_event) self->state.opts.on_event(e, detail);
}

/// How long a control request to the head may take before the head counts as gone.
caf::timespan control_timeout(const fault_tolerance_section& ft) {
  return caf::timespan{std::max(2 * ft.heartbeat_timeout, std::chrono::milliseconds{1000})};
}

/// `spec` serialized (shard_spec's inspect): equal bytes, the same shard.
std::vector<char> spec_bytes(agent_ptr self, shard_spec spec) {
  std::vector<char> buf;
  caf::binary_serializer sink{self->system(), buf};
  if (auto err = sink(spec)) throw std::runtime_error("node agent: serializing a shard spec: " + self->system().render(err));
  return buf;
}

/// Spawns a shard for `spec`, monitors it and logs its progress lines.
shard_actor spawn_local_shard(agent_ptr self, const shard_spec& spec, head_term owner) {
  const auto name = shard_name(spec);
  auto progress = [name](const std::string& what) {
    if (what.rfind("failed", 0) == 0)
      logger()->error("{}: {}", name, what);
    else
      logger()->info("{}: {}", name, what);
  };
  auto shard = spawn_shard(self->system(), spec, std::move(progress), owner);
  self->monitor(shard);
  self->state.shards.push_back(local_shard{shard, name, spec_bytes(self, spec)});
  return shard;
}

/// Removes a shard that went down; returns false when `source` is not one of ours.
bool on_shard_down(agent_ptr self, const caf::down_msg& dm) {
  auto by_source = [&](const local_shard& s) { return s.handle.address() == dm.source; };
  auto& shards = self->state.shards;
  auto it = std::find_if(shards.begin(), shards.end(), by_source);
  if (it == shards.end()) {
    auto& orphans = self->state.orphans;
    auto o = std::find_if(orphans.begin(), orphans.end(), by_source);
    if (o == orphans.end()) return false;
    logger()->warn("{}: down while waiting for a new head: {}", o->name, self->system().render(dm.reason));
    orphans.erase(o);
    return true;
  }
  if (dm.reason == caf::exit_reason::user_shutdown)
    logger()->info("{}: stopped", it->name);
  else
    logger()->warn("{}: down: {}", it->name, self->system().render(dm.reason));
  shards.erase(it);
  return true;
}

/// Sends every shard in `shards` exit(user_shutdown) and forgets them.
void stop_all(agent_ptr self, std::vector<local_shard>& shards) {
  for (auto& s : shards) {
    self->demonitor(s.handle.address());
    self->send_exit(s.handle, caf::exit_reason::user_shutdown);
  }
  shards.clear();
}

/// Sends every shard of this node, kept orphans included, exit(user_shutdown).
void stop_shards(agent_ptr self) {
  stop_all(self, self->state.shards);
  stop_all(self, self->state.orphans);
  ++self->state.orphan_gen;
}

/// Fencing: the head has failed this node's shards (it lost or fenced the node), so they
/// must never serve again; stops them all and logs why.
void fence_shards(agent_ptr self, const std::string& why) {
  if (self->state.shards.empty()) return;
  logger()->warn("fenced ({}): stopping {} shard(s) of the previous registration", why,
                 self->state.shards.size());
  stop_all(self, self->state.shards);
}

/// Stops the orphans (no new head adopted them, or the head that lost them is back).
void fence_orphans(agent_ptr self, const std::string& why) {
  auto& st = self->state;
  ++st.orphan_gen;
  if (st.orphans.empty()) return;
  logger()->warn("fenced ({}): stopping {} shard(s) kept for a new head", why, st.orphans.size());
  stop_all(self, st.orphans);
}

/// The head is gone: with fault_tolerance.head_grace, its loaded shards wait that long for a
/// new head to adopt them; without, they are fenced at once.
void on_head_gone(agent_ptr self, const caf::node_id& head, const std::string& why) {
  auto& st = self->state;
  const auto grace = st.opts.fault_tolerance.head_grace;
  if (grace.count() <= 0 || st.shards.empty()) {
    fence_shards(self, why);
    return;
  }
  fence_orphans(self, "an earlier head's shards");
  st.orphans = std::move(st.shards);
  st.shards.clear();
  st.orphaned_by = head;
  st.orphaned_term = st.term;
  const auto gen = ++st.orphan_gen;
  logger()->warn("{}: keeping {} loaded shard(s) for up to {} ms for a new head to adopt", why, st.orphans.size(),
                 grace.count());
  self->delayed_send(self, grace, head_grace_atom::value, gen);
}

// -- authorization ------------------------------------------------------------------------

/// Whether the current message comes from this process.
bool from_here(agent_ptr self) { return sent_from(self->current_sender(), self->node()); }

/// Whether it comes from this process or from the head this agent is attached to.
bool from_head(agent_ptr self) {
  const auto& sup = self->state.supervisor;
  return from_here(self) || (sup && sent_from(self->current_sender(), sup.node()));
}

/// Logs and describes a refused control message (`what`: "stop this node").
caf::error refuse(agent_ptr self, const std::string& what, const std::string& who_may) {
  const auto who = describe_sender(self->current_sender());
  logger()->warn("refused a request to {} from {}: only {} may", what, who, who_may);
  return caf::make_error(caf::sec::invalid_argument,
                         "not allowed: only " + who_may + " may " + what + " (the sender is " + who + ")");
}

constexpr const char* the_head = "the head this node is attached to";

/// Term fencing: refuses (logs and describes) a control message of a term older than the
/// highest this node has seen (`what`: "stop this node"); takes a newer term as the highest.
caf::error check_term(agent_ptr self, const std::string& what, head_term t) {
  auto& st = self->state;
  if (t.value >= st.term) {
    st.term = t.value;
    return {};
  }
  const auto why = "refused to " + what + " for term " + std::to_string(t.value) + ": this node has seen term " +
                   std::to_string(st.term) + " (a deposed leader's message, from " +
                   describe_sender(self->current_sender()) + ")";
  logger()->warn("{}", why);
  return caf::make_error(caf::sec::invalid_argument, why);
}

/// A kept shard of exactly `spec`, handed to the new head: asked to drop its context and
/// make fresh endpoints first (adopt_atom), so the new replica connects it like a new one.
/// Nothing when no orphan matches; a failed adoption stops the orphan and spawns afresh.
std::optional<caf::result<shard_actor>> adopt_orphan(agent_ptr self, const shard_spec& spec, head_term t) {
  auto& st = self->state;
  const auto bytes = spec_bytes(self, spec);
  auto it = std::find_if(st.orphans.begin(), st.orphans.end(),
                         [&](const local_shard& s) { return s.spec_bytes == bytes; });
  if (it == st.orphans.end()) return std::nullopt;
  local_shard kept = *it;
  st.orphans.erase(it);
  st.shards.push_back(kept);
  auto rp = self->make_response_promise<shard_actor>();
  self->request(kept.handle, std::chrono::seconds(30), adopt_atom::value, t)
      .then(
          [self, rp, kept](shard_addresses&) mutable {
            logger()->info("{}: adopted by the new head, weights kept", kept.name);
            rp.deliver(kept.handle);
          },
          [self, rp, kept, spec, t](caf::error& e) mutable {
            logger()->warn("{}: adoption failed ({}): loading it afresh", kept.name, self->system().render(e));
            auto& shards = self->state.shards;
            auto at = std::find_if(shards.begin(), shards.end(),
                                   [&](const local_shard& s) { return s.handle == kept.handle; });
            if (at != shards.end()) {
              self->demonitor(kept.handle.address());
              self->send_exit(kept.handle, caf::exit_reason::user_shutdown);
              shards.erase(at);
            }
            rp.deliver(spawn_local_shard(self, spec, t));
          });
  return caf::result<shard_actor>{rp};
}

/// `spawn_shard_atom`: from the head, for the cluster file's model only.
caf::result<shard_actor> on_spawn_shard(agent_ptr self, head_term t, const shard_spec& spec) {
  if (!from_head(self)) return refuse(self, "spawn a shard", the_head);
  if (auto refused = check_term(self, "spawn " + shard_name(spec), t)) return refused;
  const auto& allowed = self->state.opts.model_path;
  if (spec.model_path != allowed) {
    logger()->warn("refused to spawn {} for model '{}': this node serves only '{}' (its cluster file's model.path)",
                   shard_name(spec), spec.model_path, allowed);
    return caf::make_error(caf::sec::invalid_argument, "this node loads only the model of its cluster file ('" +
                                                           allowed + "'), not '" + spec.model_path + "'");
  }
  if (auto adopted = adopt_orphan(self, spec, t)) return *adopted;
  return spawn_local_shard(self, spec, t);
}

/// The registration failed (`e`): a head that does not answer is lost, a refusal is final.
void on_register_error(agent_ptr self, uint64_t gen, const caf::error& e) {
  if (gen != self->state.generation) return;
  const auto what = self->system().render(e);
  if (e == caf::sec::request_timeout || e == caf::sec::request_receiver_down) {
    fence_shards(self, "the head did not answer the registration");
    self->state.supervisor = nullptr;
    ++self->state.generation;
    notify(self, node_event::head_lost, what);
  } else {
    notify(self, node_event::rejected, what);
  }
}

/// Registers with `sup`, which leads with `term`.
void register_with(agent_ptr self, uint64_t gen, const supervisor_actor& sup, uint64_t term) {
  auto& st = self->state;
  self->request(sup, control_timeout(st.opts.fault_tolerance), register_atom::value, st.opts.info)
      .then(
          [self, gen, sup, term](caf::ok_atom) {
            if (gen != self->state.generation) return;
            // The head that lost the node has failed and replaced its shards: it never adopts
            // them. Checked once it answered: right after a loss the middleman may still hand
            // out the dead head's proxy, whose registration never succeeds.
            // A head that stepped down execs itself in place (same pid, same node id): coming
            // back with a later term it is a new leadership, which adopts them like any other.
            if (sup.node() == self->state.orphaned_by && term <= self->state.orphaned_term)
              fence_orphans(self, "the head that lost them is back");
            notify(self, node_event::registered, term > 0 ? "term " + std::to_string(term) : "");
            self->send(self, heartbeat_atom::value, gen);
          },
          [self, gen](caf::error& e) { on_register_error(self, gen, e); });
}

/// Asks the head's term first (several heads): a head of an older term than this node has
/// seen is a deposed leader (paused, or cut off, while another won a later term); the node
/// refuses it, logs why and looks for the head that leads. Then registers.
void on_attach(agent_ptr self, const supervisor_actor& sup) {
  auto& st = self->state;
  fence_shards(self, "registering afresh");
  st.attach_seq = st.seq;
  if (st.supervisor) self->demonitor(st.supervisor.address());
  st.supervisor = sup;
  self->monitor(sup);
  const auto gen = ++st.generation;
  self->request(sup, control_timeout(st.opts.fault_tolerance), lease_atom::value)
      .then(
          [self, gen, sup](uint64_t term) {
            auto& st = self->state;
            if (gen != st.generation) return;
            if (term < st.term) {
              const auto why = "its term " + std::to_string(term) + " is older than term " + std::to_string(st.term) +
                               " this node has seen (a deposed leader)";
              logger()->warn("refused the head of {}: {}", caf::to_string(sup.node()), why);
              self->demonitor(sup.address());
              st.supervisor = nullptr;
              ++st.generation;
              notify(self, node_event::head_lost, "refused: " + why);
              return;
            }
            st.term = term;
            register_with(self, gen, sup, term);
          },
          [self, gen](caf::error& e) { on_register_error(self, gen, e); });
}

node_agent_actor::behavior_type node_agent_impl(agent_ptr self, node_agent_options opts) {
  self->state.opts = std::move(opts);
  self->set_down_handler([self](caf::down_msg& dm) {
    if (on_shard_down(self, dm)) return;
    auto& st = self->state;
    if (!st.supervisor || st.supervisor.address() != dm.source) return;
    st.supervisor = nullptr;
    ++st.generation;
    on_head_gone(self, dm.source.node(), "lost the head: " + self->system().render(dm.reason));
    notify(self, node_event::head_lost, self->system().render(dm.reason));
  });
  return {
      [self](attach_atom, const supervisor_actor& sup) {
        if (from_here(self))
          on_attach(self, sup);
        else
          refuse(self, "attach this node to another head", "the node's own process");
      },
      [self](stop_atom, head_term t) {
        // Checked before make_response_promise, which takes the sender out of the message.
        auto refusal =
            from_head(self) ? check_term(self, "stop this node", t) : refuse(self, "stop this node", the_head);
        const bool allowed = !refusal;
        auto rp = self->make_response_promise<caf::ok_atom>();
        if (!allowed) {
          rp.deliver(refusal);
          return rp;
        }
        stop_shards(self);  // their replicas see them go down and fail their steps
        rp.deliver(caf::ok_atom_v);  // answer before the process starts to exit
        ++self->state.generation;
        notify(self, node_event::stop_requested, "");
        return rp;
      },
      [self](unregister_atom) {
        auto& st = self->state;
        const bool allowed = from_here(self);  // before make_response_promise takes the sender
        const auto refusal = allowed ? caf::error{} : refuse(self, "unregister this node", "the node's own process");
        auto rp = self->make_response_promise<caf::ok_atom>();
        if (!allowed) {
          rp.deliver(refusal);
          return rp;
        }
        ++st.generation;
        stop_shards(self);  // the process is leaving: its shards must not outlive the agent
        if (!st.supervisor) {
          rp.deliver(caf::ok_atom_v);
          return rp;
        }
        auto sup = st.supervisor;
        self->demonitor(sup.address());
        st.supervisor = nullptr;
        self->request(sup, control_timeout(st.opts.fault_tolerance), unregister_atom::value,
                      st.opts.info.name)
            .then([rp](caf::ok_atom) mutable { rp.deliver(caf::ok_atom_v); },
                  [rp](caf::error&) mutable { rp.deliver(caf::ok_atom_v); });
        return rp;
      },
      [self](status_atom) { return self->state.opts.info; },
      [self](heartbeat_atom, uint64_t gen) {
        auto& st = self->state;
        if (gen != st.generation || !st.supervisor || !from_here(self)) return;
        self->send(st.supervisor, heartbeat_atom::value, st.opts.info.name, ++st.seq);
        self->delayed_send(self, st.opts.fault_tolerance.heartbeat_interval, heartbeat_atom::value,
                           gen);
      },
      [self](spawn_shard_atom, head_term t, const shard_spec& spec) { return on_spawn_shard(self, t, spec); },
      [self](head_grace_atom, uint64_t gen) {
        if (from_here(self) && gen == self->state.orphan_gen)
          fence_orphans(self, "no new head adopted them within fault_tolerance.head_grace");
      },
      [self](fence_atom, head_term t, uint64_t seq, const std::string& why) {
        auto& st = self->state;
        if (!from_head(self)) {
          refuse(self, "fence this node", the_head);
          return;
        }
        if (check_term(self, "fence this node", t)) return;
        if (seq <= st.attach_seq || !st.supervisor) return;  // an earlier registration's fence
        fence_shards(self, "fenced by the head: " + why);
        fence_orphans(self, "fenced by the head: " + why);
        self->demonitor(st.supervisor.address());
        st.supervisor = nullptr;
        ++st.generation;
        notify(self, node_event::head_lost, "fenced by the head: " + why);
      },
  };
}

}  // namespace

node_agent_actor spawn_node_agent(caf::actor_system& sys, node_agent_options opts) {
  set_compute_nice(opts.fault_tolerance.compute_nice);
  return sys.spawn(node_agent_impl, std::move(opts));
}

}  // namespace troupe
