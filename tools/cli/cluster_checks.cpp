#include "tools/cli/cluster_checks.h"

#include <thread>

#include "actors/actor_system_config.h"
#include "actors/cluster/launch.h"
#include "actors/cluster/supervisor.h"
#include "parallel/partition.h"

namespace troupe::cli {

namespace {

std::string file_of(const cluster_config& c) {
  return c.source.empty() ? std::string("<cluster config>") : c.source;
}

/// Why node `spec` of `c` (row `row`, nullptr when the supervisor has none) is not registered.
std::string missing_reason(const cluster_config& c, const node_section& spec, const node_status* row) {
  std::string why = spec.name + " at " + endpoint(spec.host, spec.port);
  if (!row) return why + " (unknown to the supervisor)";
  why += " (" + to_string(row->state);
  if (!row->launched && !is_local_host(spec.host))
    why += "; its host is not this machine, so the head did not start it: run 'troupe node --config " +
           file_of(c) + " --name " + spec.name + "' there";
  else if (!row->launched)
    why += "; not started by this head";
  else if (row->pid > 0)
    why += ", pid " + std::to_string(row->pid);
  if (!row->last_error.empty()) why += "; " + row->last_error;
  return why + ")";
}

}  // namespace

void check_partition(const cluster_config& c, const model_config& m) {
  const auto& p = c.parallel;
  try {
    parallel::plan_pipeline(m, p.pipeline, p.layers_per_stage);
  } catch (const parallel::partition_error& e) {
    throw config_error(file_of(c), p.layers_per_stage.empty() ? "parallel.pipeline" : "parallel.layers_per_stage",
                       e.what());
  }
  try {
    for (int rank = 0; rank < p.tensor; ++rank) parallel::plan_tensor(m, p.tensor, rank, p.allow_uneven_heads);
  } catch (const parallel::partition_error& e) {
    throw config_error(file_of(c), "parallel.tensor", e.what());
  }
}

std::shared_ptr<const model> load_checked_metadata(const cluster_config& c) {
  auto meta = model::load_metadata(c.model.path);
  check_partition(c, meta->config());
  return meta;
}

void wait_for_registration(caf::actor_system& sys, const caf::actor& supervisor,
                           const cluster_config& c, std::chrono::milliseconds wait,
                           const std::atomic<bool>& stopping) {
  const auto deadline = std::chrono::steady_clock::now() + wait;
  auto sup = caf::actor_cast<supervisor_actor>(supervisor);
  caf::scoped_actor self{sys};
  while (!stopping) {
    cluster_status status;
    self->request(sup, std::chrono::seconds(2), status_atom::value)
        .receive([&](cluster_status& s) { status = std::move(s); }, [](caf::error&) {});
    std::vector<std::string> missing;
    for (const auto& n : c.nodes) {
      const auto* row = find_node(status, n.name);
      if (!row || row->state != node_state::registered) missing.push_back(missing_reason(c, n, row));
    }
    if (missing.empty()) return;
    if (std::chrono::steady_clock::now() > deadline) {
      std::string list;
      for (const auto& m : missing) list += (list.empty() ? "" : ", ") + m;
      throw std::runtime_error(file_of(c) + ": only " + std::to_string(c.nodes.size() - missing.size()) +
                               " of " + std::to_string(c.nodes.size()) + " nodes registered within " +
                               std::to_string(wait.count()) +
                               " ms (fault_tolerance.request_wait); never registered: " + list);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

}  // namespace troupe::cli
