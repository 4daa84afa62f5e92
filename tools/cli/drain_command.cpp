/// `troupe drain`: graceful drain of one node of a running cluster, for rolling restarts.
/// It talks to the head's supervisor through CAF (like `troupe generate --head`).
#include <boost/program_options.hpp>

#include <chrono>
#include <cstdlib>
#include <iostream>
#include <thread>

#include "actors/actor_system_config.h"
#include "actors/cluster/supervisor.h"
#include "tools/cli/commands.h"
#include "tools/cli/tls_flags.h"

namespace po = boost::program_options;

namespace troupe::cli {

namespace {

using clock_type = std::chrono::steady_clock;

struct drain_options {
  std::string head;
  std::string node;
  bool replace = false;
  bool wait = false;
  int timeout_s = 600;
  std::string admin_key;
  tls_flags tls;
};

po::options_description describe(drain_options& o) {
  po::options_description d(
      "troupe drain: drain one node of a running cluster. Its replicas take no new request,\n"
      "their requests finish (or, past fault_tolerance.drain_timeout, move to other replicas\n"
      "without a gap in the client's stream), then the node's shards and process stop. It is\n"
      "not a failure: the node is not restarted, and its replicas serve again when a node of\n"
      "the same name registers again.\n\noptions");
  d.add_options()
      ("help,h", "show this help")
      ("head", po::value(&o.head), "the head (troupe serve) at HOST:PORT (head.host:head.port)")
      ("node", po::value(&o.node), "the node to drain (its name in the cluster file)")
      ("replace", po::bool_switch(&o.replace),
       "let the head move the node's shards to free devices of other nodes (default: its\n"
       "replicas are retired until the node comes back)")
      ("wait", po::bool_switch(&o.wait),
       "wait until the node is drained, printing its progress (also follows a drain already\n"
       "in progress)")
      ("timeout", po::value(&o.timeout_s),
       "with --wait: give up after this many seconds (default 600)")
      ("admin-key", po::value(&o.admin_key),
       "one of the head's server.admin_keys (default: the TROUPE_ADMIN_KEY environment variable);\n"
       "the head refuses a drain without it");
  add_tls_flags(d, o.tls);
  return d;
}

/// "HOST:PORT" ("[::1]:7100" for IPv6); throws usage_error naming the value otherwise.
std::pair<std::string, uint16_t> parse_head_address(const std::string& text) {
  const auto bad = [&text](const std::string& why) {
    return usage_error("--head must be HOST:PORT (e.g. 127.0.0.1:7100), got '" + text + "': " + why);
  };
  const auto colon = text.rfind(':');
  if (colon == std::string::npos) throw bad("no ':' before the port");
  auto host = text.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (host.empty()) throw bad("the host is empty");
  const auto port = text.substr(colon + 1);
  if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos)
    throw bad("the port '" + port + "' is not a number");
  const long value = std::stol(port);
  if (value < 1 || value > 65535) throw bad("the port " + port + " is not in 1..65535");
  return {host, static_cast<uint16_t>(value)};
}

/// One progress line: "node replica0: draining (replicas 0): no new requests ...".
std::string describe_node(const node_view& v) {
  std::string line = "node " + v.name + ": " + v.state;
  if (!v.replicas.empty()) {
    line += " (replicas";
    for (auto r : v.replicas) line += ' ' + std::to_string(r);
    line += ')';
  }
  if (!v.detail.empty()) line += ": " + v.detail;
  return line;
}

/// The node called `name` in the supervisor's answer, or nullptr.
const node_view* find_view(const std::vector<node_view>& nodes, const std::string& name) {
  for (const auto& n : nodes)
    if (n.name == name) return &n;
  return nullptr;
}

/// Polls the supervisor until node `name` is drained (0) or leaves the drain otherwise (1).
int wait_until_drained(caf::scoped_actor& self, const supervisor_actor& sup, const drain_options& o,
                       const std::string& where) {
  const auto deadline = clock_type::now() + std::chrono::seconds(o.timeout_s);
  std::string last;
  for (;;) {
    std::vector<node_view> nodes;
    std::string error;
    self->request(sup, std::chrono::seconds(5), nodes_atom::value)
        .receive([&](std::vector<node_view>& n) { nodes = std::move(n); },
                 [&](caf::error& e) { error = self->system().render(e); });
    if (!error.empty()) throw std::runtime_error("the head at " + where + " stopped answering: " + error);
    const auto* v = find_view(nodes, o.node);
    if (!v) throw std::runtime_error("the head at " + where + " no longer lists node '" + o.node + "'");
    const auto line = describe_node(*v);
    if (line != last) std::cout << line << std::endl;
    last = line;
    if (v->state == "drained") return 0;
    if (v->state != "draining") {
      std::cerr << "troupe drain: node " << o.node << " left the drain in state '" << v->state << "'\n";
      return 1;
    }
    if (clock_type::now() > deadline) {
      std::cerr << "troupe drain: node " << o.node << " still draining after " << o.timeout_s
                << " s (--timeout)\n";
      return 1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
}

}  // namespace

int run_drain(const std::vector<std::string>& args) {
  drain_options o;
  auto desc = describe(o);
  po::variables_map vm;
  if (!parse_command_line(args, desc, vm)) return 0;
  if (o.head.empty()) throw usage_error("--head HOST:PORT is required");
  if (o.node.empty()) throw usage_error("--node NAME is required");
  if (o.timeout_s <= 0) throw usage_error("--timeout must be a positive number of seconds");
  const auto [host, port] = parse_head_address(o.head);
  const auto where = endpoint(host, port);
  fault_tolerance_section ft;
  ft.heartbeat_timeout = std::chrono::seconds(30);
  if (o.admin_key.empty())
    if (const char* env = std::getenv("TROUPE_ADMIN_KEY")) o.admin_key = env;
  system_config cfg(ft, 2);
  use_tls(cfg, identity_of(o.tls));
  caf::actor_system sys{cfg};
  auto sup = connect_link<supervisor_actor>(sys, host, port);
  if (!sup) throw std::runtime_error("head unreachable at " + where + ": " + sys.render(sup.error()));
  caf::scoped_actor self{sys};
  drain_reply reply;
  std::string error;
  self->request(*sup, std::chrono::seconds(10), drain_atom::value, o.node, o.replace, o.admin_key)
      .receive([&](drain_reply& r) { reply = std::move(r); },
               [&](caf::error& e) { error = sys.render(e); });
  if (!error.empty()) throw std::runtime_error("the head at " + where + " did not answer the drain: " + error);
  const bool in_progress = reply.node.state == "draining" || reply.node.state == "drained";
  if (reply.code == 409 && in_progress && o.wait) {
    std::cout << "node " << o.node << " is already " << reply.node.state << ": following it" << std::endl;
    return wait_until_drained(self, *sup, o, where);
  }
  if (reply.code != 202) {
    std::cerr << "troupe drain: the head refused to drain '" << o.node << "': " << reply.error << "\n";
    return 1;
  }
  std::cout << describe_node(reply.node) << std::endl;
  if (!o.wait) return 0;
  return wait_until_drained(self, *sup, o, where);
}

}  // namespace troupe::cli
