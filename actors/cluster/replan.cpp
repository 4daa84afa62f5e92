#include "actors/cluster/replan.h"

#include <map>
#include <stdexcept>

#include "parallel/partition.h"

namespace troupe {

std::string describe(const replica_plan& p) {
  return "tensor " + std::to_string(p.tensor) + " x pipeline " + std::to_string(p.pipeline);
}

replica_plan full_plan(const cluster_config& c) { return {c.parallel.tensor, c.parallel.pipeline}; }

namespace {

/// Whether the model admits `p`: every tensor rank's slice and the pipeline split plan.
bool admitted(const model_config& m, const replica_plan& p, bool allow_uneven_heads) {
  try {
    for (int r = 0; r < p.tensor; ++r) parallel::plan_tensor(m, p.tensor, r, allow_uneven_heads);
    parallel::plan_pipeline(m, p.pipeline);
    return true;
  } catch (const parallel::partition_error&) {
    return false;
  }
}

}  // namespace

std::optional<replica_plan> plan_for_devices(const model_config& m, const replica_plan& full, bool allow_uneven_heads,
                                             int devices) {
  std::optional<replica_plan> best;
  for (int t = 1; t <= full.tensor; ++t)
    for (int p = 1; p <= full.pipeline; ++p) {
      const replica_plan cand{t, p};
      if (cand.shards() > devices) continue;
      if (best && (cand.shards() < best->shards() || (cand.shards() == best->shards() && p <= best->pipeline)))
        continue;
      if (admitted(m, cand, allow_uneven_heads)) best = cand;
    }
  return best;
}

cluster_config config_for_plan(const cluster_config& c, const replica_plan& p) {
  cluster_config out = c;
  if (p.pipeline != c.parallel.pipeline) out.parallel.layers_per_stage.clear();
  out.parallel.tensor = p.tensor;
  out.parallel.pipeline = p.pipeline;
  return out;
}

std::vector<node_device> devices_for_replica(const cluster_config& c, int replica,
                                            const std::vector<shard_slot>& current,
                                            const std::vector<shard_slot>& original,
                                            const std::vector<std::string>& registered) {
  std::map<node_device, int> left;  // units of each device not taken by another replica
  for (const auto& n : c.nodes) {
    bool up = false;
    for (const auto& r : registered) up = up || r == n.name;
    if (!up) continue;
    for (const auto& d : n.devices) left[{n.name, d}]++;
  }
  for (const auto& s : current)
    if (s.replica != replica) {
      auto it = left.find({s.node, s.device});
      if (it != left.end() && it->second > 0) it->second--;
    }
  std::vector<node_device> out;
  const auto take = [&](const node_device& d) {
    auto it = left.find(d);
    if (it == left.end() || it->second == 0) return;
    it->second--;
    out.push_back(d);
  };
  for (const auto& s : original)
    if (s.replica == replica) take({s.node, s.device});
  for (const auto& s : current)
    if (s.replica == replica) take({s.node, s.device});
  for (const auto& n : c.nodes)
    for (const auto& d : n.devices) take({n.name, d});
  return out;
}

std::vector<shard_slot> slots_for_plan(int replica, const replica_plan& p, const std::vector<node_device>& devices) {
  if (static_cast<int>(devices.size()) < p.shards())
    throw std::invalid_argument("re-plan: " + describe(p) + " needs " + std::to_string(p.shards()) +
                                " devices, only " + std::to_string(devices.size()) + " are free");
  std::vector<shard_slot> slots;
  size_t next = 0;
  for (int s = 0; s < p.pipeline; ++s)
    for (int t = 0; t < p.tensor; ++t, ++next)
      slots.push_back({replica, s, t, devices[next].first, devices[next].second});
  return slots;
}

}  // namespace troupe

namespace troupe {

restored_placement placement_from_state(const cluster_config& c, const head_state& s) {
  const auto where = [&](const std::string& what) {
    return std::runtime_error("head state of term " + std::to_string(s.term) + " sequence " +
                              std::to_string(s.sequence) + ": " + what);
  };
  if (static_cast<int>(s.replicas.size()) != c.parallel.replicas)
    throw where("it holds " + std::to_string(s.replicas.size()) + " replica(s), the cluster file " +
                std::to_string(c.parallel.replicas) + " (parallel.replicas)");
  restored_placement p;
  std::map<node_device, int> free;  // units of each device of the file
  for (const auto& n : c.nodes)
    for (const auto& d : n.devices) ++free[{n.name, d}];
  const auto full = full_plan(c);
  for (const auto& r : s.replicas) {
    const replica_plan plan{r.tensor, r.pipeline};
    if (plan.tensor > full.tensor || plan.pipeline > full.pipeline)
      throw where("replica " + std::to_string(r.index) + " is " + std::to_string(r.tensor) + " x " +
                  std::to_string(r.pipeline) + ", larger than the file's plan");
    p.plans.push_back(plan);
    p.rebuilds.push_back(r.rebuilds);
    if (r.parked) p.parked.insert(r.index);
    if (static_cast<int>(r.shards.size()) != plan.shards())
      throw where("replica " + std::to_string(r.index) + " has " + std::to_string(r.shards.size()) +
                  " shard(s) for its shape " + std::to_string(r.tensor) + " x " + std::to_string(r.pipeline));
    for (const auto& sh : r.shards) {
      auto it = free.find({sh.node, sh.device});
      if (it == free.end() || it->second == 0)
        throw where("shard " + sh.name + " is on node " + sh.node + " device " + sh.device +
                    (it == free.end() ? ", which the cluster file does not list" : ", which another shard holds"));
      --it->second;
      p.slots.push_back({r.index, sh.stage, sh.rank, sh.node, sh.device});
    }
  }
  p.scale_target = s.autoscale.target;
  return p;
}

}  // namespace troupe
