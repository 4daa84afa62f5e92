// Elastic capacity: the plans a replica may take over the devices left,
// and, over real processes, a four-node cluster that loses a node for good (no free
// device to move to), keeps serving with a smaller replica, and gets its full plan back
// when the node is started again by hand.
#include "actors/cluster/replan.h"
#include "chaos/cluster_run.h"
#include "chaos/gateway_client.h"

using namespace troupe;
using namespace troupe::test;
using namespace troupe::test::chaos;

namespace {

const std::string elastic_example = "cluster-config/examples/replicas2_pipeline2.yaml";
const std::vector<std::string> elastic_nodes = {"node-a", "node-b", "node-c", "node-d"};

/// Four nodes with one CPU device each, as in replicas2_pipeline2.yaml.
cluster_config four_nodes() {
  cluster_config c;
  c.parallel.pipeline = 2;
  c.parallel.replicas = 2;
  for (const char* name : {"a", "b", "c", "d"}) c.nodes.push_back({name, "127.0.0.1", 0, {"cpu"}, 1});
  return c;
}

/// The head's /metrics text (its HTTP port from the "http: listening on" log line).
std::string scrape(const serve_cluster& cluster) {
  const auto port = gateway_port(read_text(cluster.log()));
  REQUIRE(port > 0);
  return http_get(port, "/metrics");
}

/// Polls /metrics until `series` equals `value` (or `timeout`); true when it did.
bool wait_for_metric(const serve_cluster& cluster, const std::string& series, double value,
                     std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (metric_value(scrape(cluster), series) == value) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

/// Runs the prompts of `file` through a client of `cluster` and checks every answer
/// against `expected`.
void check_requests(const serve_cluster& cluster, const std::filesystem::path& file, const sampling_params& p,
                    const std::vector<std::vector<int32_t>>& expected, const std::string& name) {
  const auto r = run_troupe("generate" + cluster.head_flag() + " --prompt-file " + file.string() + sampling_flags(p),
                            cluster.dir() / (name + ".log"));
  INFO(name << ": " << read_text(cluster.dir() / (name + ".log")));
  REQUIRE(r.code == 0);
  std::ofstream(cluster.dir() / (name + ".json")) << r.out;
  const auto answers = read_answers(cluster.dir() / (name + ".json"));
  REQUIRE(answers.size() == expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    INFO("prompt " << i);
    CHECK(answers[i].finish_reason == "length");
    CHECK(answers[i].tokens == expected[i]);
  }
}

/// Milliseconds from `t` to now.
int64_t ms_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t).count();
}

}  // namespace

TEST_CASE("a replica re-plans to the largest shape the devices left and the heads admit", "[elastic][slow]") {
  const auto& m = shared_default_model()->config();  // 9 heads, 3 kv heads, 30 layers
  CHECK(plan_for_devices(m, {2, 2}, true, 4) == replica_plan{2, 2});
  CHECK(plan_for_devices(m, {2, 2}, true, 3) == replica_plan{1, 2});  // a tie goes to the pipeline
  CHECK(plan_for_devices(m, {2, 2}, false, 4) == replica_plan{1, 2});  // 2 divides neither 9 nor 3 heads
  CHECK(plan_for_devices(m, {3, 1}, false, 3) == replica_plan{3, 1});
  CHECK(plan_for_devices(m, {3, 1}, false, 2) == replica_plan{1, 1});
  CHECK(plan_for_devices(m, {1, 2}, false, 1) == replica_plan{1, 1});
  CHECK_FALSE(plan_for_devices(m, {1, 2}, false, 0).has_value());
  CHECK(describe(replica_plan{2, 1}) == "tensor 2 x pipeline 1");
}

TEST_CASE("a re-planned pipeline is balanced by parameters instead of the file's layers_per_stage", "[elastic][slow]") {
  auto c = four_nodes();
  c.parallel.layers_per_stage = {10, 20};
  const auto same = config_for_plan(c, {1, 2});
  CHECK(same.parallel.layers_per_stage == std::vector<int>{10, 20});
  const auto smaller = config_for_plan(c, {1, 1});
  CHECK(smaller.parallel.pipeline == 1);
  CHECK(smaller.parallel.tensor == 1);
  CHECK(smaller.parallel.layers_per_stage.empty());
  const auto spec = make_shard_spec(smaller, shared_default_model()->config(), {0, 0, 0, "a", "cpu"});
  CHECK(spec.n_stages == 1);
  CHECK(spec.layers.begin == 0);
  CHECK(spec.layers.end == 30);
}

TEST_CASE("a replica may take its own devices on registered nodes and free ones, never another replica's",
          "[elastic]") {
  const auto c = four_nodes();
  const auto original = plan_placement(c);  // replica 0 on a, b; replica 1 on c, d
  using devs = std::vector<node_device>;
  CHECK(devices_for_replica(c, 0, original, original, {"a", "c", "d"}) == devs{{"a", "cpu"}});
  CHECK(devices_for_replica(c, 0, original, original, {"a", "b", "c", "d"}) == devs{{"a", "cpu"}, {"b", "cpu"}});
  CHECK(devices_for_replica(c, 1, original, original, {"a", "c", "d"}) == devs{{"c", "cpu"}, {"d", "cpu"}});
  // Replica 0 re-planned onto a alone: b, back again, is free for it and for nobody else.
  std::vector<shard_slot> current{{0, 0, 0, "a", "cpu"}, original[2], original[3]};
  CHECK(devices_for_replica(c, 0, current, original, {"a", "b", "c", "d"}) == devs{{"a", "cpu"}, {"b", "cpu"}});
  CHECK(devices_for_replica(c, 1, current, original, {"a", "b", "c", "d"}) ==
        devs{{"c", "cpu"}, {"d", "cpu"}, {"b", "cpu"}});
  const auto slots = slots_for_plan(0, {1, 2}, {{"a", "cpu"}, {"b", "cpu"}});
  REQUIRE(slots.size() == 2);
  CHECK(slots[1].stage == 1);
  CHECK(slots[1].node == "b");
  CHECK_THROWS_WITH(slots_for_plan(0, {1, 2}, {{"a", "cpu"}}),
                    Catch::Contains("tensor 1 x pipeline 2 needs 2 devices, only 1 are free"));
}

TEST_CASE("the four-node elastic example is two pipeline-2 replicas, one shard per node", "[elastic]") {
  const auto c = load_cluster_config((source_dir() / elastic_example).string());
  CHECK_NOTHROW(validate(c));
  CHECK(full_plan(c) == replica_plan{1, 2});
  CHECK(c.parallel.replicas == 2);
  const auto slots = plan_placement(c);
  REQUIRE(slots.size() == 4);
  CHECK(slots[1].node == "node-b");
  CHECK(slots[1].replica == 0);
  CHECK(slots[1].stage == 1);
}

TEST_CASE("a node lost for good shrinks its replica, service goes on, and the node's return restores the plan",
          "[elastic][chaos][slow]") {
  const auto prompts = fault_prompts(4);
  const auto p = fault_sampling(0.0f, 0, 32);
  const auto expected = fault_free(prompts, p);
  serve_cluster cluster(elastic_example, elastic_nodes, "elastic", " --set fault_tolerance.max_restarts=0", 2);
  const auto file = write_prompts(cluster.dir() / "prompts.jsonl", prompts);
  const std::string replicas_full = "troupe_capacity_replicas{state=\"full\"}";
  const std::string devices_in_use = "troupe_capacity_devices{state=\"in_use\"}";
  REQUIRE(wait_for_metric(cluster, replicas_full, 2, std::chrono::seconds(10)));
  CHECK(metric_value(scrape(cluster), devices_in_use) == 4);

  // Loss: node-b (stage 1 of replica 0) is killed while a client streams, and not restarted.
  const pid_t client = spawn_troupe("generate" + cluster.head_flag() + " --prompt-file " + file.string() +
                                        sampling_flags(p),
                                    cluster.dir() / "during.json", cluster.dir() / "during.log");
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));
  const pid_t victim = node_pid(read_text(cluster.log()), "node-b");
  REQUIRE(victim > 0);
  REQUIRE(kill(victim, SIGKILL) == 0);
  const auto lost_at = std::chrono::steady_clock::now();
  const bool reduced = wait_for_count(cluster.log(), "replica 0: ready (1 shards)", 1, std::chrono::seconds(60)).has_value();
  const auto reduced_ms = ms_since(lost_at);
  auto status = wait_exit(client, std::chrono::seconds(120));
  INFO(read_text(cluster.log()) << read_text(cluster.dir() / "during.log"));
  REQUIRE(reduced);
  REQUIRE(status);
  CHECK(*status == 0);
  const auto during = read_answers(cluster.dir() / "during.json");
  REQUIRE(during.size() == prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) CHECK(during[i].tokens == expected[i]);
  const auto after_loss = scrape(cluster);
  CHECK(metric_value(after_loss, devices_in_use) == 3);
  CHECK(metric_value(after_loss, replicas_full) == 1);
  CHECK(metric_value(after_loss, "troupe_capacity_replicas{state=\"ready\"}") == 2);
  CHECK(read_text(cluster.log()).find("re-planned from tensor 1 x pipeline 2 to tensor 1 x pipeline 1") !=
        std::string::npos);
  check_requests(cluster, file, p, expected, "reduced");

  // Rejoin: node-b started by hand with the head's settings; replica 0 gets two stages back.
  const int head_port = std::stoi(cluster.head_flag().substr(cluster.head_flag().rfind(':') + 1));
  std::string sets = " --set head.port=" + std::to_string(head_port) + " --set server.port=0" +
                     " --set fault_tolerance.max_restarts=0";
  for (size_t i = 0; i < elastic_nodes.size(); ++i)
    sets += " --set nodes[" + std::to_string(i) + "].port=" + std::to_string(head_port + 1 + static_cast<int>(i));
  const auto rejoin_at = std::chrono::steady_clock::now();
  const pid_t node_b = spawn_troupe("node --config " + (source_dir() / elastic_example).string() + " --name node-b" + sets,
                                    cluster.dir() / "node-b.out", cluster.dir() / "node-b.log");
  const bool restored = wait_for_count(cluster.log(), "replica 0: ready (2 shards)", 2, std::chrono::seconds(60)).has_value();
  const auto restored_ms = ms_since(rejoin_at);
  INFO(read_text(cluster.log()) << read_text(cluster.dir() / "node-b.log"));
  REQUIRE(restored);
  const auto after_rejoin = scrape(cluster);
  CHECK(metric_value(after_rejoin, replicas_full) == 2);
  CHECK(metric_value(after_rejoin, devices_in_use) == 4);
  CHECK(read_text(cluster.log()).find("replica 0: capacity returns: re-planned from tensor 1 x pipeline 1 to tensor 1 x "
                                      "pipeline 2") != std::string::npos);
  check_requests(cluster, file, p, expected, "restored");
  WARN("loss -> serving at reduced capacity: " << reduced_ms << " ms; rejoin -> full capacity: " << restored_ms
                                               << " ms");
  CHECK(cluster.stop());
  CHECK(wait_exit(node_b, std::chrono::seconds(30)).has_value());
  CHECK(cluster.processes().empty());
}
