#include <boost/program_options.hpp>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <iostream>
#include <optional>
#include <thread>

#include "actors/actor_system_config.h"
#include "actors/gateway/http_gateway.h"
#include "actors/cluster/launch.h"
#include "actors/cluster/placement.h"
#include "actors/cluster/supervisor.h"
#include "cluster-config/cluster_config.h"
#include "tools/cli/cluster_checks.h"
#include "tools/cli/commands.h"
#include "tools/cli/gateway_settings.h"

namespace po = boost::program_options;

namespace troupe::cli {

namespace {

struct serve_options {
  std::string config;
  int head_index = -1;
  std::vector<std::string> overrides;
  std::vector<std::string> api_keys;
};

po::options_description describe(serve_options& o) {
  po::options_description d(
      "troupe serve: run the head of a cluster (supervisor) and start the nodes the cluster\n"
      "file places on this host as child processes.\n"
      "Under mpirun/srun (OMPI_COMM_WORLD_RANK, PMI_RANK or SLURM_PROCID set and more than\n"
      "one process) the ranks are the heads, then the gateways, then the nodes, in file\n"
      "order: rank 0 is the head (ranks 0..H-1 with H entries in heads:, each as with\n"
      "--head-index), the next G ranks run `troupe gateway --index` for the G entries of\n"
      "gateways:, and the rest become the nodes; a node listens on its cluster-file host\n"
      "(when that is an address of this machine; else on this machine's host name) at its\n"
      "port, and reports that same address to the head. No head starts node processes.\n"
      "The job must have exactly (heads + gateways + nodes) processes.\n\noptions");
  d.add_options()
      ("help,h", "show this help")
      ("config,c", po::value(&o.config),
       "cluster file (YAML); without one: the default model on one local CPU node\n"
       "(cluster-config/examples/single.yaml's layout, written to a temporary file)")
      ("set", po::value(&o.overrides)->composing(),
       "override a key of the cluster file, e.g. --set fault_tolerance.max_restarts=2 (repeatable);\n"
       "the HTTP API listens on server.host:server.port (--set server.port=0: any free port)")
      ("api-key", po::value(&o.api_keys)->composing(),
       "accept this bearer key on the HTTP API (repeatable; added to server.api_keys)")
      ("head-index", po::value(&o.head_index),
       "with several heads (heads: in the cluster file): which entry this process is. It votes\n"
       "in the heads' election, stands by until it leads, then serves as head (adopting the\n"
       "nodes' shards) and starts no node processes; a head that steps down starts again as\n"
       "a standby");
  return d;
}

/// --head-index against the file's heads: required with several heads (under mpirun/srun
/// the rank gives it: `launcher_index`, and a --head-index must agree), in range.
std::optional<std::size_t> elected_head_index(const cluster_config& c, int index,
                                              std::optional<std::size_t> launcher_index) {
  const auto n = c.heads.size();
  if (n < 2) {
    if (index >= 0) throw usage_error("--head-index needs several heads (heads: in " + c.source + ")");
    return std::nullopt;
  }
  if (launcher_index) {
    if (index >= 0 && static_cast<std::size_t>(index) != *launcher_index)
      throw usage_error("--head-index " + std::to_string(index) + " disagrees with this process's rank, which is head " +
                        std::to_string(*launcher_index) + " of " + c.source);
    return launcher_index;
  }
  if (index < 0 || static_cast<std::size_t>(index) >= n)
    throw usage_error(c.source + " names " + std::to_string(n) + " heads: --head-index must be 0.." +
                      std::to_string(n - 1) + (index < 0 ? "" : ", got " + std::to_string(index)));
  return static_cast<std::size_t>(index);
}

/// A node's rank: runs nodes[index] listening (and reported) on the address it can bind.
int run_node_rank(cluster_config config, std::size_t index) {
  node_options n;
  const auto& node = config.nodes[index];
  n.name = node.name;
  // The address it reports is the one it listens on, never the wildcard.
  n.bind_host = launcher_node_host(node, local_host_name());
  n.advertise_host = n.bind_host;
  n.config = std::move(config);
  return run_node(n);
}

/// A gateway's rank: `troupe gateway --config F --index I` with the same overrides and keys.
int run_gateway_rank(const serve_options& o, std::size_t index) {
  std::vector<std::string> args{"--config", o.config, "--index", std::to_string(index)};
  for (const auto& v : o.overrides) args.insert(args.end(), {"--set", v});
  for (const auto& k : o.api_keys) args.insert(args.end(), {"--api-key", k});
  return run_gateway(args);
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

/// Writes the default cluster file (one local CPU node, the default model) where the
/// node processes can read it, and returns its path.
std::string write_default_cluster_file() {
  const char* tmp = std::getenv("TMPDIR");
  const std::string path = std::string(tmp && *tmp ? tmp : "/tmp") + "/troupe-default-" +
                           std::to_string(::getpid()) + ".yaml";
  std::ofstream out(path);
  out << to_yaml(default_cluster_config());
  if (!out) throw std::runtime_error("cannot write the default cluster file " + path);
  return path;
}

int run_serve(const std::vector<std::string>& args) {
  serve_options o;
  auto desc = describe(o);
  po::variables_map vm;
  if (!parse_command_line(args, desc, vm)) return 0;
  const bool temporary_file = o.config.empty();
  if (temporary_file) o.config = write_default_cluster_file();
  auto config = load_cluster(o.config, o.overrides);
  const auto rank = detect_launcher_rank([](const char* k) { return std::getenv(k); });
  const bool launched = rank && rank->size > 1;
  std::optional<std::size_t> launcher_head;
  if (launched) {
    const auto role = role_for_rank(config, *rank);
    switch (role.role) {
      case launcher_role::kind::node: return run_node_rank(std::move(config), role.index);
      case launcher_role::kind::gateway: return run_gateway_rank(o, role.index);
      case launcher_role::kind::head: launcher_head = role.index; break;
    }
  }
  const auto head_index = elected_head_index(config, o.head_index, launcher_head);
  config.server.api_keys.insert(config.server.api_keys.end(), o.api_keys.begin(), o.api_keys.end());
  // The HTTP port's certificate and key, before any process starts (the gateway loads them later).
  if (const auto tls = http_tls_of(config); tls.mode != http_tls_mode::plain) check_identity(tls.identity);
  auto meta = load_checked_metadata(config);
  auto registry = std::make_shared<metrics::registry>();
  auto metrics = std::make_shared<troupe_metrics>(*registry);
  head_options h;
  h.config = std::move(config);
  h.config_path = o.config;
  h.overrides = o.overrides;
  h.launch_local_nodes = !launched && !head_index;
  h.head_index = head_index;
  h.metrics = metrics;
  h.main = [cfg = h.config, meta, registry, metrics](head_context& ctx) -> std::optional<int> {
    // The gateway answers /health at once and /ready with 503 until a replica is ready.
    http_gateway gateway(ctx.system, gateway_settings(cfg, meta, registry, metrics));
    gateway.start();
    auto plane = bring_up_replicas(ctx.system, ctx.supervisor, cfg, meta, std::chrono::minutes(10),
                                   ctx.stopping, metrics, {ctx.restored, ctx.recorder});
    for (auto& a : plane.actors()) ctx.keep_alive.push_back(a);
    // Clients (troupe generate --head) find the router through the published supervisor.
    // Sent by an actor of this process: the supervisor takes the router only from the head's own.
    caf::scoped_actor{ctx.system}->send(caf::actor_cast<supervisor_actor>(ctx.supervisor), router_atom::value,
                                        caf::actor_cast<caf::actor>(plane.router));
    gateway.set_router(plane.router);
    logger()->info("serving: {} replica(s) of {} as '{}'", plane.replicas.size(), cfg.model.path,
                   served_model_name(cfg));
    while (!ctx.stopping) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    gateway.drain(std::chrono::seconds(5));
    gateway.stop();
    return std::nullopt;
  };
  const int rc = run_head(h);
  if (temporary_file) std::remove(o.config.c_str());
  return rc;
}

}  // namespace troupe::cli
