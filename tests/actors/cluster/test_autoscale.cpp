// Autoscaling end to end: a real replicas2 cluster with autoscale on
// parks its second replica when idle, restores it under a burst of requests, and every
// request gets the fault-free tokens.
#include "chaos/cluster_run.h"
#include "chaos/gateway_client.h"

using namespace troupe;
using namespace troupe::test;
using namespace troupe::test::chaos;

namespace {

/// Short windows so that the whole cycle fits in a test: a 200 ms sample, 2 s of idleness
/// parks a replica, one request waiting per serving replica asks for another; two
/// sequences per batch so that a burst queues.
const std::string autoscale_sets =
    " --set autoscale.enabled=true --set autoscale.min_replicas=1 --set autoscale.interval=200ms"
    " --set autoscale.scale_up_queue=1 --set autoscale.scale_down_load=0.5 --set autoscale.scale_down_after=2s"
    " --set autoscale.cooldown=1s --set scheduler.max_seqs=2 --set fault_tolerance.drain_timeout=5s";

}  // namespace

TEST_CASE("an idle replicas2 cluster parks a replica and a burst of requests brings it back",
          "[autoscale][slow]") {
  const auto burst = fault_prompts(8), late = fault_prompts(3);
  const auto p = fault_sampling(0.0f, 0, 32);
  const auto burst_expected = fault_free(burst, p), late_expected = fault_free(late, p);
  const auto begin = std::chrono::steady_clock::now();
  serve_cluster cluster("cluster-config/examples/replicas2.yaml", {"replica0", "replica1"}, "autoscale",
                        autoscale_sets, 2);
  const auto port = gateway_port(read_text(cluster.log()));
  REQUIRE(port > 0);

  // Idle: after scale_down_after the autoscaler wants one replica, and the manager parks
  // the highest one (drained, its shard stopped, its device free).
  const auto parked = wait_for_count(cluster.log(), "replica 1: autoscale: parked", 1, std::chrono::seconds(30));
  {
    INFO("the head's log:\n" << read_text(cluster.log()));  // (a CI run once failed here, 30 s unparked)
    REQUIRE(parked.has_value());
  }
  const auto parked_at = std::chrono::steady_clock::now();
  // The replica reports its stopped shard a moment after the parking line.
  auto metrics = http_get(port, "/metrics");
  for (int i = 0; i < 50 && metric_value(metrics, R"(troupe_capacity_replicas{state="ready"})") != 1; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    metrics = http_get(port, "/metrics");
  }
  CHECK(metric_value(metrics, "troupe_autoscale_target_replicas") == 1);
  CHECK(metric_value(metrics, R"(troupe_autoscale_decisions_total{direction="down"})") == 1);
  CHECK(metric_value(metrics, R"(troupe_capacity_replicas{state="ready"})") == 1);
  CHECK(metric_value(metrics, R"(troupe_capacity_devices{state="in_use"})") == 1);
  CHECK(count_of(read_text(cluster.log()), "autoscale: down to 1 active replica(s)") == 1);

  // A burst: eight requests on one replica that batches two queue up; the autoscaler
  // restores the parked replica on its original device.
  const auto client = [&](const std::string& name, const std::vector<std::string>& prompts) {
    const auto file = write_prompts(cluster.dir() / (name + ".jsonl"), prompts);
    return spawn_troupe("generate" + cluster.head_flag() + " --prompt-file " + file.string() + sampling_flags(p),
                        cluster.dir() / (name + ".json"), cluster.dir() / (name + ".log"));
  };
  const pid_t burst_client = client("burst", burst);
  const auto restored = wait_for_count(cluster.log(), "replica 1: ready (", 2, std::chrono::seconds(60));
  REQUIRE(restored);
  const auto queries = R"(troupe_prefix_cache_queries_total{replica="1"})";
  const double replica1_before = metric_value(http_get(port, "/metrics"), queries);
  // Requests that arrive now are spread over both replicas again.
  const pid_t late_client = client("late", late);
  const auto burst_status = wait_exit(burst_client, std::chrono::seconds(240));
  const auto late_status = wait_exit(late_client, std::chrono::seconds(240));
  const auto log = read_text(cluster.log());
  INFO(log << read_text(cluster.dir() / "burst.log") << read_text(cluster.dir() / "late.log"));
  REQUIRE(burst_status);
  REQUIRE(late_status);
  CHECK(*burst_status == 0);
  CHECK(*late_status == 0);
  check_answers(cluster.dir() / "burst.json", burst_expected);
  check_answers(cluster.dir() / "late.json", late_expected);

  metrics = http_get(port, "/metrics");
  CHECK(metric_value(metrics, queries) > replica1_before);
  CHECK(metric_value(metrics, R"(troupe_autoscale_decisions_total{direction="up"})") >= 1);
  CHECK(log.find("autoscale: up to 2 active replica(s)") != std::string::npos);
  CHECK(log.find("replica 1: autoscale: restoring it (tensor 1 x pipeline 1) on s0r0 on replica1 (cpu)") !=
        std::string::npos);
  CHECK(log.find("moves off failed replica") == std::string::npos);
  CHECK(log.find("replica 1: its shards are stopped on purpose (parked)") != std::string::npos);
  CHECK(log.find("replica 1: shard 0 is down") == std::string::npos);  // a park is not a failure
  CHECK(metric_value(metrics, R"(troupe_shard_failures_total{replica="1"})") <= 0);
  CHECK(log.find("node replica1 lost") == std::string::npos);
  const auto ms = [](auto d) { return std::chrono::duration_cast<std::chrono::milliseconds>(d).count(); };
  WARN("autoscale cycle: parked " << ms(parked_at - begin) << " ms after start, restored "
                                  << ms(*restored - parked_at) << " ms after parking");
  CHECK(cluster.stop());
  CHECK(cluster.processes().empty());
}
