// The supervisor's graceful drain of a node (`troupe drain`, POST /admin/drain): the
// credential check, the node views operators see, and the drain's two halves (the request,
// then the router's answer).
#include <algorithm>

#include "actors/actor_system_config.h"
#include "actors/cluster/placement.h"
#include "actors/cluster/supervisor_state.h"
#include "actors/gateway/http_auth.h"
#include "actors/link_security.h"

namespace troupe::supervisor_detail {

namespace {

/// Why a drain from outside the head is refused ("" when its admin key is good).
std::string drain_credential_problem(sup_ptr self, const std::string& admin_key) {
  if (from_head(self)) return "";
  const auto& keys = self->state.opts.config.server.admin_keys;
  if (keys.empty())
    return "a drain from outside the head needs an admin key, and the head has none (set server.admin_keys; "
           "on the head's host, POST /admin/drain needs none)";
  if (admin_key.empty()) return "a drain from outside the head needs an admin key (troupe drain --admin-key)";
  if (!http::key_matches(keys, admin_key)) return "the admin key is not one of server.admin_keys";
  return "";
}

/// The router answered a drain of `name` (`moved` requests moved, or `error`): the node
/// leaves without counting as lost, then its process is asked to stop.
void finish_drain(sup_ptr self, const std::string& name, int32_t moved, const std::string& error) {
  auto& st = self->state;
  auto d = st.drains.find(name);
  auto* m = find_member(st, name);
  if (d == st.drains.end() || !m || d->second.done) return;  // registered again meanwhile
  if (m->status.state != node_state::registered || !m->agent) {
    logger()->warn("drain: node {} was lost while draining; the drain ends there", name);
    st.drains.erase(d);
    log_status(self);
    return;
  }
  if (!error.empty())
    logger()->warn("drain: node {}: the router did not confirm the drain ({}); stopping the node anyway", name, error);
  auto& rec = d->second;
  rec.done = true;
  rec.migrated = std::max(moved, 0);
  rec.detail = std::to_string(rec.migrated) + " request(s) moved to other replicas at the drain deadline";
  auto agent = m->agent;
  self->demonitor(agent.address());  // its disconnection is no loss
  m->agent = nullptr;
  m->status.state = rec.replace ? node_state::lost : node_state::stopped;
  if (rec.replace) m->status.last_error = "drained with replace: its shards may move to free devices";
  if (st.opts.metrics) st.opts.metrics->node_up.with({name}).set(0);
  logger()->info("drain: node {} drained ({} request(s) moved); stopping it", name, rec.migrated);
  self->request(agent, st.opts.stop_wait, stop_atom::value, head_term{st.opts.term})
      .then([name](caf::ok_atom) { logger()->info("drain: node {} stopped", name); },
            [self, name](caf::error& e) {
              logger()->warn("drain: node {} did not confirm the stop: {}", name, self->system().render(e));
            });
  log_status(self);
}

}  // namespace

/// Replicas with a shard on `node` in the cluster file's placement.
std::vector<int32_t> replicas_on(const cluster_config& c, const std::string& node) {
  std::vector<int32_t> out;
  for (const auto& slot : plan_placement(c))
    if (slot.node == node && std::find(out.begin(), out.end(), slot.replica) == out.end())
      out.push_back(slot.replica);
  return out;
}

node_view view_of(const supervisor_state& st, const member& m) {
  node_view v;
  v.name = m.spec.name;
  v.pid = m.status.pid;
  v.replicas = replicas_on(st.opts.config, m.spec.name);
  v.detail = m.status.last_error;
  switch (m.status.state) {
    case node_state::starting: v.state = "starting"; break;
    case node_state::registered: v.state = "ready"; break;
    case node_state::lost:
    case node_state::restarting: v.state = "lost"; break;
    case node_state::stopped: v.state = "stopped"; break;
  }
  auto d = st.drains.find(m.spec.name);
  if (d != st.drains.end()) {
    v.state = d->second.done ? "drained" : "draining";
    v.replace = d->second.replace;
    v.migrated = d->second.migrated;
    v.detail = d->second.detail;
  }
  return v;
}

void update_node_gauges(const supervisor_state& st) {
  if (!st.opts.metrics) return;
  std::map<std::string, int> counts{{"starting", 0}, {"ready", 0}, {"draining", 0},
                                    {"drained", 0},  {"lost", 0},  {"stopped", 0}};
  for (const auto& m : st.members) counts[view_of(st, m).state]++;
  for (const auto& [state, n] : counts) st.opts.metrics->nodes.with({state}).set(n);
}

drain_reply on_drain(sup_ptr self, const std::string& name, bool replace, const std::string& admin_key) {
  auto& st = self->state;
  drain_reply r;
  if (auto problem = drain_credential_problem(self, admin_key); !problem.empty()) {
    logger()->warn("drain: refused a drain of node {} from {}: {}", name,
                   describe_sender(self->current_sender()), problem);
    r.code = 403;
    r.error = problem;
    return r;
  }
  auto* m = find_member(st, name);
  if (!m) {
    r.code = 400;
    r.error = "node: unknown node '" + name + "' (nodes: " + member_names(st) + ")";
    return r;
  }
  r.node = view_of(st, *m);
  r.code = 409;
  if (st.drains.count(name))
    r.error = "node '" + name + "' is already " + r.node.state;
  else if (st.stopping)
    r.error = "the head is shutting down";
  else if (m->status.state != node_state::registered || !m->agent)
    r.error = "node '" + name + "' is not ready (state " + r.node.state + "): only a ready node can be drained";
  else if (!st.router)
    r.error = "the cluster is not serving yet";
  if (!r.error.empty()) return r;
  r.code = 202;
  auto& d = st.drains[name];
  d.replace = replace;
  d.replicas = r.node.replicas;
  const auto timeout = st.opts.config.fault_tolerance.drain_timeout;
  d.detail = "no new requests; in-flight requests finish or move after " + std::to_string(timeout.count()) +
             " ms (fault_tolerance.drain_timeout)";
  logger()->info("drain: node {} draining ({} replica(s), replace {}): {}", name, d.replicas.size(), replace,
                 d.detail);
  self->request(caf::actor_cast<router_actor>(st.router), timeout + std::chrono::seconds(30), drain_atom::value,
                d.replicas, caf::timespan{timeout})
      .then([self, name](int32_t moved) { finish_drain(self, name, moved, ""); },
            [self, name](caf::error& e) { finish_drain(self, name, -1, self->system().render(e)); });
  log_status(self);
  r.node = view_of(st, *m);
  return r;
}

}  // namespace troupe::supervisor_detail
