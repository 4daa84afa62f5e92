// The cluster file's `router:` section: the routing policy and its balance thresholds,
// their defaults, errors that name the key and the bad value, and the round trip through
// to_yaml and --set.
#include <catch2/catch.hpp>

#include "cluster-config/cluster_config.h"
#include "config_test_util.h"

using namespace troupe;

namespace {

bool mentions(const config_error& e, const std::string& what) {
  return std::string(e.what()).find(what) != std::string::npos;
}

}  // namespace

TEST_CASE("the router is cache-aware by default with bounded balance thresholds and index", "[config][router]") {
  const auto c = parse_cluster_config("", "test.yaml");
  CHECK(c.router.policy == "cache_aware");
  CHECK(c.router.balance_abs_threshold == 2);
  CHECK(c.router.balance_rel_threshold == 1.5);
  CHECK(c.router.index_capacity == 65536);
}

TEST_CASE("every router key is read from the file", "[config][router]") {
  const auto c = parse_cluster_config(
      "router:\n  policy: least_loaded\n  balance_abs_threshold: 8\n  balance_rel_threshold: 2.5\n"
      "  index_capacity: 1000\n",
      "test.yaml");
  CHECK(c.router.policy == "least_loaded");
  CHECK(c.router.balance_abs_threshold == 8);
  CHECK(c.router.balance_rel_threshold == 2.5);
  CHECK(c.router.index_capacity == 1000);
}

TEST_CASE("a bad router policy is rejected naming router.policy and the bad value", "[config][router]") {
  const auto e = test::parse_error("router:\n  policy: round_robin\n");
  CHECK(e.path == "router.policy");
  CHECK(mentions(e, "test.yaml: router.policy:"));
  CHECK(mentions(e, "must be cache_aware or least_loaded"));
  CHECK(mentions(e, "\"round_robin\""));
}

TEST_CASE("router thresholds and index capacity out of range are rejected naming their key", "[config][router]") {
  auto e = test::parse_error("router:\n  balance_abs_threshold: -1\n");
  CHECK(e.path == "router.balance_abs_threshold");
  CHECK(mentions(e, "got -1"));
  e = test::parse_error("router:\n  balance_rel_threshold: 0.5\n");
  CHECK(e.path == "router.balance_rel_threshold");
  CHECK(mentions(e, "must be >= 1"));
  e = test::parse_error("router:\n  index_capacity: 0\n");
  CHECK(e.path == "router.index_capacity");
  e = test::parse_error("router:\n  polcy: least_loaded\n");
  CHECK(e.path == "router.polcy");
  CHECK(mentions(e, "did you mean policy"));
  e = test::parse_error("router:\n  balance_abs_threshold: lots\n");
  CHECK(e.path == "router.balance_abs_threshold");
  CHECK(mentions(e, "expected an integer"));
}

TEST_CASE("the router section survives to_yaml and a --set override is validated", "[config][router]") {
  auto c = parse_cluster_config("router:\n  policy: least_loaded\n  balance_rel_threshold: 3\n", "test.yaml");
  const auto back = parse_cluster_config(to_yaml(c), "round-trip");
  CHECK(back.router.policy == "least_loaded");
  CHECK(back.router.balance_rel_threshold == 3.0);
  apply_overrides(c, {"router.policy=cache_aware", "router.balance_abs_threshold=5"});
  CHECK(c.router.policy == "cache_aware");
  CHECK(c.router.balance_abs_threshold == 5);
  try {
    apply_overrides(c, {"router.policy=random"});
    FAIL("a bad policy override was accepted");
  } catch (const config_error& e) {
    CHECK(e.path == "router.policy");
    CHECK(mentions(e, "--set router.policy=random"));
    CHECK(mentions(e, "\"random\""));
  }
  CHECK(c.router.policy == "cache_aware");
}
