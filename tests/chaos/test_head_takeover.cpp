// A standby head takes over (issue 15, items 2, 3 and 5): two `troupe serve --head-index`
// processes over one cluster file with `heads:`, two `troupe node` processes (a two-stage
// pipeline of the default model over UCX) that keep their shards for
// fault_tolerance.head_grace and vote in the heads' election, and `troupe generate` clients
// that know both heads. The leader is killed (kill -9) or paused past its lease (SIGSTOP,
// then SIGCONT) mid-stream: the standby wins a later term, adopts the nodes' shards (no
// weight loaded again) and the clients' streams end with the fault-free tokens. Real
// processes, real sockets, the real SmolLM2.
#include <signal.h>

#include "chaos/cluster_run.h"
#include "chaos/gateway_client.h"

using namespace troupe;
using namespace troupe::test;
using namespace troupe::test::chaos;
using std::chrono::milliseconds;

namespace {

/// Two heads and two nodes on loopback ports, every process's log in one scratch directory.
/// Head 0 starts first and leads term 1; head 1 starts once head 0 serves, and stands by.
class two_heads {
 public:
  explicit two_heads(const std::string& name) : dir_(scratch_dir(name)), base_(reserve_ports(8)) {
    const auto port = [this](int i) { return std::to_string(base_ + i); };
    sets_ = " --config " + (source_dir() / "cluster-config/examples/pipeline2.yaml").string() +
            " --set head.port=" + port(0) + " --set heads[0].port=" + port(0) + " --set heads[0].voter_port=" +
            port(1) + " --set heads[1].port=" + port(2) + " --set heads[1].voter_port=" + port(3) +
            " --set server.port=0 --set fault_tolerance.head_grace=60s --set leadership.lease_duration=1500ms" +
            " --set fault_tolerance.connection_timeout=3s --set leadership.state_dir=" + (dir_ / "state").string();
    for (int i = 0; i < 2; ++i) {
      const auto at = " --set nodes[" + std::to_string(i) + "].";
      sets_ += at + "port=" + port(4 + 2 * i) + at + "voter_port=" + port(5 + 2 * i) + at + "launch=false";
    }
    for (const auto* n : {"stage0", "stage1"})
      pids_.push_back(spawn_troupe("node --name " + std::string(n) + sets_, dir_ / (std::string(n) + ".out"),
                                   dir_ / (std::string(n) + ".log")));
    pids_.push_back(start_head(0));
    if (!wait_for_log(head_log(0), "serving:", pids_[2], std::chrono::seconds(180)) ||
        !wait_for_count(head_log(0), ": ready (", 1, std::chrono::seconds(120)))
      FAIL("head 0 did not start serving: " << read_text(head_log(0)) << read_text(node_log(0)));
    pids_.push_back(start_head(1));
    if (!wait_for_count(head_log(1), "follows head-0", 1, std::chrono::seconds(30)))
      FAIL("head 1 did not stand by behind head 0: " << read_text(head_log(1)));
  }
  ~two_heads() {
    for (pid_t p : pids_)
      if (p > 0) kill(p, SIGKILL), wait_exit(p, std::chrono::seconds(5));
  }
  two_heads(const two_heads&) = delete;
  two_heads& operator=(const two_heads&) = delete;

  const std::filesystem::path& dir() const { return dir_; }
  std::filesystem::path head_log(int i) const { return dir_ / ("head" + std::to_string(i) + ".log"); }
  std::filesystem::path node_log(int i) const { return dir_ / ("stage" + std::to_string(i) + ".log"); }
  pid_t head_pid(int i) const { return pids_[2 + static_cast<std::size_t>(i)]; }
  /// "127.0.0.1:PORT" of head i's supervisor.
  std::string head_address(int i) const { return "127.0.0.1:" + std::to_string(base_ + 2 * i); }
  /// " --head H0,H1" for clients: they try both heads.
  std::string head_flag() const { return " --head " + head_address(0) + "," + head_address(1); }
  /// Every log, for a failure's message.
  std::string logs() const {
    std::string all;
    for (const auto* f : {"head0.log", "head1.log", "stage0.log", "stage1.log"})
      all += std::string("---- ") + f + "\n" + read_text(dir_ / f);
    return all;
  }

 private:
  pid_t start_head(int i) {
    return spawn_troupe("serve --head-index " + std::to_string(i) + sets_,
                        dir_ / ("head" + std::to_string(i) + ".out"), head_log(i));
  }

  std::filesystem::path dir_;
  int base_;
  std::string sets_;
  std::vector<pid_t> pids_;
};

/// Starts one `troupe generate` client over `prompts` (output <dir>/<name>.json).
pid_t start_client(const two_heads& c, const std::string& name, const std::vector<std::string>& prompts,
                   const sampling_params& p) {
  const auto file = write_prompts(c.dir() / (name + "-prompts.jsonl"), prompts);
  return spawn_troupe("generate" + c.head_flag() + " --prompt-file " + file.string() + sampling_flags(p),
                      c.dir() / (name + ".json"), c.dir() / (name + ".log"));
}

/// Waits for client `pid`, checks its tokens against the single engine's and that its
/// streams were in flight when the leader went (resumed once, on the new leader's router).
void check_client(const two_heads& c, const std::string& name, pid_t pid,
                  const std::vector<std::vector<int32_t>>& expected) {
  const auto status = wait_exit(pid, std::chrono::seconds(300));
  INFO(read_text(c.dir() / (name + ".log")) << c.logs());
  REQUIRE(status);
  CHECK(*status == 0);
  check_answers(c.dir() / (name + ".json"), expected, true);
  CHECK(count_of(read_text(c.dir() / (name + ".log")), "request(s) resumed on its router") == 1);
}

/// Head 1 took over: it leads a later term, the troupe_head_* metrics of its gateway say
/// so, both nodes registered with it and it adopted their shards: each node loaded its
/// weights exactly once.
void check_takeover(const two_heads& c) {
  INFO(c.logs());
  const auto log1 = read_text(c.head_log(1));
  CHECK(count_of(log1, "head 1 leads with term") == 1);
  const auto port = gateway_port(log1);
  REQUIRE(port != 0);
  const auto metrics = http_get(port, "/metrics");
  CHECK(metric_value(metrics, "troupe_head_is_leader") == 1);
  CHECK(metric_value(metrics, "troupe_head_term") >= 2);
  CHECK(metric_value(metrics, "troupe_head_takeovers_total") == 1);
  CHECK(metric_value(metrics, "troupe_head_takeover_seconds_count") == 1);
  for (int i = 0; i < 2; ++i) {
    const auto log = read_text(c.node_log(i));
    CHECK(count_of(log, ": loading") == 1);  // once, for head 0
    CHECK(count_of(log, "adopted by the new head, weights kept") == 1);
    CHECK(count_of(log, "registered with head at " + c.head_address(0) + " (term 1)") == 1);
    CHECK(count_of(log, "registered with head at " + c.head_address(1) + " (term ") == 1);
  }
}

/// Greedy and seeded streams through clients that know both heads.
struct streams {
  std::vector<std::string> prompts = fault_prompts(4);
  sampling_params greedy_p = fault_sampling(0.0f, 1, 96), seeded_p = fault_sampling(0.8f, 3, 96);
  const std::vector<std::vector<int32_t>>& greedy_expected = cached_fault_free(prompts, greedy_p);
  const std::vector<std::vector<int32_t>>& seeded_expected = cached_fault_free(prompts, seeded_p);
  pid_t greedy = 0, seeded = 0;

  void start(const two_heads& c) {
    greedy = start_client(c, "greedy", prompts, greedy_p);
    seeded = start_client(c, "seeded", prompts, seeded_p);
    // Mid-stream (check_client checks that the streams were resumed).
    std::this_thread::sleep_for(milliseconds(2500));
  }
  void check(const two_heads& c) {
    check_client(c, "greedy", greedy, greedy_expected);
    check_client(c, "seeded", seeded, seeded_expected);
  }
};

}  // namespace

TEST_CASE("kill -9 of the leading head mid-stream: the standby wins a later term, adopts the nodes' shards without "
          "loading weights, and the clients that know both heads get the fault-free tokens",
          "[chaos][leadership][slow]") {
  two_heads c("head-takeover-kill");
  streams s;
  s.start(c);
  const auto t0 = std::chrono::steady_clock::now();
  REQUIRE(kill(c.head_pid(0), SIGKILL) == 0);
  const auto ready = wait_for_count(c.head_log(1), ": ready (", 1, std::chrono::seconds(60));
  INFO(c.logs());
  REQUIRE(ready);
  std::printf("head takeover: head 1's replica ready %lld ms after the kill of head 0\n",
              static_cast<long long>(std::chrono::duration_cast<milliseconds>(*ready - t0).count()));
  s.check(c);
  check_takeover(c);
}

TEST_CASE("SIGSTOP of the leading head past its lease, then SIGCONT: the standby takes over, and the old leader "
          "stops acting and starts again as a standby, and no token is lost or duplicated",
          "[chaos][leadership][slow]") {
  two_heads c("head-takeover-stop");
  streams s;
  s.start(c);
  REQUIRE(kill(c.head_pid(0), SIGSTOP) == 0);
  const auto ready = wait_for_count(c.head_log(1), ": ready (", 1, std::chrono::seconds(60));
  INFO(c.logs());
  REQUIRE(ready);  // head 1 serves while head 0 is still paused
  REQUIRE(kill(c.head_pid(0), SIGCONT) == 0);
  // The deposed leader learns that its lease ended, and its process starts again as a
  // standby: its supervisor, router and replicas are gone, so it can do no harm.
  REQUIRE(wait_for_count(c.head_log(0), "standing by until", 2, std::chrono::seconds(20)));
  s.check(c);
  check_takeover(c);
  const auto log0 = read_text(c.head_log(0));
  CHECK(count_of(log0, "stepped down from term 1") >= 1);
  CHECK(count_of(log0, "starts again as a standby") == 1);
  CHECK(count_of(log0, "head 0 leads with term") == 1);  // only before the pause
  REQUIRE(wait_for_count(c.head_log(0), "follows head-1", 1, std::chrono::seconds(20)));
}

TEST_CASE("SIGTERM of the leading head hands the nodes over: they keep their shards, the standby adopts them, and "
          "the streams go on with the fault-free tokens",
          "[.][chaos][leadership][slow]") {
  two_heads c("head-takeover-term");
  streams s;
  s.start(c);
  REQUIRE(kill(c.head_pid(0), SIGTERM) == 0);
  const auto exited = wait_exit(c.head_pid(0), std::chrono::seconds(30));
  INFO(c.logs());
  REQUIRE(exited);
  CHECK(*exited == 0);
  REQUIRE(wait_for_count(c.head_log(1), ": ready (", 1, std::chrono::seconds(60)));
  s.check(c);
  check_takeover(c);
  CHECK(count_of(read_text(c.head_log(0)), "leaving the nodes running for the next leader") == 1);
  for (int i = 0; i < 2; ++i) CHECK(count_of(read_text(c.node_log(i)), "stopped by the head") == 0);
}
