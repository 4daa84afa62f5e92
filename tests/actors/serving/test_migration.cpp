// Request migration as a serving cluster sees it: with two replicas (one node each),
// kill -9 of the node serving requests mid-stream moves them to the other replica, where
// they finish with exactly the fault-free tokens; and a request that may not move again
// ends with an error that names the limit.
#include "chaos/cluster_run.h"

using namespace troupe;
using namespace troupe::test;
using namespace troupe::test::chaos;

namespace {

const std::string replicas2 = "cluster-config/examples/replicas2.yaml";

}  // namespace

TEST_CASE("kill -9 of a replica's node moves its requests to the other replica with the fault-free tokens",
          "[migration][slow]") {
  const auto prompts = fault_prompts(4);
  const auto greedy_p = fault_sampling(0.0f, 0, 96), seeded_p = fault_sampling(0.8f, 7, 96);
  const auto greedy_expected = fault_free(prompts, greedy_p), seeded_expected = fault_free(prompts, seeded_p);
  serve_cluster cluster(replicas2, {"replica0", "replica1"}, "migration", "", 2);
  const auto file = write_prompts(cluster.dir() / "prompts.jsonl", prompts);

  const pid_t greedy_client = spawn_troupe("generate" + cluster.head_flag() + " --prompt-file " + file.string() +
                                               sampling_flags(greedy_p),
                                           cluster.dir() / "greedy.json", cluster.dir() / "greedy.log");
  const pid_t seeded_client = spawn_troupe("generate" + cluster.head_flag() + " --prompt-file " + file.string() +
                                               sampling_flags(seeded_p),
                                           cluster.dir() / "seeded.json", cluster.dir() / "seeded.log");
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  const pid_t victim = node_pid(read_text(cluster.log()), "replica0");
  REQUIRE(victim > 0);
  REQUIRE(kill(victim, SIGKILL) == 0);

  auto greedy_status = wait_exit(greedy_client, std::chrono::seconds(180));
  auto seeded_status = wait_exit(seeded_client, std::chrono::seconds(180));
  const auto log_at_finish = read_text(cluster.log());
  INFO(log_at_finish << read_text(cluster.dir() / "greedy.log") << read_text(cluster.dir() / "seeded.log"));
  REQUIRE(greedy_status);
  REQUIRE(seeded_status);
  CHECK(*greedy_status == 0);
  CHECK(*seeded_status == 0);
  check_answers(cluster.dir() / "greedy.json", greedy_expected);
  check_answers(cluster.dir() / "seeded.json", seeded_expected);
  CHECK(log_at_finish.find("moves off failed replica 0") != std::string::npos);
  CHECK(log_at_finish.find("resumes on replica 1") != std::string::npos);
  // The requests did not wait for the rebuild: none resumed on the failed replica.
  CHECK(log_at_finish.find("resumes on replica 0") == std::string::npos);
  CHECK(cluster.stop());
  CHECK(cluster.processes().empty());
}

TEST_CASE("a request whose retries run out ends with an error naming fault_tolerance.request_retries",
          "[migration][slow]") {
  const auto prompts = fault_prompts(2);
  serve_cluster cluster(replicas2, {"replica0", "replica1"}, "migration-retries",
                        " --set fault_tolerance.request_retries=0", 2);
  const auto file = write_prompts(cluster.dir() / "prompts.jsonl", prompts);
  const pid_t client = spawn_troupe("generate" + cluster.head_flag() + " --prompt-file " + file.string() +
                                        sampling_flags(fault_sampling(0.0f, 0, 200)),
                                    cluster.dir() / "out.json", cluster.dir() / "client.log");
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  const pid_t victim = node_pid(read_text(cluster.log()), "replica0");
  REQUIRE(victim > 0);
  REQUIRE(kill(victim, SIGKILL) == 0);

  auto status = wait_exit(client, std::chrono::seconds(120));
  const auto client_log = read_text(cluster.dir() / "client.log");
  INFO(read_text(cluster.log()) << client_log);
  REQUIRE(status);
  CHECK(*status != 0);
  CHECK(client_log.find("replica 0 failed") != std::string::npos);
  CHECK(client_log.find("fault_tolerance.request_retries = 0") != std::string::npos);
  CHECK(cluster.stop());
  CHECK(cluster.processes().empty());
}
