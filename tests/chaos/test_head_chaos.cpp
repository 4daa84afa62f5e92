// Issue 15's head faults beyond a single kill -9 (tests/chaos/head_cluster.h: two
// `troupe serve --head-index I` heads, two `troupe node` stages that vote and keep their
// shards): the leader cut off from the network (network namespaces, tests/chaos/netns.h)
// mid-stream and healed, every head killed and started again, and the leader paused
// (SIGSTOP, 5 s and 2 s) just as two gateways' streams start. The streams of
// `troupe generate` clients and of a `troupe gateway` end with the single engine's tokens,
// a deposed leader never serves again, and no node loads its weights twice. Real
// processes, real sockets, the real SmolLM2.
#include <signal.h>

#include "chaos/head_cluster.h"
#include "chaos/http_completions.h"
#include "chaos/lab_privilege.h"

using namespace troupe;
using namespace troupe::test;
using namespace troupe::test::chaos;
using std::chrono::milliseconds;
using std::chrono::seconds;

namespace {

/// Waits for `troupe generate` client `name` and checks its tokens against `expected`,
/// and that its streams were resumed once on a new leader (they were in flight).
void check_client(const head_cluster& c, const std::string& name, pid_t pid,
                  const std::vector<std::vector<int32_t>>& expected) {
  const auto status = wait_exit(pid, seconds(300));
  INFO(c.logs());
  REQUIRE(status);
  CHECK(*status == 0);
  check_answers(c.dir() / (name + ".json"), expected, true);
  CHECK(count_of(read_text(c.dir() / (name + ".log")), "request(s) resumed on its router") == 1);
}

}  // namespace

TEST_CASE("the leading head cut off from the network mid-stream: the standby takes over, the streams resume "
          "exactly, and once the link heals the old leader stands by and never serves again",
          "[.][chaos][leadership][netns][slow]") {
  if (lab_needs_privilege()) return;
  // The leader alone in its namespace; the standby, both nodes and the clients in another.
  net_lab lab({"leader", "rest"});
  head_cluster_spec spec;
  spec.lab = &lab;
  spec.host_of = [](const std::string& who) { return who == "head0" ? "leader" : "rest"; };
  head_cluster c(spec, "head-net-cut");
  const auto prompts = fault_prompts(4);
  const auto greedy_p = fault_sampling(0.0f, 31, 96), seeded_p = fault_sampling(0.8f, 33, 96);
  const auto& greedy_expected = cached_fault_free(prompts, greedy_p);
  const auto& seeded_expected = cached_fault_free(prompts, seeded_p);
  const pid_t greedy = c.client("greedy", prompts, greedy_p), seeded = c.client("seeded", prompts, seeded_p);
  std::this_thread::sleep_for(milliseconds(2500));  // mid-stream (check_client checks they were resumed)

  const auto t0 = std::chrono::steady_clock::now();
  lab.cut("leader");
  const auto ready = wait_for_count(c.head_log(1), ": ready (", 1, seconds(60));
  INFO(c.logs());
  REQUIRE(ready);
  // Cut off, the old leader's lease ran out: it stepped down and started again as a standby.
  REQUIRE(wait_for_count(c.head_log(0), "starts again as a standby", 1, seconds(30)));
  const auto stepped = std::chrono::steady_clock::now();
  std::printf("leader cut off: head 1's replica ready %lld ms after the cut; head 0 restarted as a standby by "
              "%lld ms\n",
              elapsed_ms(t0, *ready),
              elapsed_ms(t0, stepped));
  lab.restore("leader");
  REQUIRE(wait_for_count(c.head_log(0), "follows head-1", 1, seconds(30)));
  check_client(c, "greedy", greedy, greedy_expected);
  check_client(c, "seeded", seeded, seeded_expected);
  const auto log0 = read_text(c.head_log(0));
  CHECK(count_of(log0, "stepped down from term 1") >= 1);
  CHECK(count_of(log0, "starts again as a standby") == 1);
  CHECK(count_of(log0, "head 0 leads with term") == 1);  // only before the cut
  CHECK(count_of(log0, "serving:") == 1);
  CHECK(count_of(read_text(c.head_log(1)), "head 1 leads with term") == 1);
  for (const auto& n : c.nodes())
    CHECK(count_of(read_text(c.node_log(n)), "registered with head at " + c.head_address(0)) == 1);
  check_loaded_once(c, 1);
}

TEST_CASE("every head killed and started again: the nodes keep their shards, the cluster serves again within "
          "10 s of the first head's start, and a gateway's streams open at the kill -9 end with the fault-free text",
          "[chaos][gateway][leadership][slow]") {
  head_cluster_spec spec;
  spec.gateways = 1;
  head_cluster c(spec, "heads-all-restart");
  open_streams s(c.http_port(0), 41);
  auto& w = s.wave;
  auto& all = s.all;
  const auto& expected = s.expected;
  c.signal_head(1, SIGKILL);
  c.signal_head(0, SIGKILL);
  for (const auto& n : c.nodes())
    REQUIRE(wait_for_count(c.node_log(n), "keeping 1 loaded shard(s)", 1, seconds(10)));

  const auto t0 = std::chrono::steady_clock::now();
  c.start_head(0);
  c.start_head(1);
  const auto ready = c.wait_any_head(": ready (", seconds(60));
  const auto flowing = wait_events_beyond(all, total_events(all), seconds(60));
  INFO(c.logs());
  REQUIRE(ready);
  REQUIRE(flowing);
  std::printf("every head restarted: head %d's replica ready %lld ms after the first head's start, tokens flow "
              "again %lld ms after it\n",
              ready->first, elapsed_ms(t0, ready->second),
              elapsed_ms(t0, *flowing));
  CHECK(*flowing - t0 < seconds(10));  // issue 15: serving again within 10 s of the first head's start
  check_wave(w, expected, [&] { return c.logs(); });
  CHECK(count_of(read_text(c.gateway_log(0)), "following the head: 4 request(s) resumed on its router") == 1);
  const auto leads = count_of(read_text(c.head_log(0)), "leads with term") + count_of(read_text(c.head_log(1)), "leads with term");
  CHECK(leads == 1);  // one of the new heads leads
  check_loaded_once(c, 1);
}

namespace {

/// Two gateways' streams start; at once the leading head is paused (SIGSTOP) for `pause`,
/// past its 1.5 s lease, and continued. The standby leads, every stream of both gateways
/// ends with the fault-free text, and the old leader starts again as a standby. (The
/// 200-stream acceptance run once stalled for good after a starved leader stepped down just
/// as its streams started.)
void pause_leader_as_streams_start(std::chrono::milliseconds pause, const std::string& name, uint64_t seed) {
  head_cluster_spec spec;
  spec.gateways = 2;
  head_cluster c(spec, name);
  const auto prompts = varied_prompts(16);
  const auto p = fault_sampling(0.8f, seed, 32);
  const auto expected = fault_free_texts(prompts, p);
  stream_wave w(prompts, p, {c.http_port(0), c.http_port(1)});
  std::this_thread::sleep_for(milliseconds(50));  // the first requests reach the gateways
  const auto t0 = std::chrono::steady_clock::now();
  c.signal_head(0, SIGSTOP);
  const auto led = wait_for_count(c.head_log(1), "head 1 leads with term", 1, seconds(30));
  std::this_thread::sleep_until(t0 + pause);
  c.signal_head(0, SIGCONT);
  {
    INFO(c.logs());
    REQUIRE(led);
  }
  auto all = w.all();
  const auto events_at_continue = total_events(all);
  check_wave(w, expected, [&] { return c.logs(); });
  std::printf("leader paused %lld ms as %zu streams started (%d events before it continued): head 1 led %lld ms "
              "after the pause began\n",
              static_cast<long long>(pause.count()), prompts.size(), events_at_continue, elapsed_ms(t0, *led));
  const auto log0 = read_text(c.head_log(0));
  CHECK(count_of(log0, "starts again as a standby") == 1);
  CHECK(count_of(log0, "serving:") == 1);  // it never served again
  CHECK(count_of(read_text(c.head_log(1)), "head 1 leads with term") == 1);
  check_loaded_once(c, 1);
}

}  // namespace

TEST_CASE("the leading head paused for 5 s as two gateways' streams start: the standby takes over, every stream "
          "ends with the fault-free text, and the old leader starts again as a standby",
          "[chaos][gateway][leadership][slow]") {
  pause_leader_as_streams_start(milliseconds(5000), "heads-pause-5s-at-start", 61);
}

TEST_CASE("the leading head paused for 2 s (past its lease, within the links' 3 s timeout) as two gateways' "
          "streams start: every stream ends with the fault-free text",
          "[chaos][gateway][leadership][slow]") {
  pause_leader_as_streams_start(milliseconds(2000), "heads-pause-2s-at-start", 67);
}
