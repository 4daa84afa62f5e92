// Bad cluster files through the command line: each one fails with a non-zero exit and a
// message that names the file, the key and the reason, and (where it can) before any
// node process starts.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <catch2/catch.hpp>

#include "tools/troupe_process.h"

using namespace troupe::test;
namespace fs = std::filesystem;

namespace {

int base_port() {
  static const int base = reserve_ports(8);
  return base;
}

std::string example(const std::string& name) {
  return (source_dir() / "cluster-config" / "examples" / name).string();
}

/// --set flags that move the head and `n_nodes` nodes to ports from `port` on.
std::string ports(int port, int n_nodes) {
  std::string s = " --set head.port=" + std::to_string(port);
  for (int i = 0; i < n_nodes; ++i)
    s += " --set nodes[" + std::to_string(i) + "].port=" + std::to_string(port + 1 + i);
  return s;
}

bool contains(const std::string& text, const std::string& what) { return text.find(what) != std::string::npos; }

/// A TCP socket listening on 127.0.0.1:`port` for the lifetime of the object.
struct listening_socket {
  int fd = -1;
  explicit listening_socket(int port) {
    fd = ::socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd >= 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    REQUIRE(::listen(fd, 4) == 0);
  }
  ~listening_socket() { ::close(fd); }
};

}  // namespace

TEST_CASE("an unknown key in the cluster file is named with the file and a suggestion", "[cli][cluster]") {
  const auto dir = scratch_dir("cluster-unknown-key");
  const auto file = dir / "typo.yaml";
  std::ofstream(file) << "model:\n  path: default\nparallel:\n  tensr: 2\nnodes:\n  - name: n0\n";
  for (const std::string cmd : {"generate --prompt hi --config ", "serve --config "}) {
    auto r = run_troupe(cmd + file.string(), dir / "err.txt");
    INFO(cmd << ": " << r.err);
    CHECK(r.code != 0);
    CHECK(contains(r.err, file.string() + ":"));
    CHECK(contains(r.err, "parallel.tensr"));
    CHECK(contains(r.err, "unknown key"));
    CHECK(contains(r.err, "tensor"));
  }
}

TEST_CASE("tensor 2 over the default model's 9 heads fails before any process starts unless uneven heads are allowed",
          "[cli][cluster][slow]") {
  const auto dir = scratch_dir("cluster-uneven");
  for (const std::string cmd : {"generate --prompt hi --config ", "serve --config "}) {
    auto r = run_troupe(cmd + example("tensor2.yaml") + ports(base_port(), 2) +
                            " --set parallel.allow_uneven_heads=false",
                        dir / "err.txt");
    INFO(cmd << ": " << r.err);
    CHECK(r.code == 1);
    CHECK(contains(r.err, example("tensor2.yaml") + ": parallel.tensor:"));
    CHECK(contains(r.err, "9 attention heads"));
    CHECK(contains(r.err, "parallel.allow_uneven_heads"));
    // Nothing was published or launched.
    CHECK_FALSE(contains(r.err, "listening"));
    CHECK_FALSE(contains(r.err, "starting (pid"));
  }
}

TEST_CASE("a cluster with more shards than devices is refused naming both counts", "[cli][cluster]") {
  const auto dir = scratch_dir("cluster-devices");
  auto r = run_troupe("generate --prompt hi --config " + example("single.yaml") + ports(base_port(), 1) +
                          " --set parallel.pipeline=2",
                      dir / "err.txt");
  INFO(r.err);
  CHECK(r.code == 1);
  CHECK(contains(r.err, example("single.yaml")));
  CHECK(contains(r.err, ": nodes: the cluster needs 2 shards"));
  CHECK(contains(r.err, "its nodes list 1 device"));
  CHECK_FALSE(contains(r.err, "listening"));
}

TEST_CASE("a node that never registers fails generate after request_wait, naming the node", "[cli][cluster][slow]") {
  const auto dir = scratch_dir("cluster-unreachable");
  const auto start = std::chrono::steady_clock::now();
  auto r = run_troupe("generate --prompt hi --config " + example("pipeline2.yaml") + ports(base_port() + 3, 2) +
                          " --set nodes[1].host=10.255.255.1 --set fault_tolerance.request_wait=2s",
                      dir / "err.txt");
  const auto took = std::chrono::steady_clock::now() - start;
  INFO(r.err);
  CHECK(r.code == 1);
  CHECK(contains(r.err, "only 1 of 2 nodes registered"));
  CHECK(contains(r.err, "stage1 at 10.255.255.1:" + std::to_string(base_port() + 5)));
  CHECK(contains(r.err, "the head did not start it"));
  CHECK_FALSE(contains(r.err, "never registered: stage0"));
  CHECK(took < std::chrono::seconds(30));
  // The node the head did start was stopped again.
  CHECK(contains(r.err, "node stage0 stopped"));
  CHECK(processes_with_argument("head.port=" + std::to_string(base_port() + 3)).empty());
}

TEST_CASE("a head port already in use is named with host:port", "[cli][cluster][slow]") {
  const auto dir = scratch_dir("cluster-port");
  const int port = base_port() + 6;
  listening_socket busy(port);
  auto r = run_troupe("generate --prompt hi --config " + example("single.yaml") + ports(port, 1), dir / "err.txt");
  INFO(r.err);
  CHECK(r.code == 1);
  CHECK(contains(r.err, "cannot listen on 127.0.0.1:" + std::to_string(port)));
  CHECK(contains(r.err, "in use"));
}
