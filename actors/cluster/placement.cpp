#include "actors/cluster/placement.h"

#include <map>
#include <set>
#include <mutex>
#include <thread>

#include "actors/actor_system_config.h"
#include "actors/cluster/autoscaler.h"
#include "actors/cluster/node_agent.h"
#include "actors/cluster/replan.h"
#include "actors/cluster/replica_manager.h"
#include "actors/cluster/supervisor.h"

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
  s.context.keep_stage_inputs = c.fault_tolerance.stage_recovery && c.parallel.pipeline > 1;
  for (const auto& n : c.nodes)
    if (n.name == slot.node) s.threads = n.threads > 0 ? n.threads : 1;
  s.timeout_ms = c.fault_tolerance.collective_timeout.count();
  s.stage_timeout_ms = c.fault_tolerance.step_timeout.count();
  s.stall_timeout_ms = c.fault_tolerance.stall_timeout.count();
  s.release_wait_ms = c.fault_tolerance.release_wait.count();
  s.device = slot.device;
  s.weight_type = c.model.dtype;
  s.random_weights = c.model.load_format == "random";
  s.kv_fraction = c.scheduler.kv_fraction;
  return s;
}

namespace {

using clock_type = std::chrono::steady_clock;

/// Waits until every node of `c` named in `needed` is registered; returns name -> agent.
std::map<std::string, node_agent_actor> wait_for_nodes(caf::scoped_actor& self, const caf::actor& sup,
                                                       const cluster_config& c, const std::set<std::string>& needed,
                                                       clock_type::time_point deadline,
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
    bool all = true;
    for (const auto& n : needed) all = all && agents.count(n);
    if (all) return agents;
    if (clock_type::now() > deadline) {
      std::string missing;
      for (const auto& n : c.nodes)
        if (needed.count(n.name) && !agents.count(n.name)) missing += (missing.empty() ? "" : ", ") + n.name + " (" + endpoint(n.host, n.port) + ")";
      size_t registered = 0;
      for (const auto& n : needed) registered += agents.count(n);
      throw std::runtime_error("placement: only " + std::to_string(registered) + " of " +
                               std::to_string(needed.size()) + " nodes registered in time; never registered: " +
                               missing);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  throw std::runtime_error("placement: the head is stopping");
}

/// The term this head leads by (its supervisor's lease_atom; 0 with a single head): every
/// spawn, step and connect of the data plane carries it (term fencing).
head_term head_term_of(caf::scoped_actor& self, const caf::actor& sup) {
  head_term term;
  caf::error err;
  self->request(caf::actor_cast<supervisor_actor>(sup), std::chrono::seconds(5), lease_atom::value)
      .receive([&](uint64_t t) { term.value = t; }, [&](caf::error& e) { err = std::move(e); });
  if (err) throw std::runtime_error("placement: the supervisor did not say its term: " + self->system().render(err));
  return term;
}

/// Asks each slot's node agent for its shard and waits until every one answered, one
/// failed, or `stopping` is set: the head's main thread stays interruptible even when a
/// node dies meanwhile (a request to a dead node is only answered by its timeout).
/// Returns the shards per replica, in slot order. On a failure it stops the shards that
/// were spawned (also those answered later) and throws.
std::vector<std::vector<shard_actor>> spawn_all_shards(caf::actor_system& sys,
                                                       const std::map<std::string, node_agent_actor>& agents,
                                                       const cluster_config& c, const model_config& m,
                                                       const std::vector<shard_slot>& slots, head_term term,
                                                       const std::vector<cluster_config>& plan_configs,
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
    askers.push_back(sys.spawn([a, i, what, term, agent = agents.at(slot.node), spec = make_shard_spec(plan_configs[static_cast<size_t>(slot.replica)], m, slot)](
                  caf::event_based_actor* self) {
      self->request(agent, std::chrono::seconds(30), spawn_shard_atom::value, term, spec)
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
  const auto give_up = [&askers, a](const std::string& why) {
    for (auto& asker : askers) caf::anon_send_exit(asker, caf::exit_reason::user_shutdown);
    std::lock_guard<std::mutex> lock(a->mutex);
    for (auto& s : a->shards)
      if (s) caf::anon_send_exit(s, caf::exit_reason::user_shutdown);
    return std::runtime_error(why);
  };
  for (;;) {
    std::string error;
    {
      std::lock_guard<std::mutex> lock(a->mutex);
      if (a->left == 0 && a->error.empty()) break;
      error = a->error;
    }
    if (!error.empty()) throw give_up(error);  // give_up takes the lock itself
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
  if (autoscaler) a.push_back(autoscaler);
  return a;
}


namespace {

/// The placement to bring up: the restored state's when it fits the file (else the file's,
/// with a warning naming what does not fit), or the file's.
restored_placement initial_placement(const cluster_config& c, const std::optional<head_state>& restored) {
  if (restored) {
    try {
      auto p = placement_from_state(c, *restored);
      logger()->info("placement: from the head state of term {} sequence {} ({} shard(s), {} parked replica(s))",
                     restored->term, restored->sequence, p.slots.size(), p.parked.size());
      return p;
    } catch (const std::exception& e) {
      logger()->warn("placement: {}; placing from the cluster file instead", e.what());
    }
  }
  restored_placement p;
  p.slots = plan_placement(c);
  p.plans.assign(static_cast<size_t>(c.parallel.replicas), full_plan(c));
  return p;
}

}  // namespace

data_plane bring_up_replicas(caf::actor_system& sys, const caf::actor& supervisor,
                             const cluster_config& c, std::shared_ptr<const model> meta,
                             std::chrono::milliseconds timeout, const std::atomic<bool>& stopping,
                             std::shared_ptr<troupe_metrics> metrics, const bring_up_state& from) {
  const auto deadline = clock_type::now() + timeout;
  caf::scoped_actor self{sys};
  const auto placed = initial_placement(c, from.restored);
  std::set<std::string> needed;
  if (from.restored)
    for (const auto& slot : placed.slots) needed.insert(slot.node);
  else
    for (const auto& n : c.nodes) needed.insert(n.name);
  const auto term = head_term_of(self, supervisor);
  const auto& slots = placed.slots;
  std::vector<cluster_config> plan_configs;
  for (const auto& plan : placed.plans)
    plan_configs.push_back(plan == full_plan(c) || plan.shards() == 0 ? c : config_for_plan(c, plan));
  // A node that leaves while its shards are placed (it refuses or never answers) does not
  // end the head: the shards placed so far stop, and placement starts again once every
  // needed node is registered, until the bring-up deadline.
  std::vector<std::vector<shard_actor>> shards;
  auto backoff = std::chrono::milliseconds(200);  // the supervisor sees a leaving node go first
  for (;;) {
    auto agents = wait_for_nodes(self, supervisor, c, needed, deadline, stopping);
    try {
      shards = spawn_all_shards(sys, agents, c, meta->config(), slots, term, plan_configs, stopping);
      break;
    } catch (const std::exception& e) {
      if (stopping || clock_type::now() >= deadline) throw;
      logger()->warn("{}; the shards placed so far stop, and placement starts again in {} ms once every node it "
                     "needs is registered",
                     e.what(), backoff.count());
      std::this_thread::sleep_for(backoff);
      backoff = std::min(backoff * 2, std::chrono::milliseconds(5000));  // a node that refuses again
    }
  }
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
    o.config = plan_configs[static_cast<size_t>(r)];  // a parked or retired one gets no shards
    o.meta = meta;
    o.shards = shards[static_cast<size_t>(r)];
    o.term = term;
    o.metrics = metrics;
    o.on_state = [box](int index, bool ok, const std::string&) {
      std::lock_guard<std::mutex> lock(box->mutex);
      if (box->manager)
        caf::anon_send(box->manager, ready_atom::value, static_cast<int32_t>(index), ok);
      else
        box->early.emplace_back(index, ok);
    };
    o.on_recovering = [box](int index) {
      std::lock_guard<std::mutex> lock(box->mutex);
      if (box->manager) caf::anon_send(box->manager, hold_atom::value, static_cast<int32_t>(index));
    };
    plane.replicas.push_back(spawn_replica(sys, std::move(o)));
  }
  plane.router = spawn_router(sys, plane.replicas, c.fault_tolerance.request_wait,
                              c.fault_tolerance.request_retries, limits_of(c.server), routing_of(c, metrics));
  replica_manager_options mo;
  mo.config = c;
  mo.model = meta->config();
  mo.supervisor = caf::actor_cast<supervisor_actor>(supervisor);
  mo.slots = slots;
  mo.original = plan_placement(c);
  mo.plans = placed.plans;
  mo.parked = placed.parked;
  mo.rebuilds = placed.rebuilds;
  mo.scale_target = placed.scale_target;
  mo.recorder = from.recorder;
  mo.replicas = plane.replicas;
  mo.shards = shards;
  mo.router = caf::actor_cast<caf::actor>(plane.router);
  mo.ready_count = ready;
  mo.term = term;
  mo.metrics = metrics;
  plane.manager = spawn_replica_manager(sys, std::move(mo));
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
  if (c.autoscale.enabled)
    plane.autoscaler =
        spawn_autoscaler(sys, autoscaler_options{c, plane.router, plane.manager, metrics, placed.scale_target});
  return plane;
}

}  // namespace troupe
