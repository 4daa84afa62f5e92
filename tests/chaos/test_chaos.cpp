// Process-level chaos scenarios: a serving cluster runs many concurrent seeded requests
// while one chosen node is killed (kill -9) or frozen (SIGSTOP, past the heartbeat
// deadline) at a chosen time. Every scenario asserts 0 failed requests, outputs identical
// to the fault-free run, detection and serving-again times within bounds, and no
// leftover processes. The whole set: `troupe_tests "[chaos]"`; the CI subset:
// `troupe_tests "[chaos-ci]"` (docs/reliability.md).
#include "chaos/cluster_run.h"

using namespace troupe;
using namespace troupe::test;
using namespace troupe::test::chaos;
using std::chrono::milliseconds;

namespace {

enum class fault { kill9, sigstop };

/// The two-replica cluster file.
const std::string& replicas2_config() {
  static const std::string path = "cluster-config/examples/replicas2.yaml";
  return path;
}

/// One seeded scenario.
struct scenario {
  std::string config;               ///< cluster file under the source tree
  std::vector<std::string> nodes;   ///< its node names, in file order
  std::string victim;               ///< the node the fault hits
  fault what = fault::kill9;
  milliseconds at{2000};            ///< time from the clients' start to the fault
  size_t requests = 8;              ///< concurrent requests (one client each half, greedy and seeded)
  uint64_t seed = 1;
  int max_tokens = 64;
  std::string extra;                ///< --set flags for the cluster
  bool varied = false;              ///< prompts that share little (varied_prompts), else fault_prompts
};

/// What a scenario measured.
struct outcome {
  milliseconds detection{0};  ///< fault -> the router moves the first request off the failed replica
  milliseconds serving{0};    ///< fault -> the first moved request resumes on a ready replica
};

std::string label(const scenario& s) {
  return s.victim + (s.what == fault::kill9 ? " kill -9" : " SIGSTOP") + " at " + std::to_string(s.at.count()) + " ms";
}

/// Runs `s` and checks its invariants; returns its timings.
outcome run_scenario(const scenario& s, const std::string& dir_name) {
  const auto prompts = s.varied ? varied_prompts(s.requests / 2) : fault_prompts(s.requests / 2);
  const auto greedy_p = fault_sampling(0.0f, s.seed, s.max_tokens), seeded_p = fault_sampling(0.8f, s.seed, s.max_tokens);
  const auto& greedy_expected = cached_fault_free(prompts, greedy_p);
  const auto& seeded_expected = cached_fault_free(prompts, seeded_p);
  serve_cluster cluster(s.config, s.nodes, dir_name, s.extra, s.config == replicas2_config() ? 2 : 1);
  const auto file = write_prompts(cluster.dir() / "prompts.jsonl", prompts);
  const pid_t greedy_client = spawn_troupe("generate" + cluster.head_flag() + " --prompt-file " + file.string() +
                                               sampling_flags(greedy_p),
                                           cluster.dir() / "greedy.json", cluster.dir() / "greedy.log");
  const pid_t seeded_client = spawn_troupe("generate" + cluster.head_flag() + " --prompt-file " + file.string() +
                                               sampling_flags(seeded_p),
                                           cluster.dir() / "seeded.json", cluster.dir() / "seeded.log");
  std::this_thread::sleep_for(s.at);
  const pid_t victim = node_pid(read_text(cluster.log()), s.victim);
  REQUIRE(victim > 0);
  const auto t0 = std::chrono::steady_clock::now();
  REQUIRE(kill(victim, s.what == fault::kill9 ? SIGKILL : SIGSTOP) == 0);
  const auto detected = wait_for_any(cluster.log(), detection_marks(), std::chrono::seconds(30));
  const auto resumed = wait_for_any(cluster.log(), serving_marks(), std::chrono::seconds(60));

  auto greedy_status = wait_exit(greedy_client, std::chrono::seconds(600));
  auto seeded_status = wait_exit(seeded_client, std::chrono::seconds(600));
  INFO(label(s) << "\n" << read_text(cluster.log()) << read_text(cluster.dir() / "greedy.log")
                << read_text(cluster.dir() / "seeded.log"));
  REQUIRE(detected);
  REQUIRE(resumed);
  REQUIRE(greedy_status);
  REQUIRE(seeded_status);
  CHECK(*greedy_status == 0);
  CHECK(*seeded_status == 0);
  check_answers(cluster.dir() / "greedy.json", greedy_expected, true);
  check_answers(cluster.dir() / "seeded.json", seeded_expected, true);
  CHECK(cluster.stop());
  CHECK(cluster.processes().empty());
  if (s.what == fault::sigstop) kill(victim, SIGKILL);  // never left frozen, even when the head did not reap it
  outcome o;
  o.detection = std::chrono::duration_cast<milliseconds>(*detected - t0);
  o.serving = std::chrono::duration_cast<milliseconds>(*resumed - t0);
  const bool local = read_text(cluster.log()).find("stage-local recovery: stage") != std::string::npos;
  std::printf("chaos: %s: detection %lld ms, serving again %lld ms (%s)\n", label(s).c_str(),
              static_cast<long long>(o.detection.count()), static_cast<long long>(o.serving.count()),
              local ? "stage-local recovery" : "requests moved");
  return o;
}

/// Detection bounds. A kill -9 is found through the broken connection: 10 to 209 ms in
/// every recorded run (docs/reliability.md, "Measured", load average up to 17 on the shared
/// 2-core VM; the figure includes the test's 10 ms log polling). 500 ms is about 2.5x the
/// slowest of them, the margin for a head waiting for CPU; a detection that had fallen back
/// to the heartbeat deadline (1 s or more) fails it. A frozen process (SIGSTOP) sends
/// nothing and is found by the missing heartbeats: the deadline plus the same 500 ms.
constexpr milliseconds kill9_detection_bound{500};
constexpr milliseconds heartbeat_detection_margin{500};

const std::string replicas2 = replicas2_config();
const std::string tp2pp2 = "cluster-config/examples/tensor2_pipeline2.yaml";
const std::vector<std::string> replicas2_nodes = {"replica0", "replica1"};
const std::vector<std::string> tp2pp2_nodes = {"stage0-a", "stage0-b", "stage1-a", "stage1-b"};

}  // namespace

TEST_CASE("replicas 2: kill -9 of a replica node mid-stream loses no request and changes no token",
          "[chaos][chaos-ci][slow]") {
  scenario s{replicas2, replicas2_nodes, "replica0", fault::kill9, milliseconds(2000), 8, 11, 64, ""};
  const auto o = run_scenario(s, "chaos-replicas2-kill0");
  CHECK(o.detection <= kill9_detection_bound);
  CHECK(o.serving <= milliseconds(5000));
}

TEST_CASE("replicas 2: kill -9 of the other replica node later in the stream loses no request", "[.][chaos][slow]") {
  scenario s{replicas2, replicas2_nodes, "replica1", fault::kill9, milliseconds(4000), 12, 23, 96, ""};
  const auto o = run_scenario(s, "chaos-replicas2-kill1");
  CHECK(o.detection <= kill9_detection_bound);
  CHECK(o.serving <= milliseconds(5000));
}

TEST_CASE("replicas 2: a node frozen by SIGSTOP past the heartbeat deadline is handled like a loss",
          "[.][chaos][slow]") {
  scenario s{replicas2,   replicas2_nodes, "replica0", fault::sigstop, milliseconds(2000), 8, 31, 64,
             " --set fault_tolerance.heartbeat_timeout=1s"};
  const auto o = run_scenario(s, "chaos-replicas2-stop0");
  // A frozen process sends nothing: it is found by the missing heartbeats (1 s here).
  CHECK(o.detection <= milliseconds(1000) + heartbeat_detection_margin);
  CHECK(o.serving <= milliseconds(5000));
}

TEST_CASE("tensor 2 x pipeline 2: kill -9 of a stage-1 node loses no request and changes no token",
          "[.][chaos][slow]") {
  scenario s{tp2pp2, tp2pp2_nodes, "stage1-b", fault::kill9, milliseconds(3000), 8, 41, 48, ""};
  const auto o = run_scenario(s, "chaos-tp2pp2-kill-stage1b");
  CHECK(o.detection <= kill9_detection_bound);
  CHECK(o.serving <= milliseconds(5000));
}

TEST_CASE("acceptance: 200 concurrent streams on tensor 2 x pipeline 2 survive kill -9 of any one node",
          "[.][chaos][slow][acceptance]") {
  const std::string victim = GENERATE(as<std::string>{}, "stage0-a", "stage0-b", "stage1-a", "stage1-b");
  // kill -9 is found through the broken connection (milliseconds), not the heartbeat
  // deadline; the 3 s deadline keeps a head starved of CPU for over a second (200 streams
  // on a shared 2-core VM) from dropping its clients and healthy nodes. max_seqs = 200
  // runs all 200 streams at once (the default 32 queues the rest, and a client whose
  // requests all wait gives up after 60 s without an event): docs/reliability.md.
  scenario s{tp2pp2, tp2pp2_nodes, victim, fault::kill9, milliseconds(8000), 200, 71, 24,
             " --set fault_tolerance.heartbeat_timeout=3s --set scheduler.max_seqs=200"};
  s.varied = true;
  const auto o = run_scenario(s, "chaos-acceptance-" + victim);
  CHECK(o.detection <= kill9_detection_bound);
  CHECK(o.serving <= milliseconds(5000));
}
