#include "actors/placement.h"

#include <map>
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
    if (clock_type::now() > deadline)
      throw std::runtime_error("placement: only " + std::to_string(agents.size()) + " of " +
                               std::to_string(c.nodes.size()) + " nodes registered in time");
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  throw std::runtime_error("placement: the head is stopping");
}

}  // namespace

std::vector<caf::actor> data_plane::actors() const {
  std::vector<caf::actor> a{caf::actor_cast<caf::actor>(router)};
  for (const auto& r : replicas) a.push_back(caf::actor_cast<caf::actor>(r));
  return a;
}

data_plane bring_up_replicas(caf::actor_system& sys, const caf::actor& supervisor,
                                             const cluster_config& c, std::shared_ptr<const model> meta,
                                             std::chrono::milliseconds timeout,
                                             const std::atomic<bool>& stopping) {
  const auto deadline = clock_type::now() + timeout;
  caf::scoped_actor self{sys};
  auto agents = wait_for_nodes(self, supervisor, c, deadline, stopping);
  const auto slots = plan_placement(c);
  std::vector<std::vector<shard_actor>> shards(static_cast<size_t>(c.parallel.replicas));
  for (const auto& slot : slots) {
    auto spec = make_shard_spec(c, meta->config(), slot);
    self->request(agents.at(slot.node), std::chrono::seconds(30), spawn_shard_atom::value, spec)
        .receive([&](shard_actor& s) { shards[static_cast<size_t>(slot.replica)].push_back(s); },
                 [&](caf::error& e) {
                   throw std::runtime_error("placement: node " + slot.node + " could not spawn shard s" +
                                            std::to_string(slot.stage) + "r" + std::to_string(slot.rank) +
                                            ": " + sys.render(e));
                 });
  }
  auto ready = std::make_shared<std::atomic<int>>(0);
  // Replicas report state changes to the router, which is spawned after them.
  struct router_box {
    std::mutex mutex;
    caf::actor router;
  };
  auto box = std::make_shared<router_box>();
  data_plane plane;
  auto& replicas = plane.replicas;
  for (int r = 0; r < c.parallel.replicas; ++r) {
    replica_options o;
    o.index = r;
    o.config = c;
    o.meta = meta;
    o.shards = shards[static_cast<size_t>(r)];
    o.on_state = [ready, box](int index, bool ok, const std::string&) {
      if (ok) ++*ready;
      std::lock_guard<std::mutex> lock(box->mutex);
      if (box->router) caf::anon_send(box->router, ready_atom::value, static_cast<int32_t>(index), ok);
    };
    replicas.push_back(spawn_replica(sys, std::move(o)));
  }
  plane.router = spawn_router(sys, replicas, c.fault_tolerance.request_wait);
  {
    std::lock_guard<std::mutex> lock(box->mutex);
    box->router = caf::actor_cast<caf::actor>(plane.router);
  }
  while (*ready == 0 && !stopping) {
    if (clock_type::now() > deadline) throw std::runtime_error("placement: no replica became ready in time");
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return plane;
}

}  // namespace troupe
