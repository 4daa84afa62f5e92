#include <boost/program_options.hpp>
#include <iostream>

#include "actors/cluster/launch.h"
#include "cluster-config/cluster_config.h"
#include "tools/cli/commands.h"

namespace po = boost::program_options;

namespace troupe::cli {

namespace {

struct node_command_options {
  std::string config;
  std::string name;
  std::string bind;
  std::vector<std::string> overrides;
};

po::options_description describe(node_command_options& o) {
  po::options_description d(
      "troupe node: run one node of a cluster: publish its node agent on the node's\n"
      "host:port, connect to the head (retrying for fault_tolerance.request_wait), register\n"
      "and heartbeat until the head stops it or SIGINT/SIGTERM arrives.\n\noptions");
  d.add_options()
      ("help,h", "show this help")
      ("config,c", po::value(&o.config)->required(), "cluster file (YAML)")
      ("name,n", po::value(&o.name)->required(), "which entry of `nodes:` this process is")
      ("bind", po::value(&o.bind), "address to listen on (default: the node's host; 0.0.0.0 = all)")
      ("set", po::value(&o.overrides)->composing(),
       "override a key of the cluster file, e.g. --set fault_tolerance.request_wait=5s "
       "(repeatable)");
  return d;
}

}  // namespace

int run_node(const std::vector<std::string>& args) {
  node_command_options o;
  auto desc = describe(o);
  po::variables_map vm;
  if (!parse_command_line(args, desc, vm)) return 0;
  node_options n;
  n.config = load_cluster(o.config, o.overrides);
  n.name = o.name;
  n.bind_host = o.bind;
  return troupe::run_node(n);
}

}  // namespace troupe::cli
