#include "actors/cluster/node_agent.h"

#include <algorithm>

#include "actors/actor_system_config.h"
#include "actors/link_security.h"

namespace troupe {

namespace {

/// A shard this agent spawned and still monitors.
struct local_shard {
  shard_actor handle;
  std::string name;  // "shard s0r1"
};

struct node_agent_state {
  node_agent_options opts;
  std::vector<local_shard> shards;  // alive shards spawned here
  supervisor_actor supervisor;  // set while attached
  uint64_t generation = 0;      // bumps on attach/stop/loss; stale timers are ignored
  uint64_t seq = 0;             // heartbeat sequence number
  uint64_t attach_seq = 0;      // `seq` when the current registration began (fencing)
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

/// Spawns a shard for `spec`, monitors it and logs its progress lines.
shard_actor spawn_local_shard(agent_ptr self, const shard_spec& spec) {
  const auto name = shard_name(spec);
  auto progress = [name](const std::string& what) {
    if (what.rfind("failed", 0) == 0)
      logger()->error("{}: {}", name, what);
    else
      logger()->info("{}: {}", name, what);
  };
  auto shard = spawn_shard(self->system(), spec, std::move(progress));
  self->monitor(shard);
  self->state.shards.push_back(local_shard{shard, name});
  return shard;
}

/// Removes a shard that went down; returns false when `source` is not one of ours.
bool on_shard_down(agent_ptr self, const caf::down_msg& dm) {
  auto& shards = self->state.shards;
  auto it = std::find_if(shards.begin(), shards.end(),
                         [&](const local_shard& s) { return s.handle.address() == dm.source; });
  if (it == shards.end()) return false;
  if (dm.reason == caf::exit_reason::user_shutdown)
    logger()->info("{}: stopped", it->name);
  else
    logger()->warn("{}: down: {}", it->name, self->system().render(dm.reason));
  shards.erase(it);
  return true;
}

/// Sends every shard of this node exit(user_shutdown) and forgets them.
void stop_shards(agent_ptr self) {
  for (auto& s : self->state.shards) {
    self->demonitor(s.handle.address());
    self->send_exit(s.handle, caf::exit_reason::user_shutdown);
  }
  self->state.shards.clear();
}

/// Fencing: the head has failed this node's shards (it lost or fenced the node), so they
/// must never serve again; stops them all and logs why.
void fence_shards(agent_ptr self, const std::string& why) {
  if (self->state.shards.empty()) return;
  logger()->warn("fenced ({}): stopping {} shard(s) of the previous registration", why,
                 self->state.shards.size());
  stop_shards(self);
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

/// `spawn_shard_atom`: from the head, for the cluster file's model only.
caf::result<shard_actor> on_spawn_shard(agent_ptr self, const shard_spec& spec) {
  if (!from_head(self)) return refuse(self, "spawn a shard", the_head);
  const auto& allowed = self->state.opts.model_path;
  if (spec.model_path != allowed) {
    logger()->warn("refused to spawn {} for model '{}': this node serves only '{}' (its cluster file's model.path)",
                   shard_name(spec), spec.model_path, allowed);
    return caf::make_error(caf::sec::invalid_argument, "this node loads only the model of its cluster file ('" +
                                                           allowed + "'), not '" + spec.model_path + "'");
  }
  return spawn_local_shard(self, spec);
}

void on_attach(agent_ptr self, const supervisor_actor& sup) {
  auto& st = self->state;
  fence_shards(self, "registering afresh");
  st.attach_seq = st.seq;
  if (st.supervisor) self->demonitor(st.supervisor.address());
  st.supervisor = sup;
  self->monitor(sup);
  const auto gen = ++st.generation;
  self->request(sup, control_timeout(st.opts.fault_tolerance), register_atom::value, st.opts.info)
      .then(
          [self, gen](caf::ok_atom) {
            if (gen != self->state.generation) return;
            notify(self, node_event::registered, "");
            self->send(self, heartbeat_atom::value, gen);
          },
          [self, gen](caf::error& e) {
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
          });
}

node_agent_actor::behavior_type node_agent_impl(agent_ptr self, node_agent_options opts) {
  self->state.opts = std::move(opts);
  self->set_down_handler([self](caf::down_msg& dm) {
    if (on_shard_down(self, dm)) return;
    auto& st = self->state;
    if (!st.supervisor || st.supervisor.address() != dm.source) return;
    st.supervisor = nullptr;
    ++st.generation;
    fence_shards(self, "lost the head: " + self->system().render(dm.reason));
    notify(self, node_event::head_lost, self->system().render(dm.reason));
  });
  return {
      [self](attach_atom, const supervisor_actor& sup) {
        if (from_here(self))
          on_attach(self, sup);
        else
          refuse(self, "attach this node to another head", "the node's own process");
      },
      [self](stop_atom) {
        // Checked before make_response_promise, which takes the sender out of the message.
        const bool allowed = from_head(self);
        const auto refusal = allowed ? caf::error{} : refuse(self, "stop this node", the_head);
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
      [self](spawn_shard_atom, const shard_spec& spec) { return on_spawn_shard(self, spec); },
      [self](fence_atom, uint64_t seq, const std::string& why) {
        auto& st = self->state;
        if (!from_head(self)) {
          refuse(self, "fence this node", the_head);
          return;
        }
        if (seq <= st.attach_seq || !st.supervisor) return;  // an earlier registration's fence
        fence_shards(self, "fenced by the head: " + why);
        self->demonitor(st.supervisor.address());
        st.supervisor = nullptr;
        ++st.generation;
        notify(self, node_event::head_lost, "fenced by the head: " + why);
      },
  };
}

}  // namespace

node_agent_actor spawn_node_agent(caf::actor_system& sys, node_agent_options opts) {
  return sys.spawn(node_agent_impl, std::move(opts));
}

}  // namespace troupe
