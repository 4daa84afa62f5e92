// The replicated head state in real processes (issue 15 item 5): a placement that differs
// from the cluster file's (node-a drained with replace: replica 0's shard moved to node-b)
// is recorded by the leader, saved in its leadership.state_dir and sent to the standby's
// state replica; a standby that takes over after kill -9 of the leader, and the only head
// started again after kill -9 (a cold restart), start from that state: they keep the shard
// on node-b, wait for no drained node, and adopt the shard node-b kept (no weight loaded
// again). Placing from the file would put the shard on node-a, which is gone: such a head
// never serves. Two `troupe node` processes (one CPU device each), `troupe serve` heads.
#include <signal.h>

#include <fstream>

#include "actors/leadership/head_state_store.h"
#include "chaos/cluster_run.h"
#include "tools/troupe_process.h"

using namespace troupe;
using namespace troupe::test;
using namespace troupe::test::chaos;
using std::chrono::milliseconds;
using std::chrono::seconds;

namespace {

const std::string admin_key = "state-admin-key";

/// One replica of one shard, node-a and node-b with one CPU device each (the file places
/// the shard on node-a), nodes started apart that keep their shards for 60 s, and the
/// heads' `heads_yaml` (a `head:` or a `heads:` list) with their state under `dir`/state.
std::filesystem::path write_cluster(const std::filesystem::path& dir, int base, const std::string& heads_yaml,
                                    const std::string& node_b_extra, const std::string& leadership_extra) {
  const auto path = dir / "cluster.yaml";
  std::ofstream(path) << "model:\n  path: default\n"
                      << "parallel:\n  tensor: 1\n  pipeline: 1\n  replicas: 1\n"
                      << heads_yaml << "nodes:\n"
                      << "  - {name: node-a, host: 127.0.0.1, port: " << base + 1 << ", devices: [cpu], launch: false}\n"
                      << "  - {name: node-b, host: 127.0.0.1, port: " << base + 2
                      << ", devices: [cpu], launch: false" << node_b_extra << "}\n"
                      << "server:\n  host: 127.0.0.1\n  port: 0\n  admin_keys: [" << admin_key << "]\n"
                      << "fault_tolerance:\n  head_grace: 60s\n  drain_timeout: 300ms\n"
                      << "leadership:\n  lease_duration: 1500ms\n  state_dir: " << (dir / "state").string() << "\n"
                      << leadership_extra;
  return path;
}

/// Kills whatever is left of the test's processes.
struct reaper {
  std::vector<pid_t> pids;
  ~reaper() {
    for (pid_t p : pids)
      if (p > 0) kill(p, SIGKILL), wait_exit(p, seconds(5));
  }
};

/// Drains node-a with replace through the head at `head` and waits until `log` shows
/// replica 0 ready again (its shard re-placed on node-b).
void drain_node_a(const std::filesystem::path& dir, const std::string& head, const std::filesystem::path& log) {
  const auto r = run_troupe("drain --head " + head + " --admin-key " + admin_key + " --node node-a --replace --wait",
                            dir / "drain.log");
  INFO(r.out << r.err << read_text(log));
  REQUIRE(r.code == 0);
  REQUIRE(wait_for_count(log, "shard s0r0 moves from lost node node-a to node node-b", 1, seconds(30)));
  REQUIRE(wait_for_count(log, "replica 0: ready (", 2, seconds(60)));
}

/// Polls the store in `state` until it places replica 0's shard on node-b (or 15 s).
std::optional<head_state> wait_for_moved_state(const std::filesystem::path& state) {
  for (int i = 0; i < 150; ++i) {
    try {
      if (auto loaded = head_state_store({state}).load())
        if (loaded->state.replicas.size() == 1 && loaded->state.replicas[0].shards.size() == 1 &&
            loaded->state.replicas[0].shards[0].node == "node-b")
          return loaded->state;
    } catch (const std::exception&) {  // a save in progress on another file system view: look again
    }
    std::this_thread::sleep_for(milliseconds(100));
  }
  return std::nullopt;
}

/// node-b loaded its weights once (for the rebuild after the drain) and the new head
/// adopted that shard; node-a loaded once and is gone (drained).
void check_adopted(const std::filesystem::path& dir) {
  const auto b = read_text(dir / "node-b.log");
  INFO(b);
  CHECK(count_of(b, ": loading") == 1);
  CHECK(count_of(b, "adopted by the new head, weights kept") == 1);
  CHECK(count_of(read_text(dir / "node-a.log"), ": loading") == 1);
  CHECK(count_of(read_text(dir / "node-a.log"), "stopped by the head") == 1);
}

}  // namespace

TEST_CASE("a cold restart of the only head reads its state_dir and keeps the placement it left: the moved shard is "
          "adopted on node-b, no weight is loaded again",
          "[chaos][head-state]") {
  const auto dir = scratch_dir("head-state-restart");
  const int base = reserve_ports(3);
  const auto file = write_cluster(dir, base, "head: {host: 127.0.0.1, port: " + std::to_string(base) + "}\n", "",
                                  "  single_head_state: true\n");
  const std::string sets = " --config " + file.string();
  reaper reap;
  for (const auto* n : {"node-a", "node-b"})
    reap.pids.push_back(spawn_troupe(std::string("node --name ") + n + sets, dir / (std::string(n) + ".out"),
                                     dir / (std::string(n) + ".log")));
  const auto log1 = dir / "serve1.log";
  const pid_t head1 = spawn_troupe("serve" + sets, dir / "serve1.out", log1);
  reap.pids.push_back(head1);
  INFO(read_text(log1));
  REQUIRE(wait_for_count(log1, "replica 0: ready (", 1, seconds(120)));
  drain_node_a(dir, "127.0.0.1:" + std::to_string(base), log1);
  const auto saved = wait_for_moved_state(dir / "state");
  REQUIRE(saved);
  CHECK(saved->term == 0);
  REQUIRE(saved->members.size() == 2);
  REQUIRE(saved->members[0].drain);
  CHECK(saved->members[0].drain->done);

  REQUIRE(kill(head1, SIGKILL) == 0);
  REQUIRE(wait_exit(head1, seconds(10)));
  REQUIRE(wait_for_count(dir / "node-b.log", "keeping 1 loaded shard(s)", 1, seconds(10)));
  const auto log2 = dir / "serve2.log";
  const auto t0 = std::chrono::steady_clock::now();
  const pid_t head2 = spawn_troupe("serve" + sets, dir / "serve2.out", log2);
  reap.pids.push_back(head2);
  const auto ready = wait_for_count(log2, "replica 0: ready (", 1, seconds(30));
  INFO(read_text(log2) << read_text(dir / "node-b.log"));
  REQUIRE(ready);
  std::printf("head state: the restarted head's replica ready %lld ms after its start\n",
              static_cast<long long>(std::chrono::duration_cast<milliseconds>(*ready - t0).count()));
  CHECK(count_of(read_text(log2), "placement: from the head state of term 0") == 1);
  check_adopted(dir);
  kill(head2, SIGTERM);
  CHECK(wait_exit(head2, seconds(30)));
}

TEST_CASE("a standby that takes over after kill -9 of the leader starts from the state the leader sent it: the "
          "moved shard stays on node-b and is adopted, no weight is loaded again",
          "[chaos][head-state]") {
  const auto dir = scratch_dir("head-state-takeover");
  const int base = reserve_ports(9);
  const auto port = [&](int i) { return std::to_string(base + i); };
  const std::string heads = "heads:\n  - {host: 127.0.0.1, port: " + port(0) + ", voter_port: " + port(3) +
                            ", state_port: " + port(4) + "}\n  - {host: 127.0.0.1, port: " + port(5) +
                            ", voter_port: " + port(6) + ", state_port: " + port(7) + "}\n";
  const auto file = write_cluster(dir, base, heads, ", voter_port: " + port(8), "");
  const std::string sets = " --config " + file.string();
  reaper reap;
  for (const auto* n : {"node-a", "node-b"})
    reap.pids.push_back(spawn_troupe(std::string("node --name ") + n + sets, dir / (std::string(n) + ".out"),
                                     dir / (std::string(n) + ".log")));
  const auto log0 = dir / "head0.log", log1 = dir / "head1.log";
  const pid_t head0 = spawn_troupe("serve --head-index 0" + sets, dir / "head0.out", log0);
  reap.pids.push_back(head0);
  INFO(read_text(log0));
  REQUIRE(wait_for_count(log0, "leads with term", 1, seconds(30)));
  const pid_t head1 = spawn_troupe("serve --head-index 1" + sets, dir / "head1.out", log1);
  reap.pids.push_back(head1);
  REQUIRE(wait_for_count(log0, "replica 0: ready (", 1, seconds(120)));
  REQUIRE(wait_for_count(log1, "state replica of heads[1] listening", 1, seconds(30)));
  drain_node_a(dir, "127.0.0.1:" + port(0), log0);
  // The standby holds the moved placement before the leader dies.
  const auto held = wait_for_moved_state(dir / "state" / "head-1");
  REQUIRE(held);
  CHECK(held->term >= 1);

  REQUIRE(kill(head0, SIGKILL) == 0);
  REQUIRE(wait_exit(head0, seconds(10)));
  const auto t0 = std::chrono::steady_clock::now();
  const auto ready = wait_for_count(log1, "replica 0: ready (", 1, seconds(30));
  INFO(read_text(log1) << read_text(dir / "node-b.log"));
  REQUIRE(ready);
  std::printf("head state: the standby's replica ready %lld ms after the kill\n",
              static_cast<long long>(std::chrono::duration_cast<milliseconds>(*ready - t0).count()));
  CHECK(count_of(read_text(log1), "placement: from the head state of term " + std::to_string(held->term)) == 1);
  check_adopted(dir);
  // The new leader continues the sequence under its own term in its store.
  kill(head1, SIGTERM);
  CHECK(wait_exit(head1, seconds(30)));
  const auto after = head_state_store({dir / "state" / "head-1"}).load();
  REQUIRE(after);
  CHECK(after->state.term > held->term);  // node-b registered with the new leader: a change of its term
  CHECK(after->state.sequence > held->sequence);
}
