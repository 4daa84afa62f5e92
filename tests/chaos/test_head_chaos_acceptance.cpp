// Issue 15's acceptance run with several heads (hidden: minutes on the 2-core VM; run it
// with `build/bin/troupe_tests "[heads-acceptance]"` or tools/run_hidden_tests.sh): two
// heads, two `troupe gateway` processes, four `troupe node` processes serving the default
// model as tensor 2 x pipeline 2 (tests/chaos/head_cluster.h), 200 seeded streaming HTTP
// requests spread over both gateways, and kill -9 of the leading head mid-stream. Asserts
// 0 failed requests, every text identical to the single engine's for the same seed, no
// shard loading weights again, the gateways seeing the loss and the standby leading at most
// 1 s after the kill, and tokens flowing again at most 3 s after it (docs/reliability.md has
// the measured runs: with a 1 s lease the standby led 0.90, 1.34 and 1.05 s after it; with
// the 800 ms lease of this case 0.80, 0.86 and 0.91 s).
// Real processes, real sockets, the real SmolLM2.
#include <signal.h>

#include <algorithm>

#include "chaos/head_cluster.h"
#include "chaos/http_completions.h"

using namespace troupe;
using namespace troupe::test;
using namespace troupe::test::chaos;
using std::chrono::milliseconds;
using std::chrono::seconds;

namespace {

const std::vector<std::string> tp2pp2_nodes = {"stage0-a", "stage0-b", "stage1-a", "stage1-b"};

/// Waits until both gateways logged the loss of the leader's router; when the later did.
std::optional<std::chrono::steady_clock::time_point> gateways_saw_loss(const head_cluster& c) {
  std::optional<std::chrono::steady_clock::time_point> last;
  for (int j = 0; j < 2; ++j) last = wait_for_count(c.gateway_log(j), "lost the cluster's router", 1, seconds(30));
  return last;
}

}  // namespace

TEST_CASE("acceptance with several heads: 200 streams over two gateways on tensor 2 x pipeline 2 survive kill -9 "
          "of the leading head with no failed request, no changed token and no weight loaded again",
          "[.][chaos][slow][heads-acceptance]") {
  const size_t n = 200;
  const auto prompts = varied_prompts(n);
  const auto p = fault_sampling(0.8f, 71, 32);
  const auto expected = fault_free_texts(prompts, p);  // before the cluster: minutes on 2 cores
  head_cluster_spec spec;
  spec.config = "cluster-config/examples/tensor2_pipeline2.yaml";
  spec.nodes = tp2pp2_nodes;
  spec.gateways = 2;
  // The standby leads up to one lease after the leader's last renewal, plus a campaign
  // round: an 800 ms lease keeps that under the 1 s bound (a 1 s lease did not, 1.05 s and
  // 1.34 s). Nodes and gateways see a kill -9 through the broken connection; the 3 s
  // heartbeat deadline (and 5 s connection timeout) keep a CPU-starved head from dropping
  // healthy nodes; max_seqs 200 decodes every stream at once; the nodes' compute threads
  // run at nice 10, so the heads' lease renewals and the voters' answers come first on the
  // 2-core host (docs/reliability.md).
  spec.lease_duration = "800ms";
  spec.connection_timeout = "5s";
  spec.extra = " --set fault_tolerance.heartbeat_timeout=3s --set scheduler.max_seqs=200"
               " --set fault_tolerance.compute_nice=10";
  head_cluster c(spec, "heads-acceptance");
  stream_wave w(prompts, p, {c.http_port(0), c.http_port(1)});
  auto all = w.all();
  const bool streaming = wait_streaming(all, seconds(180));
  INFO(std::count_if(all.begin(), all.end(), [](in_flight* f) { return f->events == 0; })
       << " stream(s) without an event; events so far: " << total_events(all));
  REQUIRE(streaming);
  // Mid-stream: a quarter of the tokens delivered.
  REQUIRE(wait_events_beyond(all, static_cast<int>(n) * p.max_tokens / 4, seconds(120)));
  // Head 0 still leads: a leader starved of CPU past the 1 s lease would have stepped down
  // already (then the host is too loaded for this lease, and the run measures nothing).
  REQUIRE(count_of(read_text(c.head_log(0)), "stepped down") == 0);

  const auto t0 = std::chrono::steady_clock::now();
  c.signal_head(0, SIGKILL);
  const auto seen = gateways_saw_loss(c);
  const auto led = wait_for_count(c.head_log(1), "head 1 leads with term", 1, seconds(30));
  INFO(c.logs());
  REQUIRE(seen);
  REQUIRE(led);
  const auto flowing = wait_events_beyond(all, total_events(all), seconds(60));
  REQUIRE(flowing);
  std::printf("heads acceptance: both gateways saw the loss %lld ms after the kill, head 1 leads %lld ms after it, "
              "tokens flow again %lld ms after it\n",
              elapsed_ms(t0, *seen), elapsed_ms(t0, *led), elapsed_ms(t0, *flowing));
  size_t failed = 0;
  for (size_t i = 0; i < n; ++i) {
    INFO("stream " << i << " through port " << w.port_of(i));
    const auto r = w.answer(i, seconds(300));
    failed += r.status == 200 && r.error.empty() && r.done_marker ? 0 : 1;
    check_complete(r, expected[i]);
  }
  CHECK(failed == 0);
  CHECK(*seen - t0 <= milliseconds(1000));     // the gateways saw the loss (a broken connection)
  CHECK(*led - t0 <= milliseconds(1000));      // the loss detected by the election: a standby leads
  CHECK(*flowing - t0 <= milliseconds(3000));  // tokens flowing again
  check_loaded_once(c, 1);
}
