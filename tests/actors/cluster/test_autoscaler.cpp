// Autoscaling: the `autoscale:` section of the cluster file, and the
// policy that turns load samples into a target number of active replicas, rule by rule,
// with synthetic samples.
#include <catch2/catch.hpp>

#include "actors/cluster/autoscaler.h"
#include "cluster-config/cluster_config.h"
#include "test_support.h"

using namespace troupe;
using namespace std::chrono_literals;

namespace {

/// A section with short, round windows: scale up above 2 waiting per serving replica or
/// 80 % KV usage, down below 0.5 requests per replica after 10 s, 5 s between decisions.
autoscale_section section_for_tests() {
  autoscale_section a;
  a.enabled = true;
  a.min_replicas = 1;
  a.max_replicas = 0;
  a.scale_up_queue = 2;
  a.scale_up_kv = 0.8;
  a.scale_down_load = 0.5;
  a.scale_down_after = 10s;
  a.cooldown = 5s;
  return a;
}

const auto t0 = std::chrono::steady_clock::time_point{} + 1h;

/// A sample at `t0 + at` with `serving` replicas serving (all of `available` allowed).
load_sample sample(std::chrono::milliseconds at, int serving, int waiting, int running, double kv = 0.1,
                   int available = 4) {
  load_sample s;
  s.at = t0 + at;
  s.serving = serving;
  s.waiting = waiting;
  s.running = running;
  s.kv_usage = kv;
  s.available = available;
  return s;
}

/// The message of the config_error `yaml` raises ("" when it parses).
std::string config_problem(const std::string& yaml) {
  try {
    parse_cluster_config(yaml, "as.yaml");
  } catch (const config_error& e) {
    return e.what();
  }
  return "";
}

const std::string four_replicas = "parallel: {replicas: 4}\nnodes: [{name: n0, devices: [cpu, cpu, cpu, cpu]}]\n";

}  // namespace

TEST_CASE("the autoscale section defaults to off with the documented values", "[autoscale]") {
  const auto a = default_cluster_config().autoscale;
  CHECK_FALSE(a.enabled);
  CHECK(a.min_replicas == 1);
  CHECK(a.max_replicas == 0);
  CHECK(a.interval == 1s);
  CHECK(a.scale_up_queue == 4);
  CHECK(a.scale_up_kv == 0.9);
  CHECK(a.scale_down_load == 0.25);
  CHECK(a.scale_down_after == 60s);
  CHECK(a.cooldown == 30s);
}

TEST_CASE("every autoscale key is read and written back to an equal config", "[autoscale]") {
  const auto c = parse_cluster_config(four_replicas + R"(autoscale:
  enabled: true
  min_replicas: 2
  max_replicas: 3
  interval: 250ms
  scale_up_queue: 1.5
  scale_up_kv: 0.75
  scale_down_load: 0.5
  scale_down_after: 2m
  cooldown: 10s
)");
  const auto& a = c.autoscale;
  CHECK(a.enabled);
  CHECK(a.min_replicas == 2);
  CHECK(a.max_replicas == 3);
  CHECK(a.interval == 250ms);
  CHECK(a.scale_up_queue == 1.5);
  CHECK(a.scale_up_kv == 0.75);
  CHECK(a.scale_down_load == 0.5);
  CHECK(a.scale_down_after == 120s);
  CHECK(a.cooldown == 10s);
  const auto back = parse_cluster_config(to_yaml(c)).autoscale;
  CHECK(back.enabled == a.enabled);
  CHECK(back.min_replicas == a.min_replicas);
  CHECK(back.max_replicas == a.max_replicas);
  CHECK(back.interval == a.interval);
  CHECK(back.scale_up_queue == a.scale_up_queue);
  CHECK(back.scale_up_kv == a.scale_up_kv);
  CHECK(back.scale_down_load == a.scale_down_load);
  CHECK(back.scale_down_after == a.scale_down_after);
  CHECK(back.cooldown == a.cooldown);
}

TEST_CASE("autoscale overrides on the command line are applied and validated", "[autoscale]") {
  auto c = parse_cluster_config(four_replicas);
  apply_overrides(c, {"autoscale.enabled=true", "autoscale.scale_down_after=2s", "autoscale.min_replicas=2"});
  CHECK(c.autoscale.enabled);
  CHECK(c.autoscale.scale_down_after == 2s);
  CHECK(c.autoscale.min_replicas == 2);
  try {
    apply_overrides(c, {"autoscale.max_replicas=5"});
    FAIL("max_replicas above parallel.replicas was accepted");
  } catch (const config_error& e) {
    CHECK(e.path == "autoscale.max_replicas");
  }
}

TEST_CASE("bad autoscale values are refused with their key path", "[autoscale]") {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"min_replicas: 0", "autoscale.min_replicas: must be >= 1"},
      {"min_replicas: 5", "autoscale.min_replicas: must be at most parallel.replicas (4)"},
      {"max_replicas: 5", "autoscale.max_replicas: must be at most parallel.replicas (4)"},
      {"max_replicas: -1", "autoscale.max_replicas: must be >= 0"},
      {"{min_replicas: 3, max_replicas: 2}", "autoscale.max_replicas: must be 0 (parallel.replicas) or at least"},
      {"interval: 0", "autoscale.interval: must be a positive duration"},
      {"scale_up_queue: 0", "autoscale.scale_up_queue: must be > 0"},
      {"scale_up_kv: 1.5", "autoscale.scale_up_kv: must be in (0, 1]"},
      {"scale_down_load: 4", "autoscale.scale_down_load: must be >= 0 and below scale_up_queue"},
      {"scale_down_after: -1", "autoscale.scale_down_after: must not be negative"},
      {"cooldown: -5", "autoscale.cooldown: must not be negative"},
      {"cooldwn: 5s", "autoscale.cooldwn: unknown key (did you mean cooldown?)"},
      {"interval: soon", "autoscale.interval: expected a duration"},
  };
  for (const auto& [body, expected] : cases) {
    INFO(body);
    const std::string yaml =
        four_replicas + "autoscale: " + (body.front() == '{' ? body : "{" + body + "}") + "\n";
    const auto problem = config_problem(yaml);
    CHECK(problem.find("as.yaml: " + expected) != std::string::npos);
  }
}

TEST_CASE("the policy starts at the most replicas allowed and keeps them under moderate load", "[autoscale]") {
  autoscale_policy p(section_for_tests(), 4);
  CHECK(p.max_replicas() == 4);
  for (int i = 0; i < 30; ++i) {
    const auto d = p.decide(sample(std::chrono::seconds(i), 4, 4, 8));  // 1 waiting, 3 in all per replica
    CHECK(d.target == 4);
    CHECK(d.direction == scale_direction::none);
  }
  auto limited = section_for_tests();
  limited.max_replicas = 2;
  autoscale_policy q(limited, 4);
  CHECK(q.max_replicas() == 2);
  CHECK(q.decide(sample(0s, 2, 0, 2)).target == 2);
}

TEST_CASE("the policy scales down one replica only after scale_down_after of low load", "[autoscale]") {
  autoscale_policy p(section_for_tests(), 4);
  CHECK(p.decide(sample(0s, 4, 0, 1)).direction == scale_direction::none);  // 0.25 per replica: low
  CHECK(p.decide(sample(9s, 4, 0, 1)).target == 4);
  const auto d = p.decide(sample(10s, 4, 0, 1));
  CHECK(d.direction == scale_direction::down);
  CHECK(d.target == 3);
  CHECK(d.reason.find("scale_down_load") != std::string::npos);
  // The next step down needs another full stretch of low load.
  CHECK(p.decide(sample(15s, 3, 0, 1)).target == 3);
  CHECK(p.decide(sample(20s, 3, 0, 1)).direction == scale_direction::down);
  CHECK(p.wanted() == 2);
}

TEST_CASE("a moment of load restarts the low-load stretch", "[autoscale]") {
  autoscale_policy p(section_for_tests(), 2);
  CHECK(p.decide(sample(0s, 2, 0, 0)).target == 2);
  CHECK(p.decide(sample(8s, 2, 0, 4)).target == 2);  // 2 per replica: not low
  CHECK(p.decide(sample(9s, 2, 0, 0)).target == 2);
  CHECK(p.decide(sample(18s, 2, 0, 0)).target == 2);  // only 9 s of low load since
  CHECK(p.decide(sample(19s, 2, 0, 0)).target == 1);
}

TEST_CASE("the policy never scales below min_replicas", "[autoscale]") {
  auto a = section_for_tests();
  a.min_replicas = 2;
  autoscale_policy p(a, 3);
  CHECK(p.decide(sample(0s, 3, 0, 0)).target == 3);
  CHECK(p.decide(sample(10s, 3, 0, 0)).target == 2);
  for (int i = 20; i < 100; i += 10) {
    const auto d = p.decide(sample(std::chrono::seconds(i), 2, 0, 0));
    CHECK(d.target == 2);
    CHECK(d.direction == scale_direction::none);
  }
}

TEST_CASE("a deep queue scales up at once, one replica per decision, with the cooldown between", "[autoscale]") {
  autoscale_policy p(section_for_tests(), 4);
  CHECK(p.decide(sample(0s, 4, 0, 0)).target == 4);
  CHECK(p.decide(sample(10s, 4, 0, 0)).target == 3);
  CHECK(p.decide(sample(20s, 3, 0, 0)).target == 2);
  CHECK(p.decide(sample(30s, 2, 0, 0)).target == 1);
  // 3 waiting on 1 serving replica > scale_up_queue 2, but 5 s (the cooldown) did not pass yet.
  CHECK(p.decide(sample(31s, 1, 3, 1)).target == 1);
  // Once it did: up at once, no stretch of load needed.
  const auto up = p.decide(sample(35s, 1, 3, 1));
  CHECK(up.direction == scale_direction::up);
  CHECK(up.target == 2);
  CHECK(up.reason.find("scale_up_queue") != std::string::npos);
  // Still over, but within the cooldown: no decision.
  CHECK(p.decide(sample(38s, 1, 6, 1)).target == 2);
  // After the cooldown: one more; the new replica is not serving yet, the queue still counts.
  CHECK(p.decide(sample(40s, 1, 6, 1)).target == 3);
  CHECK(p.decide(sample(45s, 3, 7, 6)).target == 4);
  // At the maximum: over, but no further.
  const auto at_max = p.decide(sample(50s, 4, 20, 8));
  CHECK(at_max.target == 4);
  CHECK(at_max.direction == scale_direction::none);
}

TEST_CASE("a queue at exactly scale_up_queue per replica does not scale up", "[autoscale]") {
  autoscale_policy p(section_for_tests(), 2);
  CHECK(p.decide(sample(0s, 2, 0, 0)).target == 2);
  CHECK(p.decide(sample(10s, 2, 0, 0)).target == 1);
  CHECK(p.decide(sample(20s, 1, 2, 1)).target == 1);  // 2 waiting per replica: not above 2
  CHECK(p.decide(sample(21s, 1, 3, 1)).target == 2);
}

TEST_CASE("high KV usage of the serving replicas scales up even with no queue", "[autoscale]") {
  autoscale_policy p(section_for_tests(), 2);
  CHECK(p.decide(sample(0s, 2, 0, 0)).target == 2);
  CHECK(p.decide(sample(10s, 2, 0, 0)).target == 1);
  CHECK(p.decide(sample(20s, 1, 0, 1, 0.8)).target == 1);  // at the threshold: not above
  const auto d = p.decide(sample(21s, 1, 0, 1, 0.85));
  CHECK(d.direction == scale_direction::up);
  CHECK(d.target == 2);
  CHECK(d.reason.find("KV usage 0.85 > scale_up_kv 0.80") != std::string::npos);
}

TEST_CASE("the cooldown also holds a scale-down back after a scale-up", "[autoscale]") {
  auto a = section_for_tests();
  a.scale_down_after = 1s;
  a.cooldown = 30s;
  autoscale_policy p(a, 2);
  CHECK(p.decide(sample(0s, 2, 0, 0)).target == 2);
  CHECK(p.decide(sample(1s, 2, 0, 0)).target == 1);
  CHECK(p.decide(sample(31s, 1, 5, 1)).target == 2);
  CHECK(p.decide(sample(40s, 2, 0, 0)).target == 2);
  CHECK(p.decide(sample(60s, 2, 0, 0)).target == 2);  // low for 20 s, but 29 s since the last decision
  CHECK(p.decide(sample(61s, 2, 0, 0)).target == 1);
}

TEST_CASE("the target never exceeds the replicas the devices allow, and returns with them", "[autoscale]") {
  autoscale_policy p(section_for_tests(), 4);
  // Two replicas were retired by failures: the target follows, without a decision.
  const auto d = p.decide(sample(0s, 2, 0, 4, 0.1, 2));
  CHECK(d.target == 2);
  CHECK(d.direction == scale_direction::none);
  // Over the threshold, but nothing more is available.
  CHECK(p.decide(sample(1s, 2, 9, 4, 0.1, 2)).target == 2);
  // The devices return: the wanted count (4) applies again.
  CHECK(p.decide(sample(2s, 2, 0, 4, 0.1, 4)).target == 4);
}

TEST_CASE("no serving replica means no scale-down, and a queue then counts in full", "[autoscale]") {
  autoscale_policy p(section_for_tests(), 2);
  CHECK(p.decide(sample(0s, 2, 0, 0)).target == 2);
  CHECK(p.decide(sample(10s, 2, 0, 0)).target == 1);
  for (int i = 20; i < 60; i += 10) CHECK(p.decide(sample(std::chrono::seconds(i), 0, 0, 0)).target == 1);
  CHECK(p.decide(sample(61s, 0, 3, 0)).target == 2);
}

TEST_CASE("scale directions have names for logs and metric labels", "[autoscale]") {
  CHECK(std::string(to_string(scale_direction::up)) == "up");
  CHECK(std::string(to_string(scale_direction::down)) == "down");
  CHECK(std::string(to_string(scale_direction::none)) == "none");
}

TEST_CASE("the autoscale example file loads with autoscaling on over two replicas", "[autoscale]") {
  const auto c = load_cluster_config((test::source_dir() / "cluster-config/examples/autoscale.yaml").string());
  CHECK(c.parallel.replicas == 2);
  CHECK(c.nodes.size() == 2);
  CHECK(c.autoscale.enabled);
  CHECK(c.autoscale.min_replicas == 1);
  CHECK(c.autoscale.scale_down_after == 60s);
  CHECK_NOTHROW(validate(c));
}
