// `troupe gateway` refuses what it cannot run with a message that names what is wrong:
// a cluster file without gateways, an index past the list, an HTTP port already in use.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <catch2/catch.hpp>

#include "tools/troupe_process.h"

using namespace troupe::test;

namespace {

std::string single() { return (source_dir() / "cluster-config" / "examples" / "single.yaml").string(); }

bool contains(const std::string& text, const std::string& what) { return text.find(what) != std::string::npos; }

}  // namespace

TEST_CASE("troupe gateway without a gateways list, or with an index past it, fails naming the key or the flag",
          "[cli][gateway]") {
  const auto dir = scratch_dir("gateway-command-errors");
  auto r = run_troupe("gateway --config " + single(), dir / "err.txt");
  INFO(r.err);
  CHECK(r.code == 1);
  CHECK(contains(r.err, single() + ": gateways: troupe gateway needs a gateways: list"));
  r = run_troupe("gateway --config " + single() + " --set gateways[0].port=0 --index 1", dir / "err.txt");
  INFO(r.err);
  CHECK(r.code == 2);
  CHECK(contains(r.err, "--index 1: the cluster file has 1 gateway(s), gateways[0..0]"));
  r = run_troupe("gateway --config " + single() + " --set gateways[0].port=7100", dir / "err.txt");
  INFO(r.err);
  CHECK(r.code == 1);
  CHECK(contains(r.err, "gateways[0].port: 7100 is also the head's port (head.port)"));
}

TEST_CASE("troupe gateway on an HTTP port already in use fails naming host:port", "[cli][gateway][slow]") {
  const auto dir = scratch_dir("gateway-command-port");
  const int port = reserve_ports(1);
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  REQUIRE(::listen(fd, 4) == 0);
  auto r = run_troupe("gateway --config " + single() + " --set gateways[0].port=" + std::to_string(port),
                      dir / "err.txt");
  ::close(fd);
  INFO(r.err);
  CHECK(r.code == 1);
  CHECK(contains(r.err, "http: cannot listen on 127.0.0.1:" + std::to_string(port)));
  CHECK(contains(r.err, "in use"));
}
