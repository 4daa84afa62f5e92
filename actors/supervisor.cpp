#include "actors/supervisor.h"

#include <signal.h>

#include <algorithm>
#include <functional>
#include <map>

#include "actors/actor_system_config.h"
#include "actors/node_agent.h"

namespace troupe {

namespace {

using steady = std::chrono::steady_clock;

int64_t ms_between(steady::time_point a, steady::time_point b) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(b - a).count();
}

int64_t unix_ms_now() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

/// One node as the supervisor tracks it.
struct member {
  node_section spec;
  node_status status;
  bool local = false;          // on this host and launched by the head
  node_agent_actor agent;      // set while registered
  steady::time_point last_seen;
  steady::time_point lost_at;  // first loss of the current outage
  int order = 0;               // start (or registration) order, for reverse-order stop
};

struct supervisor_state {
  supervisor_options opts;
  std::vector<member> members;  // cluster-file order
  caf::actor router;  // set by the head's main once the data plane serves
  bool started = false;
  bool stopping = false;
  int next_order = 0;
  /// Nodes asked to stop that have not answered: name -> completion ("stopped", ...).
  std::map<std::string, std::function<void(const std::string&)>> stop_waiters;
  static inline const char* name = "troupe.supervisor";
};

using sup_ptr = supervisor_actor::stateful_pointer<supervisor_state>;

cluster_status snapshot(const supervisor_state& st) {
  cluster_status s;
  s.stopping = st.stopping;
  for (const auto& m : st.members) s.nodes.push_back(m.status);
  return s;
}

void log_status(sup_ptr self) {
  logger()->info("status: {}", format_status_line(snapshot(self->state)));
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
  if (m.local && m.status.pid > 0) st.opts.launcher->kill_and_wait(m.status.pid);
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
  launch(self, m);
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
    self->request(m->agent, st.opts.stop_wait, stop_atom::value)
        .then([self, name](caf::ok_atom) { finish_stop(self, name, "stopped"); },
              [self, name](caf::error& e) {
                finish_stop(self, name, "did not confirm the stop: " + self->system().render(e));
              });
  }
  return rp;
}

void on_sweep(sup_ptr self) {
  auto& st = self->state;
  if (st.opts.launcher) {
    for (const auto& ex : st.opts.launcher->reap()) {
      member* m = nullptr;
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
  const auto timeout = st.opts.config.fault_tolerance.heartbeat_timeout;
  for (auto& m : st.members)
    if (m.status.state == node_state::registered && now - m.last_seen > timeout)
      on_lost(self, m, "no heartbeat for " + std::to_string(ms_between(m.last_seen, now)) + " ms");
  self->delayed_send(self, st.opts.sweep_interval, sweep_atom::value);
}

supervisor_actor::behavior_type supervisor_impl(sup_ptr self, supervisor_options opts) {
  auto& st = self->state;
  st.opts = std::move(opts);
  for (const auto& n : st.opts.config.nodes) {
    member m;
    m.spec = n;
    m.status.name = n.name;
    m.local = st.opts.launch_local_nodes && st.opts.launcher && is_local_host(n.host);
    m.status.launched = m.local;
    st.members.push_back(std::move(m));
  }
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
        if (m->agent) self->demonitor(m->agent.address());
        m->agent = nullptr;
        m->status.state = node_state::stopped;
        logger()->info("node {} unregistered", name);
        log_status(self);
        return caf::ok_atom_v;
      },
      [self](heartbeat_atom, const std::string& name, uint64_t) {
        auto* m = find_member(self->state, name);
        if (m && m->status.state == node_state::registered) m->last_seen = steady::now();
      },
      [self](status_atom) { return snapshot(self->state); },
      [self](agents_atom) {
        std::vector<std::string> names;
        std::vector<caf::actor> agents;
        for (const auto& m : self->state.members)
          if (m.status.state == node_state::registered && m.agent) {
            names.push_back(m.spec.name);
            agents.push_back(caf::actor_cast<caf::actor>(m.agent));
          }
        return std::make_tuple(std::move(names), std::move(agents));
      },
      [self](start_atom) {
        auto& st = self->state;
        if (st.started) return;
        st.started = true;
        for (auto& m : st.members)
          if (m.local) launch(self, m);
        logger()->info("waiting for {} node(s) to register", st.members.size());
        log_status(self);
        self->send(self, sweep_atom::value);
      },
      [self](stop_atom) { return on_stop(self); },
      [self](router_atom, caf::actor& router) {
        self->state.router = std::move(router);
        logger()->info("router set: the cluster is serving");
      },
      [self](router_atom) -> caf::result<caf::actor> {
        if (self->state.stopping)
          return caf::make_error(caf::sec::invalid_argument, "the head is shutting down");
        if (!self->state.router)
          return caf::make_error(caf::sec::unavailable_or_would_block,
                                 "the cluster is not serving yet");
        return self->state.router;
      },
      [self](sweep_atom) { on_sweep(self); },
  };
}

}  // namespace

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
