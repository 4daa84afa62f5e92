// The host and launcher environment (actors/cluster/launch.h): this executable, host names,
// and the rank an mpirun/srun job gives this process.
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <stdexcept>

#include "actors/cluster/launch.h"

namespace troupe {

// -- host and launcher environment ----------------------------------------------------------

std::string self_executable() {
  char buf[PATH_MAX];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0)
    throw std::runtime_error(std::string("cannot read /proc/self/exe: ") + std::strerror(errno));
  return std::string(buf, static_cast<size_t>(n));
}

std::string local_host_name() {
  char buf[HOST_NAME_MAX + 1] = {};
  if (gethostname(buf, sizeof buf - 1) != 0) return "";
  return buf;
}

namespace {

int parse_env_int(const char* variable, const char* text, int min_value) {
  errno = 0;
  char* end = nullptr;
  const long v = std::strtol(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || v < min_value || v > INT_MAX)
    throw std::runtime_error(std::string("launcher variable ") + variable + "='" + text +
                             "' is not a number >= " + std::to_string(min_value));
  return static_cast<int>(v);
}

}  // namespace

bool is_local_host(const std::string& host) {
  if (host == "localhost" || host == "::1" || host == "0.0.0.0" || host.rfind("127.", 0) == 0)
    return true;
  const auto me = local_host_name();
  if (me.empty()) return false;
  return host == me || host == me.substr(0, me.find('.')) || me == host.substr(0, host.find('.'));
}

bool binds_here(const std::string& host) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* found = nullptr;
  if (host.empty() || ::getaddrinfo(host.c_str(), "0", &hints, &found) != 0) return false;
  bool ok = false;
  for (auto* a = found; a && !ok; a = a->ai_next) {
    const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    ok = ::bind(fd, a->ai_addr, a->ai_addrlen) == 0;
    ::close(fd);
  }
  ::freeaddrinfo(found);
  return ok;
}

std::string launcher_node_host(const node_section& n, const std::string& host_name) {
  const bool wildcard = n.host == "0.0.0.0" || n.host == "::" || n.host.empty();
  return !wildcard && binds_here(n.host) ? n.host : host_name;
}

std::optional<launcher_rank> detect_launcher_rank(
    const std::function<const char*(const char*)>& getenv_fn) {
  static const char* const pairs[][2] = {{"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"},
                                         {"PMI_RANK", "PMI_SIZE"},
                                         {"SLURM_PROCID", "SLURM_NTASKS"}};
  for (const auto& p : pairs) {
    const char* rank = getenv_fn(p[0]);
    if (!rank || !*rank) continue;
    const char* size = getenv_fn(p[1]);
    if (!size || !*size)
      throw std::runtime_error(std::string("launcher variable ") + p[0] + " is set but " + p[1] +
                               " is not");
    launcher_rank r{parse_env_int(p[0], rank, 0), parse_env_int(p[1], size, 1), p[0], p[1]};
    if (r.rank >= r.size)
      throw std::runtime_error(std::string(p[0]) + "=" + rank + " is not below " + p[1] + "=" +
                               size);
    return r;
  }
  return std::nullopt;
}

namespace {

std::size_t head_count(const cluster_config& c) { return std::max<std::size_t>(1, c.heads.size()); }

}  // namespace

void check_launcher_size(const cluster_config& c, const launcher_rank& r) {
  const auto file = c.source.empty() ? std::string("<built in code>") : c.source;
  const std::size_t heads = head_count(c), gateways = c.gateways.size(), nodes = c.nodes.size();
  const std::size_t want = heads + gateways + nodes;
  if (static_cast<std::size_t>(r.size) == want) return;
  std::string order = heads == 1 ? "rank 0 is the head" : "ranks 0.." + std::to_string(heads - 1) + " are the heads";
  if (gateways > 0)
    order += ", ranks " + std::to_string(heads) + ".." + std::to_string(heads + gateways - 1) + " the gateways";
  order += gateways > 0 || heads > 1 ? ", then the nodes in file order" : ", rank i is nodes[i-1]";
  throw std::runtime_error("the launcher started " + std::to_string(r.size) + " processes (" + r.size_variable +
                           "=" + std::to_string(r.size) + ") but the cluster file " + file + " has " +
                           std::to_string(heads) + " head(s), " + std::to_string(gateways) + " gateway(s) and " +
                           std::to_string(nodes) + " node(s): start " + std::to_string(want) + " (" + order +
                           ")");
}

launcher_role role_for_rank(const cluster_config& c, const launcher_rank& r) {
  check_launcher_size(c, r);
  const auto rank = static_cast<std::size_t>(r.rank);
  const std::size_t heads = head_count(c), gateways = c.gateways.size();
  if (rank < heads) return {launcher_role::kind::head, rank};
  if (rank < heads + gateways) return {launcher_role::kind::gateway, rank - heads};
  return {launcher_role::kind::node, rank - heads - gateways};
}

const node_section& node_for_rank(const cluster_config& c, const launcher_rank& r) {
  const auto role = role_for_rank(c, r);
  if (role.role != launcher_role::kind::node)
    throw std::runtime_error("rank " + std::to_string(r.rank) + " is " +
                             (role.role == launcher_role::kind::head ? "a head" : "a gateway") + ", not a node");
  return c.nodes[role.index];
}

const node_section& find_node_section(const cluster_config& c, const std::string& name) {
  std::string names;
  for (const auto& n : c.nodes) {
    if (n.name == name) return n;
    names += (names.empty() ? "" : ", ") + n.name;
  }
  const auto file = c.source.empty() ? std::string("the cluster config") : c.source;
  throw std::runtime_error("unknown node '" + name + "': " + file + " has nodes: " +
                           (names.empty() ? "(none)" : names));
}

}  // namespace troupe
