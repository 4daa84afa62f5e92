// The cluster file's `heads:` list (issue 15): several heads, each with a lease voter's
// port; the single `head:` as a one-head list; errors that name the key and the value; the
// round trip through to_yaml and --set.
#include <catch2/catch.hpp>

#include "cluster-config/cluster_config.h"
#include "config_test_util.h"

using namespace troupe;

namespace {

bool mentions(const config_error& e, const std::string& what) {
  return std::string(e.what()).find(what) != std::string::npos;
}

/// Two heads and two nodes on 127.0.0.1; `node_voters` gives both nodes a voter_port.
std::string two_heads(bool node_voters = true, const std::string& extra = "") {
  std::string text =
      "heads:\n"
      "  - {host: 127.0.0.1, port: 7100, voter_port: 7110}\n"
      "  - {host: 127.0.0.1, port: 7200, voter_port: 7210}\n"
      "nodes:\n"
      "  - {name: a, host: 127.0.0.1, port: 7101" + std::string(node_voters ? ", voter_port: 7111" : "") + "}\n"
      "  - {name: b, host: 127.0.0.1, port: 7102" + std::string(node_voters ? ", voter_port: 7112" : "") + "}\n";
  return text + extra;
}

}  // namespace

TEST_CASE("a heads list names every head, the first is also head, and every head and voting node is a voter",
          "[config][heads]") {
  const auto c = parse_cluster_config(two_heads(), "test.yaml");
  REQUIRE(c.heads.size() == 2);
  CHECK(c.heads[1].port == 7200);
  CHECK(c.heads[1].voter_port == 7210);
  CHECK(c.head.port == 7100);
  CHECK(head_list(c).size() == 2);
  CHECK(election_voters(c) ==
        std::vector<std::string>{"127.0.0.1:7110", "127.0.0.1:7210", "127.0.0.1:7111", "127.0.0.1:7112"});
}

TEST_CASE("a single head is a one-head list with no election", "[config][heads]") {
  const auto c = parse_cluster_config("head: {host: 127.0.0.1, port: 7300}\n", "test.yaml");
  CHECK(c.heads.empty());
  REQUIRE(head_list(c).size() == 1);
  CHECK(head_list(c)[0].port == 7300);
  CHECK(election_voters(c).empty());
  CHECK_NOTHROW(parse_cluster_config("heads:\n  - {host: 127.0.0.1, port: 7300}\n", "test.yaml"));
}

TEST_CASE("bad heads entries are rejected naming the key and the value", "[config][heads]") {
  auto e = test::parse_error("heads:\n  - {host: 127.0.0.1, port: 7100, voter_port: 7110}\n"
                             "  - {host: 127.0.0.1, port: 7200}\n"
                             "nodes:\n  - {name: a, host: 127.0.0.1, port: 7101, voter_port: 7111}\n");
  CHECK(e.path == "heads[1].voter_port");
  CHECK(mentions(e, "is required with more than one head"));
  e = test::parse_error(two_heads(false));
  CHECK(e.path == "heads");
  CHECK(mentions(e, "2 heads and 0 voting node(s) make 2 voters"));
  e = test::parse_error("heads:\n  - {host: 127.0.0.1, port: 7100, voter_port: 7110}\n"
                        "  - {host: 127.0.0.1, port: 7101, voter_port: 7210}\n"
                        "nodes:\n  - {name: a, host: 127.0.0.1, port: 7101, voter_port: 7111}\n");
  CHECK(e.path == "heads[1].port");
  CHECK(mentions(e, "127.0.0.1:7101 is already used by nodes[0].port"));
  e = test::parse_error("heads:\n  - {host: 127.0.0.1, port: 7100, voter_port: 7110}\n"
                        "  - {host: 127.0.0.1, port: 7200, voter_port: 7111}\n"
                        "nodes:\n  - {name: a, host: 127.0.0.1, port: 7101, voter_port: 7111}\n");
  CHECK(e.path == "heads[1].voter_port");
  CHECK(mentions(e, "127.0.0.1:7111 is already used by nodes[0].voter_port"));
  e = test::parse_error("head: {host: 127.0.0.1, port: 7000}\n" + two_heads());
  CHECK(e.path == "heads");
  CHECK(mentions(e, "head: (127.0.0.1:7000) and heads[0] (127.0.0.1:7100) differ"));
  e = test::parse_error("nodes:\n  - {name: a, host: 127.0.0.1, port: 7101, voter_port: 7111}\n");
  CHECK(e.path == "nodes[0].voter_port");
  CHECK(mentions(e, "this file has one head"));
  CHECK(parse_cluster_config("heads: []\n", "test.yaml").heads.empty());
  e = test::parse_error("heads: 7100\n");
  CHECK(e.path == "heads");
  CHECK(mentions(e, "expected a list of heads"));
  e = test::parse_error("heads:\n  - {host: 127.0.0.1, prot: 7100}\n");
  CHECK(e.path == "heads[0].prot");
  e = test::parse_error("heads:\n  - {host: 127.0.0.1, port: 70000, voter_port: 7110}\n");
  CHECK(e.path == "heads[0].port");
}

TEST_CASE("the heads list survives to_yaml, and --set can add a head", "[config][heads]") {
  auto c = parse_cluster_config(two_heads(), "test.yaml");
  const auto back = parse_cluster_config(to_yaml(c), "round-trip");
  REQUIRE(back.heads.size() == 2);
  CHECK(back.heads[1].voter_port == 7210);
  CHECK(back.nodes[1].voter_port == 7112);
  CHECK(election_voters(back) == election_voters(c));
  apply_overrides(c, {"heads[2].host=127.0.0.1", "heads[2].port=7300", "heads[2].voter_port=7310"});
  REQUIRE(c.heads.size() == 3);
  CHECK(election_voters(c).size() == 5);
  auto single = parse_cluster_config("head: {host: 127.0.0.1, port: 7100}\n"
                                     "nodes:\n  - {name: a, host: 127.0.0.1, port: 7101}\n",
                                     "test.yaml");
  apply_overrides(single, {"heads[0].host=127.0.0.1", "heads[0].port=7100", "heads[0].voter_port=7110",
                           "heads[1].host=127.0.0.1", "heads[1].port=7200", "heads[1].voter_port=7210",
                           "nodes[0].voter_port=7111"});
  CHECK(single.heads.size() == 2);
  try {
    apply_overrides(single, {"heads[1].voter_port=0"});
    FAIL("a second head without a voter port was accepted");
  } catch (const config_error& e) {
    CHECK(e.path == "heads[1].voter_port");
  }
}

TEST_CASE("a head's state_port is optional, read, kept by to_yaml, and checked like the other ports",
          "[config][heads]") {
  const auto c = parse_cluster_config(
      "heads:\n"
      "  - {host: 127.0.0.1, port: 7100, voter_port: 7110, state_port: 7120}\n"
      "  - {host: 127.0.0.1, port: 7200, voter_port: 7210}\n"
      "nodes:\n  - {name: a, host: 127.0.0.1, port: 7101, voter_port: 7111}\n",
      "test.yaml");
  CHECK(c.heads[0].state_port == 7120);
  CHECK(c.heads[1].state_port == 0);  // that head takes no state from the leader
  CHECK(parse_cluster_config(to_yaml(c), "round-trip").heads[0].state_port == 7120);
  auto e = test::parse_error("heads:\n  - {host: 127.0.0.1, port: 7100, voter_port: 7110, state_port: 7101}\n"
                             "  - {host: 127.0.0.1, port: 7200, voter_port: 7210}\n"
                             "nodes:\n  - {name: a, host: 127.0.0.1, port: 7101, voter_port: 7111}\n");
  CHECK(e.path == "heads[0].state_port");
  CHECK(mentions(e, "127.0.0.1:7101 is already used by nodes[0].port"));
  e = test::parse_error("heads:\n  - {host: 127.0.0.1, port: 7100, state_port: 7120}\n");
  CHECK(e.path == "heads[0].state_port");
  CHECK(mentions(e, "only among several heads"));
  e = test::parse_error("heads:\n  - {host: 127.0.0.1, port: 7100, voter_port: 7110, state_port: 70000}\n"
                        "  - {host: 127.0.0.1, port: 7200, voter_port: 7210}\n"
                        "nodes:\n  - {name: a, host: 127.0.0.1, port: 7101, voter_port: 7111}\n");
  CHECK(e.path == "heads[0].state_port");
}
