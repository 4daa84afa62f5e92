#include "actors/cluster/supervisor.h"

#include <signal.h>

#include <algorithm>
#include <functional>
#include <map>

#include "actors/actor_system_config.h"
#include "actors/cluster/node_agent.h"
#include "actors/cluster/node_link.h"
#include "actors/cluster/supervisor_state.h"
#include "actors/link_security.h"

namespace troupe {
namespace supervisor_detail {

int64_t ms_between(steady::time_point a, steady::time_point b) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(b - a).count();
}

int64_t unix_ms_now() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

/// How long a killed node process may take to exit before the supervisor says so (its
/// replacement still waits for it: it may hold the devices).
constexpr std::chrono::milliseconds node_exit_wait{5000};

cluster_status snapshot(const supervisor_state& st) {
  cluster_status s;
  s.stopping = st.stopping;
  for (const auto& m : st.members) s.nodes.push_back(m.status);
  return s;
}

/// The membership as the replicated head state holds it.
std::vector<member_state> member_states(const supervisor_state& st) {
  std::vector<member_state> out;
  for (const auto& m : st.members) {
    member_state ms;
    ms.name = m.spec.name;
    ms.host = m.spec.host;
    ms.port = m.spec.port;
    ms.devices = m.spec.devices;
    ms.incarnation = m.registrations;
    ms.state = m.status.state;
    ms.pid = m.status.pid;
    ms.launched = m.status.launched;
    ms.restarts = m.status.restarts;
    ms.last_error = m.status.last_error;
    if (auto d = st.drains.find(m.spec.name); d != st.drains.end())
      ms.drain = drain_state{d->second.done, d->second.replace, d->second.replicas, d->second.migrated, d->second.detail};
    out.push_back(std::move(ms));
  }
  return out;
}

/// Seeds the members from the state this head starts from: restart counts and registrations
/// carry on, and a node drained before (done) stays drained (stopped, or lost with replace).
void restore_members(supervisor_state& st, const head_state& from) {
  for (const auto& ms : from.members) {
    auto* m = find_member(st, ms.name);
    if (!m) continue;
    m->status.restarts = ms.restarts;
    m->registrations = ms.incarnation;
    if (!ms.drain || !ms.drain->done) continue;
    const auto& d = *ms.drain;
    st.drains[ms.name] = drain_record{d.done, d.replace, d.replicas, d.migrated, d.detail};
    m->status.state = ms.state;
    m->status.last_error = ms.last_error;
    logger()->info("node {}: drained before this head led (replace {}): it stays {} until it registers again",
                   ms.name, d.replace, to_string(ms.state));
  }
}

void log_status(sup_ptr self) {
  logger()->info("status: {}", format_status_line(snapshot(self->state)));
  update_node_gauges(self->state);
  if (self->state.opts.recorder) self->state.opts.recorder->set_members(member_states(self->state));
}

member* find_member(supervisor_state& st, const std::string& name) {
  for (auto& m : st.members)
    if (m.spec.name == name) return &m;
  return nullptr;
}

std::string member_names(const supervisor_state& st) {
  std::string names;
  for (const auto& m : st.members) names += (names.empty() ? "" : ", ") + m.spec.name;
  return names;
}

/// Starts the process of `m`; false (state lost, error logged) when it cannot.
bool launch(sup_ptr self, member& m) {
  auto& st = self->state;
  try {
    auto pid = st.opts.launcher->start(m.spec.name, node_command_line(st.opts, m.spec.name));
    m.status.pid = static_cast<int32_t>(pid);
    m.order = st.next_order++;
    logger()->info("node {} starting (pid {}, {})", m.spec.name, pid,
                   endpoint(m.spec.host, m.spec.port));
    return true;
  } catch (const std::exception& e) {
    logger()->error("node {}: cannot start its process: {}", m.spec.name, e.what());
    m.status.state = node_state::lost;
    m.status.last_error = e.what();
    return false;
  }
}

/// Restarts `m` when the head owns its process and restarts are left; else marks it lost.
void restart_or_give_up(sup_ptr self, member& m) {
  auto& st = self->state;
  const int max_restarts = st.opts.config.fault_tolerance.max_restarts;
  // Killed, not waited for: the sweeps reap it, and the replacement starts only then.
  if (m.local && m.status.pid > 0 && st.opts.launcher->signal(m.status.pid, SIGKILL)) {
    m.exiting = m.status.pid;
    m.exiting_since = steady::now();
    m.exit_overdue = false;
  }
  if (!m.local || st.stopping) {
    m.status.state = node_state::lost;
    return;
  }
  if (m.status.restarts >= max_restarts) {
    logger()->error("node {} given up after {} restarts (fault_tolerance.max_restarts)",
                    m.spec.name, m.status.restarts);
    m.status.state = node_state::lost;
    m.status.pid = 0;
    return;
  }
  m.status.restarts += 1;
  if (st.opts.metrics) st.opts.metrics->node_restarts.with({m.spec.name}).inc();
  m.status.state = node_state::restarting;
  logger()->info("node {} restarting (restart {} of {})", m.spec.name, m.status.restarts,
                 max_restarts);
  if (m.exiting == 0) launch(self, m);
}

/// A killed process of `m` was reaped: its replacement may start now.
void on_exited(sup_ptr self, member& m, const child_exit& ex) {
  m.exiting = 0;
  logger()->info("node {} process {} {}", ex.name, ex.pid, ex.description);
  if (m.status.state == node_state::restarting && !self->state.stopping) launch(self, m);
}

/// Says once when a killed process of `m` outlives node_exit_wait.
void check_exit_overdue(member& m, steady::time_point now) {
  if (m.exiting == 0 || m.exit_overdue || now - m.exiting_since < node_exit_wait) return;
  m.exit_overdue = true;
  m.status.last_error = "process " + std::to_string(m.exiting) + " has not exited " +
                        std::to_string(ms_between(m.exiting_since, now)) +
                        " ms after SIGKILL; the node's replacement waits for it";
  logger()->error("node {}: {}", m.spec.name, m.status.last_error);
}

/// A registered node went down, or a launched process died before registering.
void on_lost(sup_ptr self, member& m, const std::string& reason) {
  const auto now = steady::now();
  const bool was_registered = m.status.state == node_state::registered;
  if (m.agent) {
    self->demonitor(m.agent.address());
    m.agent = nullptr;
  }
  if (m.status.state != node_state::restarting) m.lost_at = now;
  if (self->state.opts.metrics) self->state.opts.metrics->node_up.with({m.spec.name}).set(0);
  m.status.lost_at_unix_ms = unix_ms_now();
  m.status.last_error = reason;
  m.status.recover_ms = -1;
  if (was_registered) {
    m.status.detect_ms = ms_between(m.last_seen, now);
    logger()->warn("node {} lost after {} ms ({})", m.spec.name, m.status.detect_ms, reason);
  } else {
    logger()->warn("node {} failed before registering ({})", m.spec.name, reason);
  }
  restart_or_give_up(self, m);
  log_status(self);
}

/// Network chaos (fencing): a heartbeat from an agent that is not `m`'s registered
/// incarnation (the head declared the node lost while its connection lived on, or another
/// process took its place). That agent's shards were failed and their requests moved: it
/// is told to stop them and register afresh, so it never serves stale work.
void fence_stale(sup_ptr self, member& m, uint64_t seq) {
  if (m.status.state != node_state::lost && m.status.state != node_state::restarting &&
      m.status.state != node_state::registered)
    return;  // starting (not registered yet) or stopped on purpose: nothing to fence
  if (self->state.drains.count(m.spec.name)) return;  // leaving on purpose: it is being stopped
  auto agent = caf::actor_cast<node_agent_actor>(self->current_sender());
  if (!agent) return;
  const auto why = "node " + m.spec.name + " is " +
                   (m.status.state == node_state::registered ? "registered by another process"
                                                             : "declared lost");
  logger()->warn("fencing a stale agent of node {} ({})", m.spec.name, why);
  self->send(agent, fence_atom::value, head_term{self->state.opts.term}, seq, why);
}

// -- authorization ------------------------------------------------------------------------

/// Whether the current message comes from the head's own actors (this process).
bool from_head(sup_ptr self) { return sent_from(self->current_sender(), self->node()); }

/// Logs and describes a refused control message (`what`: "stop the cluster").
caf::error refuse(sup_ptr self, const std::string& what) {
  const auto who = describe_sender(self->current_sender());
  logger()->warn("refused a request to {} from {}: only the head's own actors may", what, who);
  return caf::make_error(caf::sec::invalid_argument,
                         "not allowed: only the head's own actors may " + what + " (the sender is " + who + ")");
}

/// `unregister_atom` from a peer: only the registered agent of node `name` itself.
bool from_agent_of(sup_ptr self, const member& m) {
  const auto sender = self->current_sender();
  return sender && m.agent && m.agent.address() == caf::actor_cast<caf::actor_addr>(sender);
}

caf::result<caf::ok_atom> on_register(sup_ptr self, node_info& info) {
  auto& st = self->state;
  if (st.stopping)
    return caf::make_error(caf::sec::invalid_argument, "the head is shutting down");
  auto* m = find_member(st, info.name);
  if (!m)
    return caf::make_error(caf::sec::invalid_argument,
                           "unknown node '" + info.name + "' (nodes: " + member_names(st) + ")");
  if (m->status.state == node_state::registered && m->agent)
    return caf::make_error(caf::sec::invalid_argument,
                           "node '" + info.name + "' is already registered (pid " +
                               std::to_string(m->status.pid) + ")");
  auto agent = caf::actor_cast<node_agent_actor>(self->current_sender());
  if (!agent) return caf::make_error(caf::sec::invalid_argument, "registration without a sender");
  if (m->local && m->status.pid != 0 && m->status.pid != info.pid)
    logger()->warn("node {} registered from pid {}, but the head launched pid {}", info.name,
                   info.pid, m->status.pid);
  const auto now = steady::now();
  const bool recovering =
      m->status.state == node_state::restarting || m->status.state == node_state::lost;
  self->monitor(agent);
  m->agent = agent;
  m->status.pid = info.pid;
  m->status.state = node_state::registered;
  ++m->registrations;
  if (st.drains.erase(info.name) > 0) logger()->info("drain: node {} is back: its replicas serve again", info.name);
  if (st.opts.metrics) st.opts.metrics->node_up.with({m->spec.name}).set(1);
  m->last_seen = now;
  if (!m->local) m->order = st.next_order++;
  std::string devices;
  for (const auto& d : info.devices) devices += (devices.empty() ? "" : ",") + d;
  if (recovering && m->status.lost_at_unix_ms >= 0) {
    m->status.recover_ms = ms_between(m->lost_at, now);
    logger()->info("node {} registered (pid {}, devices [{}]) {} ms after the loss", info.name,
                   info.pid, devices, m->status.recover_ms);
  } else {
    logger()->info("node {} registered (pid {}, devices [{}])", info.name, info.pid, devices);
  }
  logger()->info("node {} ready", info.name);
  log_status(self);
  return caf::ok_atom_v;
}

/// Completes the stop of node `name` (its answer, an error, or its disconnection).
void finish_stop(sup_ptr self, const std::string& name, const std::string& how) {
  auto it = self->state.stop_waiters.find(name);
  if (it == self->state.stop_waiters.end()) return;
  auto done = it->second;
  done(how);
}

caf::typed_response_promise<caf::ok_atom> on_stop(sup_ptr self) {
  auto& st = self->state;
  auto rp = self->make_response_promise<caf::ok_atom>();
  st.stopping = true;
  std::vector<member*> live;
  for (auto& m : st.members)
    if (m.status.state == node_state::registered && m.agent) live.push_back(&m);
  std::sort(live.begin(), live.end(), [](member* a, member* b) { return a->order > b->order; });
  logger()->info("stopping {} registered node(s)", live.size());
  if (live.empty()) {
    rp.deliver(caf::ok_atom_v);
    return rp;
  }
  auto pending = std::make_shared<size_t>(live.size());
  for (auto* m : live) {
    auto name = m->spec.name;
    st.stop_waiters[name] = [self, rp, pending, name](const std::string& how) mutable {
      if (self->state.stop_waiters.erase(name) == 0) return;
      if (auto* mm = find_member(self->state, name)) {
        if (mm->agent) self->demonitor(mm->agent.address());
        mm->agent = nullptr;
        mm->status.state = node_state::stopped;
      }
      logger()->info("node {} {}", name, how);
      if (--*pending == 0) {
        log_status(self);
        rp.deliver(caf::ok_atom_v);
      }
    };
    self->request(m->agent, st.opts.stop_wait, stop_atom::value, head_term{st.opts.term})
        .then([self, name](caf::ok_atom) { finish_stop(self, name, "stopped"); },
              [self, name](caf::error& e) {
                finish_stop(self, name, "did not confirm the stop: " + self->system().render(e));
              });
  }
  return rp;
}

/// A sweep later than its interval by more than a heartbeat interval means the head was
/// not running (starved of CPU, stopped): the heartbeats it could not read are no node's
/// fault, so every deadline moves by that much. A node is lost after heartbeat_timeout of
/// silence in the head's own running time.
void forgive_head_stall(supervisor_state& st, steady::time_point now) {
  const auto previous = st.last_sweep;
  st.last_sweep = now;
  if (previous == steady::time_point{}) return;
  const auto late = now - previous - st.opts.sweep_interval;
  if (late <= st.opts.config.fault_tolerance.heartbeat_interval) return;
  for (auto& m : st.members)
    if (m.status.state == node_state::registered) m.last_seen = std::min(m.last_seen + late, now);
  logger()->warn("the head did not run for {} ms (starved of CPU or stopped): node heartbeat deadlines move by as "
                 "much", std::chrono::duration_cast<std::chrono::milliseconds>(late).count());
}

void on_sweep(sup_ptr self) {
  auto& st = self->state;
  if (st.opts.launcher) {
    for (const auto& ex : st.opts.launcher->reap()) {
      member* m = nullptr;
      for (auto& cand : st.members)
        if (cand.local && cand.exiting == ex.pid) m = &cand;
      if (m) {
        on_exited(self, *m, ex);
        continue;
      }
      for (auto& cand : st.members)
        if (cand.local && cand.status.pid == ex.pid) m = &cand;
      if (!m) continue;
      if (m->status.state == node_state::starting || m->status.state == node_state::restarting) {
        m->status.pid = 0;
        on_lost(self, *m, "process " + ex.description);
      } else {
        logger()->info("node {} process {} {}", ex.name, ex.pid, ex.description);
      }
    }
  }
  const auto now = steady::now();
  for (auto& m : st.members) check_exit_overdue(m, now);
  forgive_head_stall(st, now);
  const auto timeout = st.opts.config.fault_tolerance.heartbeat_timeout;
  for (auto& m : st.members)
    if (m.status.state == node_state::registered && now - m.last_seen > timeout) {
      const auto link = m.agent ? m.agent.node() : caf::node_id{};
      on_lost(self, m, "no heartbeat for " + std::to_string(ms_between(m.last_seen, now)) + " ms");
      drop_node_link(self->system(), link);  // its shards go down here, as on a cut connection
    }
  self->delayed_send(self, st.opts.sweep_interval, sweep_atom::value);
}

supervisor_actor::behavior_type supervisor_impl(sup_ptr self, supervisor_options opts) {
  auto& st = self->state;
  st.opts = std::move(opts);
  for (const auto& n : st.opts.config.nodes) {
    member m;
    m.spec = n;
    m.status.name = n.name;
    m.local = st.opts.launch_local_nodes && st.opts.launcher && n.launch && is_local_host(n.host);
    m.status.launched = m.local;
    st.members.push_back(std::move(m));
  }
  if (st.opts.restored) restore_members(st, *st.opts.restored);
  log_status(self);
  self->system().registry().put(supervisor_registry_name, self);
  self->set_down_handler([self](caf::down_msg& dm) {
    for (auto& m : self->state.members)
      if (m.agent && m.agent.address() == dm.source) {
        if (self->state.stop_waiters.count(m.spec.name))
          finish_stop(self, m.spec.name, "disconnected while stopping");
        else if (m.status.state == node_state::registered)
          on_lost(self, m, self->system().render(dm.reason));
        return;
      }
  });
  return {
      [self](register_atom, node_info& info) { return on_register(self, info); },
      [self](unregister_atom, const std::string& name) -> caf::result<caf::ok_atom> {
        auto* m = find_member(self->state, name);
        if (!m) return caf::make_error(caf::sec::invalid_argument, "unknown node '" + name + "'");
        if (!from_head(self) && !from_agent_of(self, *m)) return refuse(self, "unregister node " + name);
        if (m->agent) self->demonitor(m->agent.address());
        m->agent = nullptr;
        m->status.state = node_state::stopped;
        logger()->info("node {} unregistered", name);
        log_status(self);
        return caf::ok_atom_v;
      },
      [self](heartbeat_atom, const std::string& name, uint64_t seq) {
        auto* m = find_member(self->state, name);
        if (!m) return;
        const auto sender = caf::actor_cast<caf::actor_addr>(self->current_sender());
        if (m->status.state == node_state::registered && m->agent && m->agent.address() == sender)
          m->last_seen = steady::now();
        else
          fence_stale(self, *m, seq);
      },
      [self](status_atom) { return snapshot(self->state); },
      [self](agents_atom) -> caf::result<std::vector<std::string>, std::vector<caf::actor>> {
        if (!from_head(self)) return refuse(self, "list the node agents");
        std::vector<std::string> names;
        std::vector<caf::actor> agents;
        for (const auto& m : self->state.members)
          if (m.status.state == node_state::registered && m.agent) {
            names.push_back(m.spec.name);
            agents.push_back(caf::actor_cast<caf::actor>(m.agent));
          }
        return caf::result<std::vector<std::string>, std::vector<caf::actor>>(std::move(names), std::move(agents));
      },
      [self](start_atom) {
        auto& st = self->state;
        if (!from_head(self)) {
          refuse(self, "start the nodes");
          return;
        }
        if (st.started) return;
        st.started = true;
        for (auto& m : st.members)
          if (m.local && !(st.drains.count(m.spec.name) && st.drains[m.spec.name].done)) launch(self, m);
        logger()->info("waiting for {} node(s) to register", st.members.size());
        log_status(self);
        self->send(self, sweep_atom::value);
      },
      [self](stop_atom) {
        if (from_head(self)) return on_stop(self);
        auto refusal = refuse(self, "stop the cluster");  // before make_response_promise takes the sender
        auto rp = self->make_response_promise<caf::ok_atom>();
        rp.deliver(std::move(refusal));
        return rp;
      },
      [self](router_atom, caf::actor& router) {
        if (!from_head(self)) {
          refuse(self, "replace the router");
          return;
        }
        self->state.router = std::move(router);
        if (self->state.router)
          logger()->info("router set: the cluster is serving");
        else
          logger()->info("router withdrawn: clients get none from this head");
      },
      [self](router_atom) -> caf::result<caf::actor> {
        if (self->state.stopping)
          return caf::make_error(caf::sec::invalid_argument, "the head is shutting down");
        if (!self->state.router)
          return caf::make_error(caf::sec::unavailable_or_would_block,
                                 "the cluster is not serving yet");
        return self->state.router;
      },
      [self](sweep_atom) {
        if (from_head(self)) on_sweep(self);
      },
      [self](drain_atom, const std::string& name, bool replace, const std::string& admin_key) {
        return on_drain(self, name, replace, admin_key);
      },
      [self](lease_atom) { return self->state.opts.term; },
      [self](roles_atom) { return roles_of(self->state.opts, self->state.gateway_seen); },
      [self](gateway_atom, int32_t index) {
        if (index >= 0 && static_cast<size_t>(index) < self->state.opts.config.gateways.size())
          self->state.gateway_seen[index] = steady::now();
      },
      [self](nodes_atom) {
        std::vector<node_view> out;
        for (const auto& m : self->state.members) out.push_back(view_of(self->state, m));
        return out;
      },
  };
}

}  // namespace supervisor_detail

using supervisor_detail::supervisor_impl;

cluster_roles roles_of(const supervisor_options& opts,
                       const std::map<int32_t, std::chrono::steady_clock::time_point>& gateway_seen) {
  cluster_roles out;
  const auto heads = head_list(opts.config);
  for (size_t i = 0; i < heads.size(); ++i) {
    const bool self = i == opts.head_index;
    out.heads.push_back(head_view{heads[i].host, heads[i].port, self, self ? opts.term : 0});
  }
  const auto now = std::chrono::steady_clock::now();
  for (size_t i = 0; i < opts.config.gateways.size(); ++i) {
    const auto& g = opts.config.gateways[i];
    gateway_view v{g.host, g.port};
    if (auto it = gateway_seen.find(static_cast<int32_t>(i)); it != gateway_seen.end())
      v.last_seen_ms = std::chrono::duration_cast<std::chrono::milliseconds>(now - it->second).count();
    out.gateways.push_back(std::move(v));
  }
  return out;
}

std::vector<std::string> node_command_line(const supervisor_options& opts, const std::string& name) {
  if (opts.config_path.empty())
    throw std::runtime_error("node " + name +
                             ": nodes can only be launched from a cluster file (--config)");
  std::vector<std::string> argv{opts.executable.empty() ? self_executable() : opts.executable,
                                "node", "--config", opts.config_path, "--name", name};
  for (const auto& kv : opts.overrides) {
    argv.push_back("--set");
    argv.push_back(kv);
  }
  return argv;
}

supervisor_actor spawn_supervisor(caf::actor_system& sys, supervisor_options opts) {
  return sys.spawn(supervisor_impl, std::move(opts));
}

}  // namespace troupe
