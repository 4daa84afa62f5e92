// The cluster file's `leadership:` section: the lease's timing and the head state's
// directory, their defaults, errors that name the key and the bad value, and the round
// trip through to_yaml and --set.
#include <catch2/catch.hpp>

#include "cluster-config/cluster_config.h"
#include "config_test_util.h"

using namespace troupe;
using namespace std::chrono_literals;

namespace {

bool mentions(const config_error& e, const std::string& what) {
  return std::string(e.what()).find(what) != std::string::npos;
}

}  // namespace

TEST_CASE("leadership defaults to a 2 s lease, a 200 ms drift margin and troupe-state", "[config][leadership]") {
  const auto c = parse_cluster_config("", "test.yaml");
  CHECK(c.leadership.lease_duration == 2000ms);
  CHECK(c.leadership.drift_margin == 200ms);
  CHECK(c.leadership.state_dir == "troupe-state");
  CHECK_FALSE(c.leadership.single_head_state);  // a plain troupe serve writes no state
}

TEST_CASE("every leadership key is read from the file", "[config][leadership]") {
  const auto c = parse_cluster_config(
      "leadership:\n  lease_duration: 1.5s\n  drift_margin: 100ms\n  state_dir: /var/lib/troupe\n", "test.yaml");
  CHECK(c.leadership.lease_duration == 1500ms);
  CHECK(c.leadership.drift_margin == 100ms);
  CHECK(c.leadership.state_dir == "/var/lib/troupe");
  CHECK(parse_cluster_config("leadership:\n  single_head_state: true\n", "test.yaml").leadership.single_head_state);
}

TEST_CASE("bad leadership values are rejected naming their key and the value", "[config][leadership]") {
  auto e = test::parse_error("leadership:\n  lease_duration: 20ms\n");
  CHECK(e.path == "leadership.lease_duration");
  CHECK(mentions(e, "test.yaml: leadership.lease_duration: must be at least 30ms"));
  CHECK(mentions(e, "got 20ms"));
  e = test::parse_error("leadership:\n  drift_margin: -5\n");
  CHECK(e.path == "leadership.drift_margin");
  CHECK(mentions(e, "must not be negative, got -5ms"));
  e = test::parse_error("leadership:\n  lease_duration: 600ms\n  drift_margin: 200ms\n");
  CHECK(e.path == "leadership.drift_margin");
  CHECK(mentions(e, "must be below lease_duration / 3 (600ms / 3)"));
  CHECK(mentions(e, "got 200ms"));
  e = test::parse_error("leadership:\n  state_dir: \"\"\n");
  CHECK(e.path == "leadership.state_dir");
  CHECK(mentions(e, "must name a directory"));
  e = test::parse_error("leadership:\n  lease_duration: soon\n");
  CHECK(e.path == "leadership.lease_duration");
  CHECK(mentions(e, "expected a duration"));
  e = test::parse_error("leadership:\n  lease_durtion: 1s\n");
  CHECK(e.path == "leadership.lease_durtion");
  CHECK(mentions(e, "did you mean lease_duration"));
  e = test::parse_error("leadership:\n  state_dir: [a, b]\n");
  CHECK(e.path == "leadership.state_dir");
  CHECK(mentions(e, "expected a string"));
}

TEST_CASE("the leadership section survives to_yaml and a --set override is validated", "[config][leadership]") {
  auto c = parse_cluster_config("leadership:\n  lease_duration: 900ms\n  state_dir: \"state: heads\"\n", "test.yaml");
  const auto back = parse_cluster_config(to_yaml(c), "round-trip");
  CHECK(back.leadership.lease_duration == 900ms);
  CHECK(back.leadership.drift_margin == 200ms);
  CHECK(back.leadership.state_dir == "state: heads");
  CHECK_FALSE(back.leadership.single_head_state);
  apply_overrides(c, {"leadership.lease_duration=3s", "leadership.drift_margin=500ms"});
  CHECK(c.leadership.lease_duration == 3000ms);
  CHECK(c.leadership.drift_margin == 500ms);
  try {
    apply_overrides(c, {"leadership.drift_margin=1s"});
    FAIL("a drift margin of a third of the lease was accepted");
  } catch (const config_error& e) {
    CHECK(e.path == "leadership.drift_margin");
    CHECK(mentions(e, "--set leadership.drift_margin=1s"));
  }
  CHECK(c.leadership.drift_margin == 500ms);
}
