// The cluster file's `gateways:` list (troupe gateway --index I): its entries, errors that
// name the entry's key and the bad value, and the round trip through to_yaml and --set.
#include <catch2/catch.hpp>

#include "cluster-config/cluster_config.h"
#include "config_test_util.h"

using namespace troupe;

namespace {

bool mentions(const config_error& e, const std::string& what) {
  return std::string(e.what()).find(what) != std::string::npos;
}

}  // namespace

TEST_CASE("a cluster file without gateways has none, and each entry gives a host and a port", "[config][gateways]") {
  CHECK(parse_cluster_config("", "test.yaml").gateways.empty());
  const auto c = parse_cluster_config(
      "gateways:\n  - host: 0.0.0.0\n    port: 8100\n  - port: 0\n", "test.yaml");
  REQUIRE(c.gateways.size() == 2);
  CHECK(c.gateways[0].host == "0.0.0.0");
  CHECK(c.gateways[0].port == 8100);
  CHECK(c.gateways[1].host == "127.0.0.1");  // loopback unless told otherwise, as server.host
  CHECK(c.gateways[1].port == 0);            // any free port
}

TEST_CASE("bad gateways entries are rejected naming the entry's key and the value", "[config][gateways]") {
  auto e = test::parse_error("gateways: {host: a}\n");
  CHECK(e.path == "gateways");
  CHECK(mentions(e, "expected a list of gateways"));
  e = test::parse_error("gateways:\n  - host: 127.0.0.1\n    port: 70000\n");
  CHECK(e.path == "gateways[0].port");
  CHECK(mentions(e, "expected a port 0..65535, got 70000"));
  e = test::parse_error("gateways:\n  - host: \"\"\n    port: 8100\n");
  CHECK(e.path == "gateways[0].host");
  CHECK(mentions(e, "must not be empty"));
  e = test::parse_error("gateways:\n  - hots: 127.0.0.1\n");
  CHECK(e.path == "gateways[0].hots");
  CHECK(mentions(e, "did you mean host"));
  e = test::parse_error("gateways:\n  - port: 8100\n  - host: localhost\n    port: 8100\n");
  CHECK(e.path == "gateways[1].port");
  CHECK(mentions(e, "localhost:8100 is already used by gateways[0]"));
  e = test::parse_error("gateways:\n  - port: 8000\n");
  CHECK(e.path == "gateways[0].port");
  CHECK(mentions(e, "8000 is also the head's HTTP port (server.port)"));
  e = test::parse_error("gateways:\n  - port: 7100\n");
  CHECK(e.path == "gateways[0].port");
  CHECK(mentions(e, "7100 is also the head's port (head.port)"));
}

TEST_CASE("the gateways list survives to_yaml, and --set appends and changes entries", "[config][gateways]") {
  auto c = parse_cluster_config("gateways:\n  - host: 10.0.0.5\n    port: 8100\n", "test.yaml");
  const auto back = parse_cluster_config(to_yaml(c), "round-trip");
  REQUIRE(back.gateways.size() == 1);
  CHECK(back.gateways[0].host == "10.0.0.5");
  CHECK(back.gateways[0].port == 8100);
  apply_overrides(c, {"gateways[1].port=8101", "gateways[0].port=0"});
  REQUIRE(c.gateways.size() == 2);
  CHECK(c.gateways[0].port == 0);
  CHECK(c.gateways[1].host == "127.0.0.1");
  CHECK(c.gateways[1].port == 8101);
  auto none = parse_cluster_config("", "test.yaml");  // a file without the list: --set starts one
  apply_overrides(none, {"gateways[0].port=8200"});
  REQUIRE(none.gateways.size() == 1);
  CHECK(none.gateways[0].port == 8200);
  try {
    apply_overrides(c, {"gateways[1].port=8000"});
    FAIL("a gateway on the head's HTTP port was accepted");
  } catch (const config_error& e) {
    CHECK(e.path == "gateways[1].port");
    CHECK(mentions(e, "--set gateways[1].port=8000"));
  }
  CHECK(c.gateways[1].port == 8101);
}
