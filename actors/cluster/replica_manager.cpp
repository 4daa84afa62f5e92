// The replica manager (replica_manager.h): rebuilds, re-placement, re-planning, parking.
#include "actors/cluster/replica_manager.h"

#include <algorithm>
#include <chrono>
#include <map>
#include <optional>
#include <set>

#include "actors/actor_system_config.h"
#include "actors/cluster/node_agent.h"
#include "actors/cluster/replan.h"

namespace troupe {
namespace {

using clock_type = std::chrono::steady_clock;

/// Keeps the replicas whole, and at the best capacity the live devices allow. When a
/// replica fails it waits until every node of the replica's slots is registered again
/// (the supervisor restarts lost node processes), spawns a fresh set of shards through
/// the node agents and hands them to the replica. A node lost for good has its shards
/// moved to free devices; when there are none, the replica is re-planned over the
/// devices left (a smaller tensor x pipeline shape, replan.h) or, with none left,
/// retired. While a replica runs below the file's plan, the manager keeps checking the
/// registered nodes and re-plans it back up as soon as the devices return.
using manager_actor = caf::typed_actor<caf::reacts_to<ready_atom, int32_t, bool>, caf::reacts_to<sweep_atom>,
                                       caf::replies_to<scale_atom, int32_t>::with<int32_t>,
                                       caf::reacts_to<hold_atom, int32_t>>;

struct manager_state {
  cluster_config config;
  model_config model;
  supervisor_actor supervisor;
  std::vector<shard_slot> slots;     ///< current placement, every replica
  std::vector<shard_slot> original;  ///< the cluster file's placement
  std::vector<replica_plan> plans;   ///< per replica: current shape ({0, 0} = retired)
  std::vector<bool> ready;           ///< per replica: last reported state
  std::vector<replica_actor> replicas;
  std::vector<std::vector<shard_actor>> shards;  ///< per replica, slot order
  caf::actor router;
  std::map<int32_t, bool> pending;                 ///< failed replicas -> rebuild in progress
  std::map<int32_t, clock_type::time_point> not_before;  ///< first sweep of a failed replica
  std::map<int32_t, clock_type::time_point> down_since;  ///< failure or re-plan start, for the log
  bool sweeping = false;                          ///< a sweep timer is running
  std::shared_ptr<std::atomic<int>> ready_count;  ///< shared with bring_up_replicas
  std::shared_ptr<troupe_metrics> metrics;        ///< capacity gauges (null = nowhere)
  std::set<int32_t> parked;   ///< autoscaling: replicas parked (shards stopped, devices free)
  std::set<int32_t> parking;  ///< autoscaling: replicas draining before they are parked
  int32_t scale_target = -1;  ///< autoscaling: the autoscaler's last target (-1 = none yet)
  bool restoring = false;     ///< autoscaling: an agents request for restores is in flight
  bool restore_blocked = false;  ///< autoscaling: the last restore found no devices (logged once)
  std::set<int32_t> stage_local;          ///< replicas in a stage-local recovery (their live shards stay)
  std::set<int32_t> local_handed;         ///< stage-local rebuilds handed to their replica, not yet ready
  std::set<caf::actor_addr> dead_shards;  ///< shards seen down (monitored since spawned)
  head_term term;                         ///< the head's term: every spawn request carries it
  std::vector<int32_t> rebuilds;          ///< per replica: times its shards were spawned again
  std::shared_ptr<head_state_recorder> recorder;  ///< the replicated head state (null = none)
  static inline const char* name = "troupe.replica_manager";
};

using manager_ptr = manager_actor::stateful_pointer<manager_state>;

std::vector<shard_slot> slots_of(const manager_state& st, int32_t replica);

/// Whether `replica` was retired (no plan fitted the devices left).
bool retired(const manager_state& st, int32_t replica) { return st.plans[static_cast<size_t>(replica)].shards() == 0; }

/// Whether some replica runs below the file's plan (re-planned smaller, or retired).
bool degraded(const manager_state& st) {
  for (size_t r = 0; r < st.plans.size(); ++r)
    if (!st.parked.count(static_cast<int32_t>(r)) && st.plans[r].shards() < full_plan(st.config).shards()) return true;
  return false;
}

/// The placement as the replicated head state holds it: every replica's shape, whether it
/// is parked, its rebuilds and its shards (stage, then rank) with their layers.
std::vector<replica_state> replica_states(const manager_state& st) {
  std::vector<replica_state> out;
  for (size_t r = 0; r < st.plans.size(); ++r) {
    replica_state rs;
    rs.index = static_cast<int32_t>(r);
    rs.tensor = st.plans[r].tensor;
    rs.pipeline = st.plans[r].pipeline;
    rs.parked = st.parked.count(rs.index) > 0;
    rs.rebuilds = r < st.rebuilds.size() ? st.rebuilds[r] : 0;
    if (st.plans[r].shards() > 0) {
      auto mine = slots_of(st, rs.index);
      std::sort(mine.begin(), mine.end(), [](const shard_slot& a, const shard_slot& b) {
        return std::make_pair(a.stage, a.rank) < std::make_pair(b.stage, b.rank);
      });
      const auto plan_config = config_for_plan(st.config, st.plans[r]);
      for (const auto& slot : mine) {
        const auto layers = make_shard_spec(plan_config, st.model, slot).layers;
        rs.shards.push_back({shard_name(rs.index, slot.stage, slot.rank), slot.node, slot.device, slot.stage,
                             slot.rank, layers.begin, layers.end});
      }
    }
    out.push_back(std::move(rs));
  }
  return out;
}

/// Hands the placement and the autoscaler's target to the recorder (a new sequence only
/// when something changed).
void record(const manager_state& st) {
  if (st.recorder) st.recorder->set_replicas(replica_states(st), autoscale_state{st.scale_target, -1});
}

/// Publishes and logs the capacity: replicas ready (at the full plan) and devices in use.
void publish_capacity(manager_state& st) {
  record(st);
  const auto full = full_plan(st.config);
  int ready = 0, at_full = 0, in_use = 0;
  for (size_t r = 0; r < st.plans.size(); ++r) {
    in_use += st.plans[r].shards();
    if (!st.ready[r]) continue;
    ++ready;
    if (st.plans[r] == full) ++at_full;
  }
  const int planned = st.config.parallel.replicas;
  logger()->info("capacity: {} of {} replicas ready ({} at the full plan), {} of {} devices in use", ready, planned,
                 at_full, in_use, planned * full.shards());
  if (!st.metrics) return;
  st.metrics->capacity_replicas.with({"planned"}).set(planned);
  st.metrics->capacity_replicas.with({"ready"}).set(ready);
  st.metrics->capacity_replicas.with({"full"}).set(at_full);
  st.metrics->capacity_devices.with({"planned"}).set(planned * full.shards());
  st.metrics->capacity_devices.with({"in_use"}).set(in_use);
}

/// Replaces the shards of `replica` with fresh ones on `slots` (shape `plan`): stops the
/// old shards (a serving replica fails, and the router moves its requests), spawns the new
/// ones through the node agents and hands them to the replica with the new shape.
void rebuild(manager_ptr self, int32_t replica, const std::map<std::string, node_agent_actor>& agents,
             const replica_plan& plan, const std::vector<shard_slot>& slots) {
  auto& st = self->state;
  const auto r = static_cast<size_t>(replica);
  st.pending[replica] = true;
  // Stage-local recovery: the shards still alive stay (the replica keeps their KV cache).
  const bool local = st.stage_local.count(replica) && plan == st.plans[r] && st.shards[r].size() == slots.size();
  std::vector<shard_actor> kept(slots.size());
  for (size_t i = 0; i < st.shards[r].size(); ++i) {
    auto& old = st.shards[r][i];
    if (!old) continue;
    if (local && !st.dead_shards.count(old.address()))
      kept[i] = old;
    else
      caf::anon_send_exit(old, caf::exit_reason::user_shutdown);
    st.dead_shards.erase(old.address());
  }
  st.shards[r].clear();
  st.slots.erase(std::remove_if(st.slots.begin(), st.slots.end(), [&](const shard_slot& s) { return s.replica == replica; }),
                 st.slots.end());
  st.slots.insert(st.slots.end(), slots.begin(), slots.end());
  st.plans[r] = plan;
  st.ready[r] = false;  // a serving replica goes down for the switch
  if (r < st.rebuilds.size()) ++st.rebuilds[r];
  publish_capacity(st);
  struct spawning {
    std::vector<shard_actor> fresh;
    size_t left = 0;
    bool failed = false;
  };
  auto sp = std::make_shared<spawning>();
  sp->fresh = kept;
  sp->left = static_cast<size_t>(std::count(kept.begin(), kept.end(), shard_actor{}));
  logger()->info("replica {}: spawning {} new shard(s) ({}){}", replica, sp->left, describe(plan),
                 local ? "; the live ones stay (stage-local recovery)" : "");
  // Hands the complete set to the replica: the same shape keeps reused shards' KV cache.
  auto hand_over = [self, replica, plan, local](const std::vector<shard_actor>& fresh) {
    self->state.shards[static_cast<size_t>(replica)] = fresh;
    auto& target = self->state.replicas[static_cast<size_t>(replica)];
    if (local) self->state.local_handed.insert(replica);
    if (local)
      self->send(target, rebuild_atom::value, fresh);
    else
      self->send(target, replan_atom::value, fresh, static_cast<int32_t>(plan.tensor),
                 static_cast<int32_t>(plan.pipeline));
  };
  if (sp->left == 0) hand_over(sp->fresh);
  const auto plan_config = config_for_plan(st.config, plan);
  for (size_t i = 0; i < slots.size(); ++i) {
    if (kept[i]) continue;
    self->request(agents.at(slots[i].node), std::chrono::seconds(3), spawn_shard_atom::value, st.term,
                  make_shard_spec(plan_config, st.model, slots[i]))
        .then(
            [self, sp, i, hand_over](shard_actor& s) {
              if (sp->failed) {
                caf::anon_send_exit(s, caf::exit_reason::user_shutdown);
                return;
              }
              self->monitor(s);
              sp->fresh[i] = s;
              if (--sp->left == 0) hand_over(sp->fresh);
            },
            [self, replica, sp, kept](caf::error& e) {
              logger()->warn("replica {}: respawning a shard failed ({}); retrying", replica,
                             self->system().render(e));
              if (sp->failed) return;
              sp->failed = true;
              for (size_t k = 0; k < sp->fresh.size(); ++k)
                if (sp->fresh[k] && !kept[k]) caf::anon_send_exit(sp->fresh[k], caf::exit_reason::user_shutdown);
              self->state.shards[static_cast<size_t>(replica)] = kept;  // the live ones stay for the next try
              self->state.pending[replica] = false;  // the next sweep tries again
            });
  }
}

/// Moves the slots of `replica` whose node is gone for good (state lost: given up, or
/// not the head's to restart) onto free devices of registered nodes: devices that no
/// slot of any replica uses. Slots keep their replica, stage and rank.
void replace_lost(manager_state& st, int32_t replica, const cluster_status& cs,
                  const std::map<std::string, node_agent_actor>& agents) {
  for (auto& slot : st.slots) {
    if (slot.replica != replica || agents.count(slot.node)) continue;
    const auto* n = find_node(cs, slot.node);
    if (!n || n->state != node_state::lost) continue;  // restarting: wait for it
    for (const auto& node : st.config.nodes) {
      if (!agents.count(node.name)) continue;
      std::multiset<std::string> free(node.devices.begin(), node.devices.end());
      for (const auto& other : st.slots)
        if (other.node == node.name) {
          auto it = free.find(other.device);
          if (it != free.end()) free.erase(it);
        }
      if (free.empty()) continue;
      logger()->info("replica {}: shard s{}r{} moves from lost node {} to node {} ({})", replica, slot.stage,
                     slot.rank, slot.node, node.name, *free.begin());
      slot.node = node.name;
      slot.device = *free.begin();
      break;
    }
  }
}

/// The slots of `replica` in the current placement.
std::vector<shard_slot> slots_of(const manager_state& st, int32_t replica) {
  std::vector<shard_slot> mine;
  for (const auto& s : st.slots)
    if (s.replica == replica) mine.push_back(s);
  return mine;
}

/// The best plan for `replica` over the devices it may take now, with its slots.
std::optional<std::pair<replica_plan, std::vector<shard_slot>>> best_plan(
    const manager_state& st, int32_t replica, const std::map<std::string, node_agent_actor>& agents) {
  std::vector<std::string> registered;
  for (const auto& a : agents) registered.push_back(a.first);
  const auto devices = devices_for_replica(st.config, replica, st.slots, st.original, registered);
  const auto plan = plan_for_devices(st.model, full_plan(st.config), st.config.parallel.allow_uneven_heads,
                                     static_cast<int>(devices.size()));
  if (!plan) return std::nullopt;
  return std::make_pair(*plan, slots_for_plan(replica, *plan, devices));
}

std::string slot_list(const std::vector<shard_slot>& slots) {
  std::string out;
  for (const auto& s : slots)
    out += (out.empty() ? "" : ", ") + ("s" + std::to_string(s.stage) + "r" + std::to_string(s.rank)) + " on " +
           s.node + " (" + s.device + ")";
  return out;
}

/// A failed replica some of whose nodes are gone for good and whose shards found no free
/// device: re-plans it over the devices left, or retires it when no plan fits.
void replan_or_retire(manager_ptr self, int32_t replica, const std::map<std::string, node_agent_actor>& agents) {
  auto& st = self->state;
  const auto r = static_cast<size_t>(replica);
  auto best = best_plan(st, replica, agents);
  if (!best) {
    logger()->warn("replica {}: retired: no plan of the model fits the devices left (capacity returns when its "
                   "nodes register again)", replica);
    for (auto& old : st.shards[r]) caf::anon_send_exit(old, caf::exit_reason::user_shutdown);
    st.shards[r].clear();
    st.slots.erase(std::remove_if(st.slots.begin(), st.slots.end(), [&](const shard_slot& s) { return s.replica == replica; }),
                   st.slots.end());
    st.plans[r] = {0, 0};
    st.pending.erase(replica);
    publish_capacity(st);
    return;
  }
  logger()->warn("replica {}: re-planned from {} to {} over the devices left: {}", replica, describe(st.plans[r]),
                 describe(best->first), slot_list(best->second));
  rebuild(self, replica, agents, best->first, best->second);
}

/// Whether the head has seen one of `replica`'s current shards go down.
bool any_shard_dead(const manager_state& st, int32_t replica) {
  for (const auto& s : st.shards[static_cast<size_t>(replica)])
    if (s && st.dead_shards.count(s.address())) return true;
  return false;
}

/// Tries `replica` again on a later sweep.
void postpone(manager_ptr self, int32_t replica) {
  auto& st = self->state;
  const auto delay = std::max(std::chrono::milliseconds(100), st.config.fault_tolerance.heartbeat_interval / 2);
  st.not_before[replica] = clock_type::now() + delay;
}

/// One sweep over the failed replicas: re-place shards of nodes lost for good, rebuild
/// each replica whose nodes are all registered, and re-plan those that cannot be whole.
void sweep_failed(manager_ptr self, const cluster_status& cs, const std::map<std::string, node_agent_actor>& agents) {
  auto& st = self->state;
  const auto now = clock_type::now();
  std::vector<int32_t> todo;
  for (const auto& [replica, in_progress] : st.pending)
    if (!in_progress && !retired(st, replica) && now >= st.not_before[replica]) todo.push_back(replica);
  for (const int32_t replica : todo) {
    replace_lost(st, replica, cs, agents);
    bool all_up = true, waiting = false;
    for (const auto& s : st.slots) {
      if (s.replica != replica || agents.count(s.node)) continue;
      all_up = false;
      const auto* n = find_node(cs, s.node);
      if (!n || n->state != node_state::lost) waiting = true;  // restarting, or drained (stopped): wait
    }
    if (all_up && st.stage_local.count(replica) && !any_shard_dead(st, replica)) {
      // A survivor reported the lost peer before the head saw it go down: wait for the
      // down message (or the replica's stage_recovery_timeout), or every shard would be kept.
      postpone(self, replica);
    } else if (all_up) {
      rebuild(self, replica, agents, st.plans[static_cast<size_t>(replica)], slots_of(st, replica));
    }
    else if (!waiting)
      replan_or_retire(self, replica, agents);
  }
}

/// Replicas below the file's plan that are not being rebuilt (serving smaller, or
/// retired) grow back when the registered nodes offer more devices.
void sweep_degraded(manager_ptr self, const std::map<std::string, node_agent_actor>& agents) {
  auto& st = self->state;
  for (int32_t replica = 0; replica < static_cast<int32_t>(st.plans.size()); ++replica) {
    const auto r = static_cast<size_t>(replica);
    if (st.pending.count(replica) || st.parked.count(replica) || st.plans[r].shards() >= full_plan(st.config).shards())
      continue;
    auto best = best_plan(st, replica, agents);
    if (!best || best->first.shards() <= st.plans[r].shards()) continue;
    logger()->info("replica {}: capacity returns: re-planned from {} to {} on {}", replica, describe(st.plans[r]),
                   describe(best->first), slot_list(best->second));
    st.down_since[replica] = clock_type::now();
    rebuild(self, replica, agents, best->first, best->second);
  }
}

/// Queues `replica` for the next sweeps (a rebuild once its nodes are registered).
void schedule_rebuild(manager_ptr self, int32_t replica) {
  auto& st = self->state;
  st.pending[replica] = false;
  st.down_since.emplace(replica, clock_type::now());
  // Give the supervisor a moment to see a lost node first, so the rebuild does not ask a
  // dead node agent (a remote request to it waits for its timeout).
  const auto delay = std::max(std::chrono::milliseconds(200), st.config.fault_tolerance.heartbeat_interval);
  st.not_before[replica] = clock_type::now() + delay;
  if (!st.sweeping) {
    st.sweeping = true;
    self->delayed_send(self, delay, sweep_atom::value);
  }
}

/// A replica started a stage-local recovery: the router holds its requests there, and the
/// rebuild replaces only its dead shards.
void on_replica_hold(manager_ptr self, int32_t replica) {
  auto& st = self->state;
  if (replica < 0 || replica >= static_cast<int32_t>(st.plans.size())) return;
  // With the manager as the sender: the router takes replica states from the head's own actors only.
  caf::unsafe_send_as(self, st.router, hold_atom::value, replica);
  st.ready[static_cast<size_t>(replica)] = false;
  publish_capacity(st);
  st.stage_local.insert(replica);
  if (!st.pending.count(replica) && !retired(st, replica)) schedule_rebuild(self, replica);
}

/// A replica reported ready (`ok`) or failed: tells the router, tracks pending rebuilds.
void on_replica_state(manager_ptr self, int32_t replica, bool ok) {
  auto& st = self->state;
  caf::unsafe_send_as(self, st.router, ready_atom::value, replica, ok);
  if (replica < 0 || replica >= static_cast<int32_t>(st.plans.size())) return;
  st.stage_local.erase(replica);  // ready, or it gave the recovery up: shards are replaced as usual
  // A stage-local rebuild it was handed and then gave up (a kept shard was dead after all,
  // or the replay ran past its timeout) needs a full rebuild, not the one already done.
  if (st.local_handed.erase(replica) && !ok) st.pending.erase(replica);
  st.ready[static_cast<size_t>(replica)] = ok;
  publish_capacity(st);
  if (ok) {
    if (st.ready_count) ++*st.ready_count;
    st.pending.erase(replica);
    auto since = st.down_since.find(replica);
    if (since != st.down_since.end()) {
      logger()->info("replica {}: serving with {} {} ms after it went down", replica,
                     describe(st.plans[static_cast<size_t>(replica)]),
                     std::chrono::duration_cast<std::chrono::milliseconds>(clock_type::now() - since->second).count());
      st.down_since.erase(since);
    }
    return;
  }
  if (st.pending.count(replica) || retired(st, replica)) return;
  schedule_rebuild(self, replica);
}

// ---- autoscaling: parking the replicas above the autoscaler's target, restoring them ----

/// Replicas that count towards the autoscaler's target: neither parked (nor being
/// parked) nor retired by a failure.
std::vector<int32_t> active_replicas(const manager_state& st) {
  std::vector<int32_t> out;
  for (int32_t r = 0; r < static_cast<int32_t>(st.plans.size()); ++r)
    if (!st.parked.count(r) && !st.parking.count(r) && !retired(st, r)) out.push_back(r);
  return out;
}

/// The drain of `replica` ended (`moved` requests moved at the deadline; -1: the router
/// did not answer): stops its shards and frees its devices, unless it failed meanwhile
/// (its rebuild runs; the autoscaler's next target parks it once it serves again).
void finish_parking(manager_ptr self, int32_t replica, int32_t moved) {
  auto& st = self->state;
  st.parking.erase(replica);
  if (st.pending.count(replica) || retired(st, replica)) {
    logger()->info("replica {}: autoscale: not parked (it failed while draining)", replica);
    return;
  }
  const auto r = static_cast<size_t>(replica);
  self->send(st.replicas[r], stop_atom::value);  // before the shards go: not a failure
  for (auto& old : st.shards[r]) caf::anon_send_exit(old, caf::exit_reason::user_shutdown);
  st.shards[r].clear();
  st.slots.erase(std::remove_if(st.slots.begin(), st.slots.end(), [&](const shard_slot& s) { return s.replica == replica; }),
                 st.slots.end());
  st.plans[r] = {0, 0};  // with `parked`: neither rebuilt (retired) nor grown back (sweep_degraded)
  st.ready[r] = false;
  st.parked.insert(replica);
  logger()->info("replica {}: autoscale: parked ({} request(s) moved at the drain deadline); its devices are free",
                 replica, std::max(0, moved));
  publish_capacity(st);
}

/// Drains `replica` through the router (fault_tolerance.drain_timeout), then parks it.
void park(manager_ptr self, int32_t replica) {
  auto& st = self->state;
  st.parking.insert(replica);
  const auto deadline = st.config.fault_tolerance.drain_timeout;
  logger()->info("replica {}: autoscale: parking: draining (at most {} ms), then stopping its shards", replica,
                 deadline.count());
  self->request(caf::actor_cast<router_actor>(st.router), deadline + std::chrono::seconds(10), drain_atom::value,
                std::vector<int32_t>{replica}, caf::timespan{deadline})
      .then([self, replica](int32_t moved) { finish_parking(self, replica, moved); },
            [self, replica](caf::error& e) {
              logger()->warn("replica {}: autoscale: drain failed ({}); parking it anyway", replica,
                             self->system().render(e));
              finish_parking(self, replica, -1);
            });
}

/// Restores parked replicas, lowest index first, until the active ones reach the target:
/// each on its original slots when they are free, else on the best plan of the free devices.
void restore_parked(manager_ptr self, const std::map<std::string, node_agent_actor>& agents) {
  auto& st = self->state;
  auto need = st.scale_target - static_cast<int32_t>(active_replicas(st).size());
  for (auto it = st.parked.begin(); it != st.parked.end() && need > 0;) {
    const int32_t replica = *it;
    auto best = best_plan(st, replica, agents);
    if (!best) {
      if (!st.restore_blocked)
        logger()->warn("replica {}: autoscale: cannot restore it: no plan of the model fits the free devices", replica);
      st.restore_blocked = true;
      ++it;
      continue;
    }
    st.restore_blocked = false;
    it = st.parked.erase(it);
    --need;
    logger()->info("replica {}: autoscale: restoring it ({}) on {}", replica, describe(best->first),
                   slot_list(best->second));
    st.down_since[replica] = clock_type::now();
    rebuild(self, replica, agents, best->first, best->second);
    if (!st.sweeping) {  // a failed spawn is retried by sweep_failed
      st.sweeping = true;
      self->send(self, sweep_atom::value);
    }
  }
}

/// The autoscaler's target of active replicas (at least 1): parks the highest-index
/// serving replicas above it, restores parked ones below it. Answers the replicas the
/// devices allow (parked ones included, retired ones not).
int32_t on_scale(manager_ptr self, int32_t target) {
  auto& st = self->state;
  st.scale_target = std::max<int32_t>(1, target);
  record(st);
  const auto active = active_replicas(st);
  auto excess = static_cast<int32_t>(active.size()) - st.scale_target;
  for (auto it = active.rbegin(); it != active.rend() && excess > 0; ++it)
    if (st.ready[static_cast<size_t>(*it)] && !st.pending.count(*it)) {
      park(self, *it);
      --excess;
    }
  if (excess < 0 && !st.parked.empty() && !st.restoring) {
    st.restoring = true;
    self->request(st.supervisor, std::chrono::seconds(2), agents_atom::value)
        .then(
            [self](std::vector<std::string>& names, std::vector<caf::actor>& handles) {
              self->state.restoring = false;
              std::map<std::string, node_agent_actor> agents;
              for (size_t i = 0; i < names.size(); ++i) agents[names[i]] = caf::actor_cast<node_agent_actor>(handles[i]);
              restore_parked(self, agents);
            },
            [self](caf::error&) { self->state.restoring = false; });
  }
  int32_t available = 0;
  for (int32_t r = 0; r < static_cast<int32_t>(st.plans.size()); ++r)
    if (!retired(st, r) || st.parked.count(r)) ++available;
  return available;
}

manager_actor::behavior_type manager_impl(manager_ptr self, manager_state init) {
  self->state = std::move(init);
  publish_capacity(self->state);
  for (const auto& group : self->state.shards)
    for (const auto& s : group) self->monitor(s);
  self->set_down_handler([self](caf::down_msg& dm) { self->state.dead_shards.insert(dm.source); });
  if (degraded(self->state)) {  // started from a head state with a smaller or retired replica
    self->state.sweeping = true;
    self->send(self, sweep_atom::value);
  }
  return {
      [self](ready_atom, int32_t replica, bool ok) { on_replica_state(self, replica, ok); },
      [self](hold_atom, int32_t replica) { on_replica_hold(self, replica); },
      [self](scale_atom, int32_t target) { return on_scale(self, target); },
      [self](sweep_atom) {
        auto& st = self->state;
        if (st.pending.empty() && !degraded(st)) {
          st.sweeping = false;
          return;
        }
        self->request(st.supervisor, std::chrono::seconds(2), status_atom::value)
            .then(
                [self](cluster_status& cs) {
                  self->request(self->state.supervisor, std::chrono::seconds(2), agents_atom::value)
                      .then(
                          [self, cs](std::vector<std::string>& names, std::vector<caf::actor>& handles) {
                            if (cs.stopping) return;
                            std::map<std::string, node_agent_actor> agents;
                            for (size_t i = 0; i < names.size(); ++i)
                              agents[names[i]] = caf::actor_cast<node_agent_actor>(handles[i]);
                            sweep_failed(self, cs, agents);
                            sweep_degraded(self, agents);
                          },
                          [](caf::error&) {});
                },
                [](caf::error&) {});
        self->delayed_send(self, std::chrono::milliseconds(100), sweep_atom::value);
      },
  };
}

}  // namespace

caf::actor spawn_replica_manager(caf::actor_system& sys, replica_manager_options o) {
  manager_state ms;
  ms.config = std::move(o.config);
  ms.model = std::move(o.model);
  ms.supervisor = std::move(o.supervisor);
  ms.slots = o.slots;
  ms.original = o.original.empty() ? std::move(o.slots) : std::move(o.original);
  const auto replicas = static_cast<size_t>(ms.config.parallel.replicas);
  ms.plans = o.plans.size() == replicas ? std::move(o.plans) : std::vector<replica_plan>(replicas, full_plan(ms.config));
  ms.ready.assign(replicas, false);
  ms.parked = std::move(o.parked);
  ms.rebuilds = o.rebuilds.size() == replicas ? std::move(o.rebuilds) : std::vector<int32_t>(replicas, 0);
  ms.scale_target = o.scale_target;
  ms.recorder = std::move(o.recorder);
  ms.metrics = std::move(o.metrics);
  ms.replicas = std::move(o.replicas);
  ms.shards = std::move(o.shards);
  ms.router = std::move(o.router);
  ms.ready_count = std::move(o.ready_count);
  ms.term = o.term;
  return caf::actor_cast<caf::actor>(sys.spawn(manager_impl, std::move(ms)));
}

}  // namespace troupe
