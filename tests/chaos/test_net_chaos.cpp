// Network-level chaos scenarios: the head and every node run in network namespaces of
// their own (tests/chaos/netns.h), joined by a bridge; nodes are reached by their
// namespace addresses. A node's link is cut (its interface goes down) or impaired
// (latency, jitter and loss through a user-space netem link) while many seeded streaming
// requests run. Every scenario asserts 0 failed requests and outputs identical to the
// fault-free run; the cut scenario also asserts detection within the heartbeat deadline
// and, once the link is back, no split brain: the cut node's old shards are fenced (never
// serve again) and the node serves only through fresh shards. Needs root (namespaces): without
// it a case skips (tests/skip.h), and in CI (CI set) it fails instead.
// The whole set: `troupe_tests "[chaos]"`; the CI one: `troupe_tests "[chaos-ci]"`.
#include <cstdlib>
#include <memory>

#include "chaos/cluster_run.h"
#include "chaos/lab_privilege.h"

using namespace troupe;
using namespace troupe::test;
using namespace troupe::test::chaos;
using std::chrono::milliseconds;

namespace {

/// A `troupe serve` head in host "head" of `lab` and a `troupe node` per node name in
/// the host of that name; ports from reserve_ports; everything stopped at the end.
class net_cluster {
 public:
  /// Starts the head and the nodes of `config` (a cluster file under the source tree)
  /// with `extra` --set flags; waits until `replicas` replicas are ready.
  net_cluster(net_lab& lab, const std::string& config, const std::vector<std::string>& nodes,
              const std::string& dir_name, const std::string& extra, size_t replicas)
      : lab_(lab), nodes_(nodes), dir_(scratch_dir(dir_name)), base_(reserve_ports(static_cast<int>(nodes.size()) + 1)) {
    std::string sets = " --config " + (source_dir() / config).string() + " --set head.host=" + lab.ip("head") +
                       " --set head.port=" + std::to_string(base_) + " --set server.port=0";
    for (size_t i = 0; i < nodes.size(); ++i) {
      const auto at = " --set nodes[" + std::to_string(i) + "].";
      sets += at + "host=" + lab.ip(nodes[i]) + at + "port=" + std::to_string(base_ + 1 + static_cast<int>(i));
    }
    sets += extra;
    head_ = spawn_in("head", "serve" + sets, dir_ / "serve.out", log());
    for (const auto& n : nodes) node_pids_.push_back(spawn_in(n, "node --name " + n + sets, dir_ / (n + ".out"), node_log(n)));
    if (wait_for_log(log(), "serving:", head_, std::chrono::seconds(180)) &&
        wait_for_count(log(), ": ready (", replicas, std::chrono::seconds(120)))
      return;
    const auto text = read_text(log());
    stop();
    FAIL("troupe serve did not start serving in its namespace: " << text);
  }
  ~net_cluster() { stop(); }
  net_cluster(const net_cluster&) = delete;
  net_cluster& operator=(const net_cluster&) = delete;

  /// The scratch directory of this run.
  const std::filesystem::path& dir() const { return dir_; }
  /// The head's log.
  std::filesystem::path log() const { return dir_ / "serve.log"; }
  /// Node `name`'s log.
  std::filesystem::path node_log(const std::string& name) const { return dir_ / (name + ".log"); }
  /// Starts `troupe generate` in the head's namespace over `prompts` with `p`; output to
  /// <dir>/<name>.json and <dir>/<name>.log.
  pid_t client(const std::string& name, const std::filesystem::path& prompts, const sampling_params& p) {
    return spawn_in("head",
                    "generate --head " + lab_.ip("head") + ":" + std::to_string(base_) + " --prompt-file " +
                        prompts.string() + sampling_flags(p),
                    dir_ / (name + ".json"), dir_ / (name + ".log"));
  }
  /// Stops the head (SIGTERM; it stops its nodes), then any node left; true when the head
  /// exited by itself.
  bool stop() {
    if (head_ <= 0) return true;
    kill(head_, SIGTERM);
    auto st = wait_exit(head_, std::chrono::seconds(30));
    if (!st) {
      kill(-head_, SIGKILL);
      wait_exit(head_, std::chrono::seconds(5));
    }
    for (pid_t n : node_pids_) {
      if (wait_exit(n, std::chrono::seconds(5))) continue;
      kill(-n, SIGKILL);
      wait_exit(n, std::chrono::seconds(5));
    }
    node_pids_.clear();
    head_ = 0;
    return st.has_value();
  }

 private:
  pid_t spawn_in(const std::string& host, const std::string& args, const std::filesystem::path& out,
                 const std::filesystem::path& err) {
    return spawn_troupe(args, out, err, lab_.shell_prefix(host));
  }

  net_lab& lab_;
  std::vector<std::string> nodes_;
  std::filesystem::path dir_;
  int base_ = 0;
  pid_t head_ = 0;
  std::vector<pid_t> node_pids_;
};

/// One network scenario over the two-replica cluster.
struct net_scenario {
  std::map<std::string, link_impairment> impaired;  ///< user-space netem links by host
  std::string victim;                               ///< the node whose link is cut ("" = none)
  milliseconds cut_at{2000};                        ///< clients' start -> the cut
  milliseconds heal_after{0};                       ///< cut -> link back (0 = never)
  size_t requests = 8;                              ///< one client each half, greedy and seeded
  uint64_t seed = 1;
  int max_tokens = 48;
};

/// What a scenario measured.
struct net_outcome {
  milliseconds detection{0};  ///< cut -> the router moves the first request off the failed replica
  milliseconds serving{0};    ///< cut -> the first moved request resumes on a ready replica
  std::map<std::string, link_counters> links;  ///< frames of each user-space netem link
};

const std::vector<std::string> replicas2_nodes = {"replica0", "replica1"};
const std::string replicas2_file = "cluster-config/examples/replicas2.yaml";

/// Runs both clients over `prompts` and checks every answer against the fault-free tokens.
void check_wave(net_cluster& c, const std::string& wave, const std::filesystem::path& file, size_t n,
                const std::vector<pid_t>& clients, const std::vector<std::vector<int32_t>>& greedy_expected,
                const std::vector<std::vector<int32_t>>& seeded_expected) {
  for (pid_t pid : clients) {
    auto status = wait_exit(pid, std::chrono::seconds(300));
    INFO(wave << "\n" << read_text(c.log()) << read_text(c.dir() / (wave + "-greedy.log"))
              << read_text(c.dir() / (wave + "-seeded.log")));
    REQUIRE(status);
    CHECK(*status == 0);
  }
  REQUIRE(greedy_expected.size() == n);
  REQUIRE(seeded_expected.size() == n);
  INFO(wave << " prompts of " << file);
  check_answers(c.dir() / (wave + "-greedy.json"), greedy_expected, true);
  check_answers(c.dir() / (wave + "-seeded.json"), seeded_expected, true);
}

/// Starts a greedy and a seeded client for `wave`.
std::vector<pid_t> start_wave(net_cluster& c, const std::string& wave, const std::filesystem::path& file,
                              const sampling_params& greedy, const sampling_params& seeded) {
  return {c.client(wave + "-greedy", file, greedy), c.client(wave + "-seeded", file, seeded)};
}

/// Runs `s` on replicas2 in namespaces and checks its invariants; returns its timings.
net_outcome run_net_scenario(const net_scenario& s, const std::string& dir_name) {
  const auto prompts = fault_prompts(s.requests / 2);
  const auto greedy_p = fault_sampling(0.0f, s.seed, s.max_tokens), seeded_p = fault_sampling(0.8f, s.seed, s.max_tokens);
  const auto greedy_expected = fault_free(prompts, greedy_p), seeded_expected = fault_free(prompts, seeded_p);
  std::vector<std::string> hosts{"head"};
  hosts.insert(hosts.end(), replicas2_nodes.begin(), replicas2_nodes.end());
  net_lab lab(hosts, s.impaired);
  net_cluster cluster(lab, replicas2_file, replicas2_nodes, dir_name, "", 2);
  const auto file = write_prompts(cluster.dir() / "prompts.jsonl", prompts);
  auto clients = start_wave(cluster, "wave1", file, greedy_p, seeded_p);
  net_outcome o;
  if (!s.victim.empty()) {
    std::this_thread::sleep_for(s.cut_at);
    const auto t0 = std::chrono::steady_clock::now();
    lab.cut(s.victim);
    const auto detected = wait_for_any(cluster.log(), detection_marks(), std::chrono::seconds(30));
    const auto resumed = wait_for_any(cluster.log(), serving_marks(), std::chrono::seconds(60));
    INFO(read_text(cluster.log()));
    REQUIRE(detected);
    REQUIRE(resumed);
    o.detection = std::chrono::duration_cast<milliseconds>(*detected - t0);
    o.serving = std::chrono::duration_cast<milliseconds>(*resumed - t0);
    if (s.heal_after.count() > 0) {
      std::this_thread::sleep_until(t0 + s.heal_after);
      lab.restore(s.victim);
    }
  }
  check_wave(cluster, "wave1", file, prompts.size(), clients, greedy_expected, seeded_expected);
  if (s.heal_after.count() > 0) {
    // The node comes back through a fresh registration: its old shard was fenced (it never
    // serves again), the head rebuilds replica 0 on new shards, and both replicas serve.
    const auto victim_log = cluster.node_log(s.victim);
    INFO(read_text(victim_log) << read_text(cluster.log()));
    CHECK(wait_for_count(victim_log, "fenced (", 1, std::chrono::seconds(30)));
    CHECK(count_of(read_text(victim_log), "stopping 1 shard(s) of the previous registration") == 1);
    CHECK(wait_for_count(victim_log, "registered with head", 2, std::chrono::seconds(60)));
    REQUIRE(wait_for_count(cluster.log(), ": ready (", 3, std::chrono::seconds(120)));
    check_wave(cluster, "wave2", file, prompts.size(), start_wave(cluster, "wave2", file, greedy_p, seeded_p),
               greedy_expected, seeded_expected);
  }
  CHECK(cluster.stop());
  for (const auto& [host, imp] : s.impaired) {
    o.links[host] = lab.counters(host);
    std::printf("net chaos %s: link of %s forwarded %llu frames, dropped %llu\n", dir_name.c_str(), host.c_str(),
                static_cast<unsigned long long>(o.links[host].forwarded),
                static_cast<unsigned long long>(o.links[host].dropped));
  }
  std::printf("net chaos %s: detection %lld ms, serving again %lld ms\n", dir_name.c_str(),
              static_cast<long long>(o.detection.count()), static_cast<long long>(o.serving.count()));
  return o;
}

}  // namespace

TEST_CASE("the network lab builds namespaces that reach each other, cuts and restores links, and cleans up",
          "[chaos][netns]") {
  if (lab_needs_privilege()) return;
  const auto scratch = scratch_dir("netns-lab");
  std::vector<std::string> lab_namespaces;
  std::string lab_bridge;
  {
    link_impairment slow{milliseconds(20), milliseconds(5), 0.3, 7};
    net_lab lab({"a", "b", "c"}, {{"c", slow}});
    lab_namespaces = lab.namespaces();
    lab_bridge = lab.bridge();
    REQUIRE(lab_namespaces.size() == 3);
    CHECK(lab.ip("a") == "10.213.0.1");
    const auto probe = [&](const std::string& from, const std::string& to) {
      // A TCP connect through bash's /dev/tcp: "refused" (an RST) means the host answered.
      const auto r = run_command(lab.shell_prefix(from) + " timeout 2 bash -c 'exec 3<>/dev/tcp/" + lab.ip(to) +
                                     "/9' 2>&1 | grep -c refused",
                                 scratch / "probe.err");
      return r.out != "0\n";
    };
    CHECK(probe("a", "b"));
    lab.cut("b");
    CHECK_FALSE(probe("a", "b"));
    lab.restore("b");
    CHECK(probe("a", "b"));
    int answered = 0;
    for (int i = 0; i < 10; ++i) answered += probe("a", "c") ? 1 : 0;
    const auto c = lab.counters("c");
    CHECK(c.forwarded > 0);
    CHECK(c.dropped > 0);  // about a third of the frames at 30% loss
    CHECK(answered > 0);
    CHECK_THROWS_WITH(lab.ip("nobody"), Catch::Contains("no host named 'nobody'"));
  }
  // Only this lab's names are checked: other network cases may run beside this one.
  const std::string ns_list_after = run_command("ip netns list", scratch / "ip.err").out;
  for (const auto& ns : lab_namespaces) {
    INFO("namespace " << ns << " is still listed");
    CHECK(ns_list_after.find(ns + " ") == std::string::npos);
    CHECK(ns_list_after.find(ns + "\n") == std::string::npos);
  }
  CHECK(run_command("ip link show " + lab_bridge + " 2>/dev/null | wc -l", scratch / "ip.err").out == "0\n");
}

TEST_CASE("replicas 2 in namespaces: 20 ms +- 5 ms latency and 1% loss on a node's link change no token",
          "[chaos][chaos-ci][netns]") {
  if (lab_needs_privilege()) return;
  net_scenario s;
  s.impaired = {{"replica0", link_impairment{milliseconds(20), milliseconds(5), 0.01, 5}}};
  s.requests = 8;
  s.seed = 51;
  s.max_tokens = 32;
  const auto o = run_net_scenario(s, "netchaos-netem");
  CHECK(o.links.at("replica0").forwarded > 100);  // the node's traffic went through the impaired link
}

TEST_CASE("replicas 2 in namespaces: a cut link is a node loss, and when it heals the fenced node serves "
          "no stale work",
          "[.][chaos][slow][netns]") {
  if (lab_needs_privilege()) return;
  net_scenario s;
  s.victim = "replica0";
  s.cut_at = milliseconds(2000);
  s.heal_after = milliseconds(4000);
  s.requests = 8;
  s.seed = 61;
  s.max_tokens = 64;
  const auto o = run_net_scenario(s, "netchaos-cut-heal");
  // A cut link sends nothing: only the missing heartbeats (deadline 1 s) reveal it.
  CHECK(o.detection <= milliseconds(2000));
  CHECK(o.serving <= milliseconds(5000));
}
