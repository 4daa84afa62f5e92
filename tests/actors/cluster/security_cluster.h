#pragma once
/// Shared by the link-security and control-authorization tests: credentials made at test time
/// by tools/make_certs.sh, a `troupe serve` (head + node n0) with security.tls: required, and
/// actor systems of this test process that play the peers.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>

#include "actors/actor_system_config.h"
#include "actors/cluster/node_agent.h"
#include "actors/cluster/supervisor.h"
#include "actors/link_security.h"
#include "tools/troupe_process.h"

namespace troupe::test::security {

using namespace std::chrono_literals;

/// Runs tools/make_certs.sh `dir` `names`: a CA in `dir` and one certificate per name.
inline void make_certs(const std::filesystem::path& dir, const std::string& names) {
  const auto r = run_command("bash " + (source_dir() / "tools" / "make_certs.sh").string() + " " + dir.string() +
                                 " " + names,
                             dir.parent_path() / (dir.filename().string() + ".err"));
  INFO(r.err);
  REQUIRE(r.code == 0);
}

/// The identity of certificate `name` of the CA in `dir`.
inline tls_identity identity_in(const std::filesystem::path& dir, const std::string& name) {
  tls_identity id;
  id.ca = (dir / "ca.pem").string();
  id.certificate = (dir / (name + ".pem")).string();
  id.key = (dir / (name + ".key")).string();
  return id;
}

/// Heartbeats every 100 ms, a peer counted lost after 5 s of silence: generous, as the test
/// machine may be loaded.
inline fault_tolerance_section lenient_heartbeats() {
  fault_tolerance_section ft;
  ft.heartbeat_timeout = 5s;
  return ft;
}

/// An actor system of this process: plaintext when `id` is off, else TLS with `id`.
struct peer {
  system_config cfg;
  caf::actor_system sys;
  explicit peer(const tls_identity& id) : cfg(lenient_heartbeats(), 2), sys((use_tls(cfg, id), cfg)) {}

  /// The answer of `h` to `xs...`, or the error.
  template <class T, class Handle, class... Ts>
  caf::expected<T> ask(const Handle& h, Ts&&... xs) {
    caf::scoped_actor self{sys};
    caf::expected<T> out{caf::make_error(caf::sec::runtime_error, "no answer")};
    self->request(h, 10s, std::forward<Ts>(xs)...)
        .receive([&](T& x) { out = std::move(x); }, [&](caf::error& e) { out = std::move(e); });
    return out;
  }
};

/// Sends each actor exit(user_shutdown) when it goes out of scope: an actor a remote node
/// still references would otherwise keep its actor_system from shutting down after a failed
/// REQUIRE. Declare it after the peer that spawned them.
struct exit_at_scope_end {
  std::vector<caf::actor> actors;
  ~exit_at_scope_end() {
    for (auto& a : actors) caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
  }
};

/// What a raw TCP client saw: the bytes it got and whether the server closed the connection.
struct raw_exchange {
  std::string received;
  bool closed = false;
};

/// A plain TCP connection to 127.0.0.1:`port` (the caller closes it).
inline int connect_loopback(uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  ::inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  return fd;
}

/// Connects to 127.0.0.1:`port` with a plain socket, sends a line that is not TLS and reads
/// until the server closes the connection or 3 s pass.
inline raw_exchange talk_raw(uint16_t port) {
  raw_exchange out;
  const int fd = connect_loopback(port);
  const std::string hello = "hello, I am not TLS\n";
  CHECK(::write(fd, hello.data(), hello.size()) == static_cast<ssize_t>(hello.size()));
  char buf[4096];
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 3000) <= 0) break;
    const auto n = ::read(fd, buf, sizeof buf);
    if (n <= 0) {
      out.closed = true;
      break;
    }
    out.received.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

/// `troupe serve` of a head and one node n0 (the default model) on reserved ports, its links
/// mutual TLS with certificates made for this run, its HTTP port as `server_tls` says
/// (server.tls); stopped (SIGTERM) at the end.
class tls_cluster {
 public:
  explicit tls_cluster(const std::string& name, const std::vector<std::string>& admin_keys = {},
                       const std::string& server_tls = "cluster")
      : dir_(scratch_dir(name)), base_(static_cast<uint16_t>(reserve_ports(3))) {
    make_certs(dir_ / "certs", "head n0 client");
    make_certs(dir_ / "foreign", "intruder");  // another CA: not the cluster's
    config_ = default_cluster_config();
    config_.head.port = base_;
    config_.server.port = http_port();
    config_.server.tls = server_tls;
    config_.server.admin_keys = admin_keys;
    config_.fault_tolerance = lenient_heartbeats();
    config_.nodes.front().name = "n0";
    config_.nodes.front().port = node_port();
    const auto head = identity_in(dir_ / "certs", "head");
    config_.security = {"required", head.ca, head.certificate, head.key};
    const auto node = identity_in(dir_ / "certs", "n0");
    config_.nodes.front().certificate = node.certificate;
    config_.nodes.front().key = node.key;
    validate(config_);
    const auto file = dir_ / "cluster.yaml";
    std::ofstream(file) << to_yaml(config_);
    pid_ = spawn_background({troupe_exe(), "serve", "--config", file.string()}, log());
    if (!wait_for_log(log(), "serving:", pid_, 180s)) {
      stop();
      FAIL("troupe serve did not start serving: " << read_text(log()));
    }
  }
  ~tls_cluster() { stop(); }
  tls_cluster(const tls_cluster&) = delete;
  tls_cluster& operator=(const tls_cluster&) = delete;

  const std::filesystem::path& dir() const { return dir_; }
  std::filesystem::path log() const { return dir_ / "serve.log"; }
  uint16_t head_port() const { return base_; }
  uint16_t node_port() const { return static_cast<uint16_t>(base_ + 1); }
  /// The gateway's port (server.port).
  uint16_t http_port() const { return static_cast<uint16_t>(base_ + 2); }
  const cluster_config& config() const { return config_; }
  /// The identity of certificate `name` of this cluster's CA.
  tls_identity member(const std::string& name) const { return identity_in(dir_ / "certs", name); }
  /// A certificate of another CA.
  tls_identity stranger() const { return identity_in(dir_ / "foreign", "intruder"); }
  /// True while the head process runs.
  bool head_alive() const { return pid_ > 0 && process_alive(pid_); }

  void stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    if (!wait_exit(pid_, 30s)) {
      ::kill(-pid_, SIGKILL);
      wait_exit(pid_, 5s);
    }
    pid_ = 0;
  }

 private:
  std::filesystem::path dir_;
  uint16_t base_;
  cluster_config config_;
  pid_t pid_ = 0;
};

/// The state of node `name` in `s` (node_state::stopped when it is not listed).
inline node_state state_of(const cluster_status& s, const std::string& name) {
  for (const auto& n : s.nodes)
    if (n.name == name) return n.state;
  return node_state::stopped;
}

}  // namespace troupe::test::security
