#include <boost/program_options.hpp>
#include <cstdlib>
#include <iostream>

#include "actors/actor_system_config.h"
#include "actors/launch.h"
#include "actors/placement.h"
#include "actors/supervisor.h"
#include "cluster-config/cluster_config.h"
#include "tools/cli/cluster_checks.h"
#include "tools/cli/commands.h"

namespace po = boost::program_options;

namespace troupe::cli {

namespace {

struct serve_options {
  std::string config;
  std::vector<std::string> overrides;
};

po::options_description describe(serve_options& o) {
  po::options_description d(
      "troupe serve: run the head of a cluster (supervisor) and start the nodes the cluster\n"
      "file places on this host as child processes.\n"
      "Under mpirun/srun (OMPI_COMM_WORLD_RANK, PMI_RANK or SLURM_PROCID set and more than\n"
      "one process): rank 0 is the head and starts no nodes; rank i > 0 becomes nodes[i-1],\n"
      "listens on 0.0.0.0:<its port> and reports this machine's host name to the head.\n"
      "The job must have exactly (number of nodes + 1) processes.\n\noptions");
  d.add_options()
      ("help,h", "show this help")
      ("config,c", po::value(&o.config)->required(), "cluster file (YAML)")
      ("set", po::value(&o.overrides)->composing(),
       "override a key of the cluster file, e.g. --set fault_tolerance.max_restarts=2 (repeatable)");
  return d;
}

}  // namespace

/// Loads the cluster file and applies --set overrides (validated either way).
cluster_config load_cluster(const std::string& path, const std::vector<std::string>& overrides) {
  auto c = load_cluster_config(path);
  if (overrides.empty())
    validate(c);
  else
    apply_overrides(c, overrides);
  return c;
}

int run_serve(const std::vector<std::string>& args) {
  serve_options o;
  auto desc = describe(o);
  po::variables_map vm;
  if (!parse_command_line(args, desc, vm)) return 0;
  auto config = load_cluster(o.config, o.overrides);
  const auto rank = detect_launcher_rank([](const char* k) { return std::getenv(k); });
  if (rank && rank->size > 1 && rank->rank > 0) {
    node_options n;
    n.name = node_for_rank(config, *rank).name;
    n.config = std::move(config);
    n.bind_host = "0.0.0.0";
    n.advertise_host = local_host_name();
    return run_node(n);
  }
  if (rank && rank->size > 1) check_launcher_size(config, *rank);
  auto meta = load_checked_metadata(config);
  head_options h;
  h.config = std::move(config);
  h.config_path = o.config;
  h.overrides = o.overrides;
  h.launch_local_nodes = !(rank && rank->size > 1);
  h.main = [cfg = h.config, meta](head_context& ctx) -> std::optional<int> {
    auto plane = bring_up_replicas(ctx.system, ctx.supervisor, cfg, meta, std::chrono::minutes(10),
                                   ctx.stopping);
    for (auto& a : plane.actors()) ctx.keep_alive.push_back(a);
    // Clients (troupe generate --head) find the router through the published supervisor.
    caf::anon_send(caf::actor_cast<supervisor_actor>(ctx.supervisor), router_atom::value,
                   caf::actor_cast<caf::actor>(plane.router));
    logger()->info("serving: {} replica(s) of {}", plane.replicas.size(), cfg.model.path);
    return std::nullopt;
  };
  return run_head(h);
}

}  // namespace troupe::cli
