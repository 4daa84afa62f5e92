// HTTP gateways apart from the head (`troupe gateway`, issue 15): the head killed under a
// gateway's open requests, and a gateway killed under its own. Real processes (`troupe
// serve`, `troupe node`, `troupe gateway`), real sockets, the default model; every answer
// is checked against the single engine's text for the same seed.
#include <signal.h>

#include "chaos/cluster_run.h"
#include "chaos/gateway_client.h"
#include "chaos/http_completions.h"

using namespace troupe;
using namespace troupe::test;
using namespace troupe::test::chaos;
using std::chrono::milliseconds;
using std::chrono::seconds;

namespace {

/// The sampling of every request here: seeded, 48 tokens.
const sampling_params sampling = fault_sampling(0.8f, 11, 48);

}  // namespace

TEST_CASE("kill -9 of the head under a gateway's open requests, then a new head: the gateway keeps every HTTP "
          "connection, resumes each request on the new head, and every answer equals the fault-free text",
          "[chaos][gateway][slow]") {
  const auto dir = scratch_dir("gateway-head-restart");
  const int base = reserve_ports(3);
  const std::string sets = " --config " + (source_dir() / "cluster-config/examples/single.yaml").string() +
                           " --set head.port=" + std::to_string(base) + " --set server.port=0" +
                           " --set server.model_name=smol --set fault_tolerance.head_grace=60s" +
                           " --set nodes[0].port=" + std::to_string(base + 1) + " --set nodes[0].launch=false" +
                           " --set gateways[0].port=" + std::to_string(base + 2);
  reaper reap;
  const pid_t node = spawn_troupe("node --name local" + sets, dir / "node.out", dir / "node.log");
  reap.pids.push_back(node);
  const pid_t head1 = spawn_troupe("serve" + sets, dir / "serve1.out", dir / "serve1.log");
  reap.pids.push_back(head1);
  const auto gateway_log = dir / "gateway.log";
  const pid_t gateway = spawn_troupe("gateway --index 0" + sets, dir / "gateway.out", gateway_log);
  reap.pids.push_back(gateway);
  INFO(read_text(dir / "serve1.log") << read_text(gateway_log));
  REQUIRE(wait_for_count(dir / "serve1.log", ": ready (", 1, seconds(120)));
  const uint16_t port = gateway_serving(gateway_log, gateway);
  REQUIRE(port == base + 2);

  // Two streamed and two whole answers, in flight through the gateway when the head dies.
  const auto prompts = fault_prompts(4);
  const auto expected = fault_free_texts(prompts, sampling);
  std::vector<in_flight> requests(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) launch_request(requests[i], port, prompts[i], i < 2, sampling);
  std::vector<in_flight*> all;
  for (auto& r : requests) all.push_back(&r);
  REQUIRE(wait_streaming(all, seconds(60)));
  const int events_at_kill = requests[0].events;
  REQUIRE(kill(head1, SIGKILL) == 0);
  REQUIRE(wait_exit(head1, seconds(10)));
  REQUIRE(wait_for_count(dir / "node.log", "keeping 1 loaded shard(s)", 1, seconds(10)));

  const pid_t head2 = spawn_troupe("serve" + sets, dir / "serve2.out", dir / "serve2.log");
  reap.pids.push_back(head2);
  for (size_t i = 0; i < requests.size(); ++i) {
    INFO("request " << i << (requests[i].stream ? " (streamed)" : " (whole)") << "\n"
                    << read_text(gateway_log) << read_text(dir / "serve2.log"));
    REQUIRE(requests[i].answer.wait_for(seconds(120)) == std::future_status::ready);
    const auto r = requests[i].answer.get();
    check_complete(r, expected[i]);
    if (requests[i].stream) CHECK(r.done_marker);
  }
  CHECK(requests[0].events > events_at_kill);  // the stream went on after the kill
  const auto log = read_text(gateway_log);
  INFO(log);
  // Every request was unfinished at the kill and resumed once, on the new head's router.
  CHECK(count_of(log, "following the head: 4 request(s) resumed on its router") == 1);
  CHECK(count_of(read_text(dir / "node.log"), ": loading") == 1);  // the weights, once
  CHECK(count_of(read_text(dir / "node.log"), "adopted by the new head, weights kept") == 1);
  kill(gateway, SIGTERM);
  CHECK(wait_exit(gateway, seconds(30)));
  kill(head2, SIGTERM);
  CHECK(wait_exit(head2, seconds(30)));
}

TEST_CASE("kill -9 of a gateway: its client gets a connection error, the head cancels that request and keeps "
          "serving its own port's clients, and a retry with the same seed gets the same text",
          "[chaos][gateway][slow]") {
  serve_cluster cluster("cluster-config/examples/single.yaml", {"local"}, "gateway-kill",
                        " --set server.model_name=smol");
  const auto head_flag = cluster.head_flag();
  const auto head_port = head_flag.substr(head_flag.rfind(':') + 1);
  const auto gateway_log = cluster.dir() / "gateway.log";
  reaper reap;
  const pid_t gateway = spawn_troupe("gateway --config " +
                                         (source_dir() / "cluster-config/examples/single.yaml").string() +
                                         " --set head.port=" + head_port +
                                         " --set server.model_name=smol --set gateways[0].port=0",
                                     cluster.dir() / "gateway.out", gateway_log);
  reap.pids.push_back(gateway);
  INFO(read_text(cluster.log()) << read_text(gateway_log));
  const uint16_t port = gateway_serving(gateway_log, gateway);
  REQUIRE(port != 0);
  const uint16_t own_port = gateway_port(read_text(cluster.log()));
  REQUIRE(own_port != 0);

  const auto prompts = fault_prompts(2);
  const auto expected = fault_free_texts(prompts, sampling);
  in_flight lost, kept;
  launch_request(lost, port, prompts[0], true, sampling);      // through the gateway that dies
  launch_request(kept, own_port, prompts[1], true, sampling);  // through the head's own port
  REQUIRE(wait_streaming({&lost, &kept}, seconds(60)));
  REQUIRE(kill(gateway, SIGKILL) == 0);
  REQUIRE(wait_exit(gateway, seconds(10)));

  REQUIRE(lost.answer.wait_for(seconds(30)) == std::future_status::ready);
  const auto dropped = lost.answer.get();
  CHECK_FALSE(dropped.error.empty());  // the connection ended before the answer did
  CHECK_FALSE(dropped.done_marker);
  REQUIRE(kept.answer.wait_for(seconds(120)) == std::future_status::ready);
  check_complete(kept.answer.get(), expected[1]);
  CHECK(wait_for_count(cluster.log(), "router: a client went away", 1, seconds(10)));
  std::atomic<int> ignored{0};
  check_complete(complete(own_port, prompts[0], false, sampling, ignored), expected[0]);  // the retry, same seed
}
