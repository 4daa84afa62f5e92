// `gateways:` of the cluster file: HTTP gateways that run apart from the head
// (`troupe gateway --index I`). Reading, YAML output and validation of the list.
#include "cluster-config/config_reader.h"

namespace troupe::config_detail {

namespace {

/// "localhost" and "127.0.0.1" are the same host for port clashes.
std::string same_host(const std::string& host) { return host == "localhost" ? "127.0.0.1" : host; }

}  // namespace

void read_gateways(const reader& r, const YAML::Node& list, std::vector<gateway_section>& gateways) {
  gateways.clear();
  if (list.IsNull()) return;
  if (!list.IsSequence())
    r.fail(list, "gateways", "expected a list of gateways ({host, port} each), got " + describe(list));
  for (std::size_t i = 0; i < list.size(); ++i) {
    section s(r, list[i], indexed("gateways", i));
    gateway_section g;
    s.get("host", g.host);
    s.get_port("port", g.port, true);
    s.finish();
    gateways.push_back(g);
  }
}

void emit_gateways(YAML::Emitter& out, const std::vector<gateway_section>& gateways) {
  // Written even when empty: --set gateways[0].port=... then appends to the list.
  out << YAML::Key << "gateways" << YAML::Value << YAML::BeginSeq;
  for (const auto& g : gateways)
    out << YAML::BeginMap << YAML::Key << "host" << YAML::Value << YAML::DoubleQuoted << g.host << YAML::Key
        << "port" << YAML::Value << g.port << YAML::EndMap;
  out << YAML::EndSeq;
}

void check_gateways(const std::string& source, const cluster_config& c) {
  for (std::size_t i = 0; i < c.gateways.size(); ++i) {
    const auto& g = c.gateways[i];
    const auto path = indexed("gateways", i);
    if (g.host.empty()) throw config_error(source, join(path, "host"), "must not be empty");
    if (g.port == 0) continue;  // any free port: no clash possible
    const auto at = same_host(g.host);
    if (at == same_host(c.head.host) && g.port == c.head.port)
      throw config_error(source, join(path, "port"), std::to_string(g.port) + " is also the head's port (head.port)");
    if (at == same_host(c.server.host) && g.port == c.server.port)
      throw config_error(source, join(path, "port"),
                         std::to_string(g.port) + " is also the head's HTTP port (server.port) on " + g.host);
    for (std::size_t j = 0; j < i; ++j)
      if (same_host(c.gateways[j].host) == at && c.gateways[j].port == g.port)
        throw config_error(source, join(path, "port"),
                           g.host + ":" + std::to_string(g.port) + " is already used by " + indexed("gateways", j));
  }
}

}  // namespace troupe::config_detail
