#include "actors/placement.h"

#include <map>
#include <set>
#include <mutex>
#include <thread>

#include "actors/actor_system_config.h"
#include "actors/node_agent.h"
#include "actors/supervisor.h"

namespace troupe {

std::vector<shard_slot> plan_placement(const cluster_config& c) {
  std::vector<std::pair<std::string, std::string>> devices;
  for (const auto& n : c.nodes)
    for (const auto& d : n.devices) devices.emplace_back(n.name, d);
  std::vector<shard_slot> slots;
  size_t next = 0;
  for (int r = 0; r < c.parallel.replicas; ++r)
    for (int s = 0; s < c.parallel.pipeline; ++s)
      for (int t = 0; t < c.parallel.tensor; ++t) {
        if (next >= devices.size())
          throw std::runtime_error("placement: the cluster needs more devices than its nodes list (" +
                                   std::to_string(devices.size()) + ")");
        slots.push_back({r, s, t, devices[next].first, devices[next].second});
        ++next;
      }
  return slots;
}

shard_spec make_shard_spec(const cluster_config& c, const model_config& m, const shard_slot& slot) {
  const auto stages = parallel::plan_pipeline(m, c.parallel.pipeline, c.parallel.layers_per_stage);
  shard_spec s;
  s.model_path = c.model.path;
  s.stage = slot.stage;
  s.n_stages = c.parallel.pipeline;
  s.layers = stages[static_cast<size_t>(slot.stage)];
  s.tp_rank = slot.rank;
  s.tp_size = c.parallel.tensor;
  s.allow_uneven_heads = c.parallel.allow_uneven_heads;
  s.context = replica_context_params(c.scheduler);
  for (const auto& n : c.nodes)
    if (n.name == slot.node) s.threads = n.threads > 0 ? n.threads : 1;
  s.timeout_ms = c.fault_tolerance.collective_timeout.count();
  s.stage_timeout_ms = c.fault_tolerance.step_timeout.count();
  return s;
}

namespace {

using clock_type = std::chrono::steady_clock;

/// Waits until every node of `c` is registered; returns name -> agent.
std::map<std::string, node_agent_actor> wait_for_nodes(caf::scoped_actor& self, const caf::actor& sup,
                                                       const cluster_config& c, clock_type::time_point deadline,
                                                       const std::atomic<bool>& stopping) {
  auto typed = caf::actor_cast<supervisor_actor>(sup);
  while (!stopping) {
    std::map<std::string, node_agent_actor> agents;
    self->request(typed, std::chrono::seconds(2), agents_atom::value)
        .receive(
            [&](std::vector<std::string>& names, std::vector<caf::actor>& handles) {
              for (size_t i = 0; i < names.size(); ++i)
                agents[names[i]] = caf::actor_cast<node_agent_actor>(handles[i]);
            },
            [](caf::error&) {});
    if (agents.size() == c.nodes.size()) return agents;
    if (clock_type::now() > deadline) {
      std::string missing;
      for (const auto& n : c.nodes)
        if (!agents.count(n.name)) missing += (missing.empty() ? "" : ", ") + n.name + " (" + endpoint(n.host, n.port) + ")";
      throw std::runtime_error("placement: only " + std::to_string(agents.size()) + " of " +
                               std::to_string(c.nodes.size()) + " nodes registered in time; never registered: " +
                               missing);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  throw std::runtime_error("placement: the head is stopping");
}

/// Asks each slot's node agent for its shard and waits until every one answered, one
/// failed, or `stopping` is set: the head's main thread stays interruptible even when a
/// node dies meanwhile (a request to a dead node is only answered by its timeout).
/// Returns the shards per replica, in slot order.
std::vector<std::vector<shard_actor>> spawn_all_shards(caf::actor_system& sys,
                                                       const std::map<std::string, node_agent_actor>& agents,
                                                       const cluster_config& c, const model_config& m,
                                                       const std::vector<shard_slot>& slots,
                                                       const std::atomic<bool>& stopping) {
  struct answers {
    std::mutex mutex;
    std::vector<shard_actor> shards;  ///< by slot
    size_t left = 0;
    std::string error;
  };
  auto a = std::make_shared<answers>();
  a->shards.resize(slots.size());
  a->left = slots.size();
  std::vector<caf::actor> askers;  // one per slot; stopped early so none outlives the head
  for (size_t i = 0; i < slots.size(); ++i) {
    const auto& slot = slots[i];
    const std::string what = "placement: node " + slot.node + " could not spawn shard s" +
                             std::to_string(slot.stage) + "r" + std::to_string(slot.rank) + ": ";
    askers.push_back(sys.spawn([a, i, what, agent = agents.at(slot.node), spec = make_shard_spec(c, m, slot)](
                  caf::event_based_actor* self) {
      self->request(agent, std::chrono::seconds(30), spawn_shard_atom::value, spec)
          .then(
              [a, i](shard_actor& s) {
                std::lock_guard<std::mutex> lock(a->mutex);
                a->shards[i] = std::move(s);
                a->left--;
              },
              [a, what, self](caf::error& e) {
                std::lock_guard<std::mutex> lock(a->mutex);
                if (a->error.empty()) a->error = what + self->system().render(e);
                a->left--;
              });
    }));
  }
  const auto give_up = [&askers](const std::string& why) {
    for (auto& asker : askers) caf::anon_send_exit(asker, caf::exit_reason::user_shutdown);
    return std::runtime_error(why);
  };
  for (;;) {
    {
      std::lock_guard<std::mutex> lock(a->mutex);
      if (!a->error.empty()) throw give_up(a->error);
      if (a->left == 0) break;
    }
    if (stopping) throw give_up("placement: the head is stopping");
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  std::vector<std::vector<shard_actor>> shards(static_cast<size_t>(c.parallel.replicas));
  for (size_t i = 0; i < slots.size(); ++i) shards[static_cast<size_t>(slots[i].replica)].push_back(a->shards[i]);
  return shards;
}

}  // namespace

std::vector<caf::actor> data_plane::actors() const {
  std::vector<caf::actor> a{caf::actor_cast<caf::actor>(router), manager};
  for (const auto& r : replicas) a.push_back(caf::actor_cast<caf::actor>(r));
  return a;
}

namespace {

/// Keeps the replicas whole: when one fails, it waits until every node of the replica's
/// slots is registered again (the supervisor restarts lost node processes), spawns a
/// fresh set of shards through the node agents and hands them to the replica.
using manager_actor = caf::typed_actor<caf::reacts_to<ready_atom, int32_t, bool>, caf::reacts_to<sweep_atom>>;

struct manager_state {
  cluster_config config;
  model_config model;
  supervisor_actor supervisor;
  std::vector<shard_slot> slots;
  std::vector<replica_actor> replicas;
  std::vector<std::vector<shard_actor>> shards;  ///< per replica, slot order
  caf::actor router;
  std::map<int32_t, bool> pending;                 ///< failed replicas -> rebuild in progress
  std::shared_ptr<std::atomic<int>> ready_count;  ///< shared with bring_up_replicas
  static inline const char* name = "troupe.replica_manager";
};

using manager_ptr = manager_actor::stateful_pointer<manager_state>;

void rebuild(manager_ptr self, int32_t replica, const std::map<std::string, node_agent_actor>& agents) {
  auto& st = self->state;
  st.pending[replica] = true;
  for (auto& old : st.shards[static_cast<size_t>(replica)]) caf::anon_send_exit(old, caf::exit_reason::user_shutdown);
  std::vector<shard_slot> mine;
  for (const auto& s : st.slots)
    if (s.replica == replica) mine.push_back(s);
  auto fresh = std::make_shared<std::vector<shard_actor>>(mine.size());
  auto left = std::make_shared<size_t>(mine.size());
  logger()->info("replica {}: spawning {} new shard(s)", replica, mine.size());
  for (size_t i = 0; i < mine.size(); ++i)
    self->request(agents.at(mine[i].node), std::chrono::seconds(3), spawn_shard_atom::value,
                  make_shard_spec(st.config, st.model, mine[i]))
        .then(
            [self, replica, fresh, left, i](shard_actor& s) {
              (*fresh)[i] = s;
              if (--*left > 0) return;
              self->state.shards[static_cast<size_t>(replica)] = *fresh;
              self->send(self->state.replicas[static_cast<size_t>(replica)], rebuild_atom::value, *fresh);
            },
            [self, replica](caf::error& e) {
              logger()->warn("replica {}: respawning a shard failed ({}); retrying", replica,
                             self->system().render(e));
              self->state.pending[replica] = false;  // the next sweep tries again
            });
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

/// One sweep over the failed replicas: re-place shards of nodes lost for good, then
/// rebuild each replica whose nodes are all registered.
void sweep_failed(manager_ptr self, const cluster_status& cs, std::map<std::string, node_agent_actor> agents) {
  auto& st = self->state;
  for (auto& [replica, in_progress] : st.pending) {
    if (in_progress) continue;
    replace_lost(st, replica, cs, agents);
    bool all_up = true;
    for (const auto& s : st.slots)
      if (s.replica == replica && !agents.count(s.node)) all_up = false;
    if (all_up) rebuild(self, replica, agents);
  }
}

manager_actor::behavior_type manager_impl(manager_ptr self, manager_state init) {
  self->state = std::move(init);
  return {
      [self](ready_atom, int32_t replica, bool ok) {
        auto& st = self->state;
        caf::anon_send(st.router, ready_atom::value, replica, ok);
        if (ok) {
          if (st.ready_count) ++*st.ready_count;
          st.pending.erase(replica);
          return;
        }
        if (!st.pending.count(replica)) {
          st.pending[replica] = false;
          // Give the supervisor a moment to see a lost node first, so the rebuild does
          // not ask a dead node agent (a remote request to it waits for its timeout).
          self->delayed_send(self, std::max(std::chrono::milliseconds(200), st.config.fault_tolerance.heartbeat_interval),
                             sweep_atom::value);
        }
      },
      [self](sweep_atom) {
        auto& st = self->state;
        if (st.pending.empty()) return;
        self->request(st.supervisor, std::chrono::seconds(2), status_atom::value)
            .then(
                [self](cluster_status& cs) {
                  self->request(self->state.supervisor, std::chrono::seconds(2), agents_atom::value)
                      .then(
                          [self, cs](std::vector<std::string>& names, std::vector<caf::actor>& handles) {
                            std::map<std::string, node_agent_actor> agents;
                            for (size_t i = 0; i < names.size(); ++i)
                              agents[names[i]] = caf::actor_cast<node_agent_actor>(handles[i]);
                            sweep_failed(self, cs, std::move(agents));
                          },
                          [](caf::error&) {});
                },
                [](caf::error&) {});
        self->delayed_send(self, std::chrono::milliseconds(100), sweep_atom::value);
      },
  };
}

}  // namespace

data_plane bring_up_replicas(caf::actor_system& sys, const caf::actor& supervisor,
                             const cluster_config& c, std::shared_ptr<const model> meta,
                             std::chrono::milliseconds timeout, const std::atomic<bool>& stopping,
                             std::shared_ptr<troupe_metrics> metrics) {
  const auto deadline = clock_type::now() + timeout;
  caf::scoped_actor self{sys};
  auto agents = wait_for_nodes(self, supervisor, c, deadline, stopping);
  const auto slots = plan_placement(c);
  auto shards = spawn_all_shards(sys, agents, c, meta->config(), slots, stopping);
  // Replicas report state changes to the manager, which is spawned after them (a box
  // hands them its handle), and which forwards them to the router.
  struct manager_box {
    std::mutex mutex;
    caf::actor manager;
    std::vector<std::pair<int, bool>> early;  ///< changes before the manager existed
  };
  auto box = std::make_shared<manager_box>();
  auto ready = std::make_shared<std::atomic<int>>(0);
  data_plane plane;
  for (int r = 0; r < c.parallel.replicas; ++r) {
    replica_options o;
    o.index = r;
    o.config = c;
    o.meta = meta;
    o.shards = shards[static_cast<size_t>(r)];
    o.metrics = metrics;
    o.on_state = [box](int index, bool ok, const std::string&) {
      std::lock_guard<std::mutex> lock(box->mutex);
      if (box->manager)
        caf::anon_send(box->manager, ready_atom::value, static_cast<int32_t>(index), ok);
      else
        box->early.emplace_back(index, ok);
    };
    plane.replicas.push_back(spawn_replica(sys, std::move(o)));
  }
  plane.router = spawn_router(sys, plane.replicas, c.fault_tolerance.request_wait,
                              c.fault_tolerance.request_retries);
  manager_state ms;
  ms.config = c;
  ms.model = meta->config();
  ms.supervisor = caf::actor_cast<supervisor_actor>(supervisor);
  ms.slots = slots;
  ms.replicas = plane.replicas;
  ms.shards = shards;
  ms.router = caf::actor_cast<caf::actor>(plane.router);
  ms.ready_count = ready;
  auto manager = sys.spawn(manager_impl, std::move(ms));
  plane.manager = caf::actor_cast<caf::actor>(manager);
  {
    std::lock_guard<std::mutex> lock(box->mutex);
    box->manager = plane.manager;
    for (auto [index, ok] : box->early) caf::anon_send(box->manager, ready_atom::value, static_cast<int32_t>(index), ok);
  }
  while (*ready == 0 && !stopping) {
    if (clock_type::now() > deadline) throw std::runtime_error("placement: no replica became ready in time");
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  plane.ready = ready;
  return plane;
}

}  // namespace troupe
