// `troupe gateway`: an HTTP gateway apart from the head. It serves the OpenAI API on its
// entry of the cluster file's `gateways:` list (same server settings, keys, limits, cache
// and TLS as the head's in-process gateway) and reaches the head's router over the
// cluster's links through a client actor that follows the head (actors/client.h): when the
// head dies, the HTTP connections stay open and every unfinished request is re-submitted
// to the next head with the tokens its client already has.
#include <signal.h>

#include <atomic>
#include <cstring>
#include <boost/program_options.hpp>
#include <thread>

#include "actors/actor_system_config.h"
#include "actors/client.h"
#include "actors/gateway/http_gateway.h"
#include "actors/link_security.h"
#include "tools/cli/cluster_checks.h"
#include "tools/cli/commands.h"
#include "tools/cli/gateway_settings.h"

namespace po = boost::program_options;

namespace troupe::cli {

namespace {

struct gateway_command_options {
  std::string config;
  int index = 0;
  std::vector<std::string> overrides;
  std::vector<std::string> api_keys;
};

po::options_description describe(gateway_command_options& o) {
  po::options_description d(
      "troupe gateway: run one HTTP gateway of a cluster apart from its head: the OpenAI API on\n"
      "gateways[INDEX].host:port of the cluster file, with the file's server: settings (keys,\n"
      "limits, TLS), requests sent to the head's router (head.host:head.port). When the head\n"
      "dies, open requests wait for the next head (fault_tolerance.head_grace, 30 s when it is\n"
      "0) and resume there with the tokens their clients already have.\n\noptions");
  d.add_options()
      ("help,h", "show this help")
      ("config,c", po::value(&o.config)->required(), "cluster file (YAML) with a gateways: list")
      ("index,i", po::value(&o.index)->default_value(o.index), "which entry of gateways: this process is")
      ("set", po::value(&o.overrides)->composing(),
       "override a key of the cluster file, e.g. --set gateways[0].port=0 (repeatable)")
      ("api-key", po::value(&o.api_keys)->composing(),
       "accept this bearer key on the HTTP API (repeatable; added to server.api_keys)");
  return d;
}

/// How long the gateway waits for a new head when the head is lost.
std::chrono::milliseconds failover_window(const cluster_config& c) {
  const auto grace = c.fault_tolerance.head_grace;
  return grace.count() > 0 ? grace : std::chrono::milliseconds(std::chrono::seconds(30));
}

/// Connects to the head, retrying until it serves or `stopping`; a null router when stopped.
leader_router wait_for_router(caf::actor_system& sys, client_options o, const std::atomic<bool>& stopping) {
  o.connect_timeout = std::chrono::seconds(2);
  o.serve_timeout = std::chrono::seconds(2);
  auto last_log = std::chrono::steady_clock::time_point{};
  while (!stopping) {
    try {
      return connect_to_leader(sys, o);
    } catch (const std::exception& e) {
      if (std::chrono::steady_clock::now() - last_log > std::chrono::seconds(10)) {
        logger()->info("gateway: waiting for the head: {}", e.what());
        last_log = std::chrono::steady_clock::now();
      }
    }
  }
  return {};
}

/// SIGINT or SIGTERM (blocked in this thread and every thread started after the call).
class stop_signals {
 public:
  stop_signals() {
    sigemptyset(&set_);
    sigaddset(&set_, SIGINT);
    sigaddset(&set_, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set_, nullptr);
  }
  /// The signal if one arrived within `timeout`, else 0.
  int wait(std::chrono::milliseconds timeout) {
    timespec ts{static_cast<time_t>(timeout.count() / 1000), static_cast<long>(timeout.count() % 1000) * 1000000L};
    const int sig = sigtimedwait(&set_, nullptr, &ts);
    return sig > 0 ? sig : 0;
  }

 private:
  sigset_t set_;
};

/// The cluster file with this gateway's listener as server.host:server.port.
cluster_config gateway_config(const gateway_command_options& o) {
  auto c = load_cluster(o.config, o.overrides);
  if (c.gateways.empty())
    throw config_error(c.source.empty() ? o.config : c.source, "gateways",
                       "troupe gateway needs a gateways: list (one {host, port} per gateway process)");
  const auto n = static_cast<int>(c.gateways.size());
  if (o.index < 0 || o.index >= n)
    throw usage_error("--index " + std::to_string(o.index) + ": the cluster file has " + std::to_string(n) +
                      " gateway(s), gateways[0.." + std::to_string(n - 1) + "]");
  c.server.host = c.gateways[o.index].host;
  c.server.port = c.gateways[o.index].port;
  c.server.api_keys.insert(c.server.api_keys.end(), o.api_keys.begin(), o.api_keys.end());
  return c;
}

}  // namespace

int run_gateway(const std::vector<std::string>& args) {
  gateway_command_options o;
  auto desc = describe(o);
  po::variables_map vm;
  if (!parse_command_line(args, desc, vm)) return 0;
  const auto config = gateway_config(o);
  if (const auto tls = http_tls_of(config); tls.mode != http_tls_mode::plain) check_identity(tls.identity);
  auto meta = load_checked_metadata(config);
  init_logging("gateway");
  stop_signals signals;
  system_config cfg(config.fault_tolerance);
  use_tls(cfg, head_identity(config));
  caf::actor_system sys{cfg};
  auto registry = std::make_shared<metrics::registry>();
  auto metrics = std::make_shared<troupe_metrics>(*registry);
  http_gateway gateway(sys, gateway_settings(config, meta, registry, metrics));
  gateway.start();  // /health at once; /ready and generation 503 until the head serves
  client_options co;
  const auto heads = head_list(config);  // several heads: follow whichever leads
  co.host = heads.front().host;
  co.port = heads.front().port;
  for (std::size_t i = 1; i < heads.size(); ++i) co.other_heads.emplace_back(heads[i].host, heads[i].port);
  co.model = config.model.path;
  co.failover = failover_window(config);
  co.gateway_index = o.index;  // tells the leading head it serves through it (GET /admin/nodes)
  logger()->info("gateway {}: head at {}{}; waits up to {} ms for a new head when it is lost", o.index,
                 endpoint(co.host, co.port),
                 heads.size() > 1 ? " and " + std::to_string(heads.size() - 1) + " other head(s)" : std::string(),
                 co.failover.count());
  std::atomic<bool> stopping{false};
  client_actor client;
  std::thread connect([&] {
    auto found = wait_for_router(sys, co, stopping);
    if (!found.router) return;
    client = spawn_client(sys, found.router, co, found.term, found.supervisor);
    gateway.set_client(client);
    logger()->info("gateway {}: serving through the head's router at {} (term {})", o.index, found.head,
                   found.term.value);
  });
  int sig = 0;
  while ((sig = signals.wait(std::chrono::milliseconds(200))) == 0) {}
  logger()->info("received {}: shutting down", strsignal(sig));
  stopping = true;
  connect.join();
  gateway.drain(std::chrono::seconds(5));
  gateway.stop();
  if (client) caf::anon_send_exit(client, caf::exit_reason::user_shutdown);
  return 0;
}

}  // namespace troupe::cli
