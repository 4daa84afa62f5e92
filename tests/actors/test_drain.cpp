// Graceful drain: the router stops giving a draining replica new work
// and moves its requests at the drain deadline; a real replicas2 cluster drains a node
// while streaming requests run: every request finishes with the fault-free tokens, the
// node exits 0, /ready stays true, later requests succeed, bad drain requests are refused.
#include "actors/actor_system_config.h"
#include "actors/serving/router.h"
#include "chaos/cluster_run.h"
#include "chaos/gateway_client.h"

using namespace troupe;
using namespace troupe::test;
using namespace troupe::test::chaos;

namespace {

namespace bhttp = boost::beast::http;

const std::string replicas2 = "cluster-config/examples/replicas2.yaml";

/// A replica stand-in (dynamically typed: it answers only what the router sends it here):
/// reports ready and forwards what it receives to `observer` as (index, atom, router id,
/// emitted tokens).
caf::behavior fake_replica(caf::event_based_actor* self, int32_t index, caf::actor observer) {
  return {
      [=](generate_atom, uint64_t id, const generate_request& r, const caf::actor&) {
        self->send(observer, index, generate_atom::value, id, r.emitted);
      },
      [=](cancel_atom, uint64_t id) { self->send(observer, index, cancel_atom::value, id, std::vector<int32_t>{}); },
      [=](subscribe_atom, const caf::actor&) {},  // a cache-aware router asks for prefix summaries
      [=](status_atom) {
        replica_status s;
        s.index = index;
        s.ready = true;
        return s;
      },
  };
}

/// What a fake replica saw.
struct seen {
  int32_t replica = -1;
  bool generate = false;  ///< generate (true) or cancel (false)
  uint64_t id = 0;
  std::vector<int32_t> emitted;
};

seen next_seen(caf::scoped_actor& self) {
  seen s;
  self->receive(
      [&](int32_t index, generate_atom, uint64_t id, std::vector<int32_t>& emitted) {
        s = {index, true, id, std::move(emitted)};
      },
      [&](int32_t index, cancel_atom, uint64_t id, std::vector<int32_t>&) { s = {index, false, id, {}}; },
      caf::after(std::chrono::seconds(5)) >> [] { FAIL("no message from a fake replica within 5 s"); });
  return s;
}

router_status router_state(caf::scoped_actor& self, const router_actor& router) {
  router_status out;
  self->request(router, std::chrono::seconds(5), status_atom::value)
      .receive([&](router_status& s) { out = s; }, [](caf::error&) { FAIL("the router did not answer status"); });
  return out;
}

/// The state of node `name` in a GET /admin/nodes body ("" when absent).
std::string node_state_of(const std::string& body, const std::string& name) {
  const auto parsed = nlohmann::json::parse(body);
  for (const auto& n : parsed.at("nodes"))
    if (n.at("name") == name) return n.at("state").get<std::string>();
  return "";
}

}  // namespace

TEST_CASE("the router gives a draining replica no new request and moves its requests at the drain deadline",
          "[drain]") {
  system_config cfg(fault_tolerance_section{}, 2);
  caf::actor_system sys{cfg};
  caf::scoped_actor self{sys};
  const auto observer = caf::actor_cast<caf::actor>(self);
  std::vector<replica_actor> replicas{caf::actor_cast<replica_actor>(sys.spawn(fake_replica, 0, observer)),
                                      caf::actor_cast<replica_actor>(sys.spawn(fake_replica, 1, observer))};
  auto router = spawn_router(sys, replicas, std::chrono::seconds(30), 0);
  for (int i = 0; i < 100 && router_state(self, router).ready < 2; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  REQUIRE(router_state(self, router).ready == 2);

  generate_request req;
  req.prompt = {1, 2, 3};
  self->send(router, generate_atom::value, uint64_t{7}, req, observer);
  const auto first = next_seen(self);
  REQUIRE(first.generate);
  REQUIRE(first.replica == 0);  // least loaded, lowest index
  token_msg tok;
  tok.request = first.id;
  tok.token = 42;
  self->send(router, token_atom::value, tok);
  self->receive([](token_atom, const token_msg& m) { CHECK(m.token == 42); });

  int32_t moved = -1;
  self->request(router, std::chrono::seconds(10), drain_atom::value, std::vector<int32_t>{0},
                caf::timespan{std::chrono::milliseconds(300)})
      .receive([&](int32_t n) { moved = n; }, [](caf::error&) { FAIL("the router refused the drain"); });
  CHECK(moved == 1);
  // The drained replica's request was cancelled there and resumed on replica 1 after the
  // token its client already has (request_retries is 0: a drain move is no retry).
  std::vector<seen> after{next_seen(self), next_seen(self)};
  std::sort(after.begin(), after.end(), [](const seen& a, const seen& b) { return a.generate < b.generate; });
  CHECK_FALSE(after[0].generate);
  CHECK(after[0].replica == 0);
  CHECK(after[0].id == first.id);
  CHECK(after[1].generate);
  CHECK(after[1].replica == 1);
  CHECK(after[1].emitted == std::vector<int32_t>{42});
  CHECK(router_state(self, router).ready == 1);

  // Replica 1 now holds one request and replica 0 none: a new request still goes to 1.
  self->send(router, generate_atom::value, uint64_t{8}, req, observer);
  const auto second = next_seen(self);
  CHECK(second.generate);
  CHECK(second.replica == 1);

  // A failure (or rebuild) ends the drain: once ready again, replica 0 takes requests.
  self->send(router, ready_atom::value, int32_t{0}, false);
  self->send(router, ready_atom::value, int32_t{0}, true);
  self->send(router, generate_atom::value, uint64_t{9}, req, observer);
  const auto third = next_seen(self);
  CHECK(third.generate);
  CHECK(third.replica == 0);
  CHECK(router_state(self, router).ready == 2);

  std::string error;
  self->request(router, std::chrono::seconds(5), drain_atom::value, std::vector<int32_t>{5},
                caf::timespan{std::chrono::milliseconds(300)})
      .receive([](int32_t) {}, [&](caf::error& e) { error = sys.render(e); });
  CHECK(error.find("no replica 5") != std::string::npos);
  for (auto& r : replicas) self->send_exit(r, caf::exit_reason::user_shutdown);
  self->send_exit(router, caf::exit_reason::user_shutdown);
}

TEST_CASE("fault_tolerance.drain_timeout is read, written back and must be positive", "[drain]") {
  auto yaml = to_yaml(default_cluster_config());
  const auto at = yaml.find("drain_timeout: ");
  REQUIRE(at != std::string::npos);
  const auto end = yaml.find('\n', at);
  CHECK(parse_cluster_config(yaml.substr(0, at) + "drain_timeout: 2500ms" + yaml.substr(end), "c.yaml")
            .fault_tolerance.drain_timeout == std::chrono::milliseconds(2500));
  try {
    parse_cluster_config(yaml.substr(0, at) + "drain_timeout: 0" + yaml.substr(end), "c.yaml");
    FAIL("a zero drain_timeout was accepted");
  } catch (const std::exception& e) {
    CHECK(std::string(e.what()).find("fault_tolerance.drain_timeout") != std::string::npos);
    CHECK(std::string(e.what()).find("positive") != std::string::npos);
  }
}

TEST_CASE("draining a replica's node mid-stream keeps every request exact and the cluster serving", "[drain]") {
  const auto prompts = fault_prompts(3);
  const auto greedy_p = fault_sampling(0.0f, 0, 96), seeded_p = fault_sampling(0.8f, 7, 96);
  const auto greedy_expected = fault_free(prompts, greedy_p), seeded_expected = fault_free(prompts, seeded_p);
  const auto late_p = fault_sampling(0.0f, 0, 24);
  const std::vector<std::string> late_prompts{"Name three colours."};
  const auto late_expected = fault_free(late_prompts, late_p);
  const std::string admin = "drain-admin-key";  // server.admin_keys: /admin/* and troupe drain need it
  serve_cluster cluster(replicas2, {"replica0", "replica1"}, "drain",
                        " --set fault_tolerance.drain_timeout=300ms --set 'server.admin_keys=[" + admin + "]'", 2);
  const auto port = gateway_port(read_text(cluster.log()));
  REQUIRE(port > 0);
  const auto file = write_prompts(cluster.dir() / "prompts.jsonl", prompts);
  const auto late_file = write_prompts(cluster.dir() / "late.jsonl", late_prompts);
  const auto client = [&](const std::string& name, const std::filesystem::path& prompts_file,
                          const sampling_params& p) {
    return spawn_troupe("generate" + cluster.head_flag() + " --prompt-file " + prompts_file.string() +
                            sampling_flags(p),
                        cluster.dir() / (name + ".json"), cluster.dir() / (name + ".log"));
  };
  // Bad drain requests are refused with the reason; the cluster is untouched.
  const auto unknown = http_call(port, bhttp::verb::post, "/admin/drain", R"({"node": "replica9"})", admin);
  CHECK(unknown.status == 400);
  CHECK(unknown.body.find("unknown node 'replica9'") != std::string::npos);
  const auto no_node = http_call(port, bhttp::verb::post, "/admin/drain", R"({"replace": true})", admin);
  CHECK(no_node.status == 400);
  CHECK(no_node.body.find("missing field 'node'") != std::string::npos);
  CHECK(http_call(port, bhttp::verb::post, "/admin/drain", "not json", admin).status == 400);
  const auto cli_unknown =
      run_troupe("drain" + cluster.head_flag() + " --admin-key " + admin + " --node replica9", cluster.dir() / "bad.log");
  CHECK(cli_unknown.code == 1);
  CHECK(cli_unknown.err.find("unknown node 'replica9'") != std::string::npos);
  // From outside the head, troupe drain needs an admin key: none, or a wrong one, is refused.
  const auto no_key = run_troupe("drain" + cluster.head_flag() + " --node replica0", cluster.dir() / "nokey.log");
  CHECK(no_key.code == 1);
  CHECK(no_key.err.find("needs an admin key") != std::string::npos);
  const auto wrong_key =
      run_troupe("drain" + cluster.head_flag() + " --admin-key wrong --node replica0", cluster.dir() / "wrongkey.log");
  CHECK(wrong_key.code == 1);
  CHECK(wrong_key.err.find("not one of server.admin_keys") != std::string::npos);

  const pid_t greedy_client = client("greedy", file, greedy_p);
  const pid_t seeded_client = client("seeded", file, seeded_p);
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  const pid_t victim = node_pid(read_text(cluster.log()), "replica0");
  REQUIRE(victim > 0);

  const auto accepted = http_call(port, bhttp::verb::post, "/admin/drain", R"({"node": "replica0"})", admin);
  INFO(accepted.body);
  REQUIRE(accepted.status == 202);
  CHECK(nlohmann::json::parse(accepted.body).at("node").at("state") == "draining");
  CHECK(http_call(port, bhttp::verb::post, "/admin/drain", R"({"node": "replica0"})", admin).status == 409);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const auto queries = R"(troupe_prefix_cache_queries_total{replica="0"})";
  const double replica0_before = metric_value(http_call(port, bhttp::verb::get, "/metrics").body, queries);
  CHECK(http_call(port, bhttp::verb::get, "/ready").status == 200);
  const pid_t late_client = client("late", late_file, late_p);  // arrives while replica 0 drains
  // The CLI follows the drain in progress until the node is drained.
  const auto waited = run_troupe("drain" + cluster.head_flag() + " --admin-key " + admin + " --node replica0 --wait",
                                 cluster.dir() / "wait.log");
  INFO(waited.out << waited.err);
  CHECK(waited.code == 0);
  CHECK(waited.out.find("node replica0 is already") != std::string::npos);
  CHECK(waited.out.find("node replica0: drained") != std::string::npos);
  REQUIRE(wait_for_count(cluster.log(), "drain: node replica0 stopped", 1, std::chrono::seconds(60)));

  auto greedy_status = wait_exit(greedy_client, std::chrono::seconds(240));
  auto seeded_status = wait_exit(seeded_client, std::chrono::seconds(240));
  auto late_status = wait_exit(late_client, std::chrono::seconds(240));
  const auto later = run_troupe("generate" + cluster.head_flag() + " --prompt-file " + late_file.string() +
                                    sampling_flags(late_p),
                                cluster.dir() / "later.log");
  const auto log = read_text(cluster.log());
  INFO(log << read_text(cluster.dir() / "greedy.log") << read_text(cluster.dir() / "seeded.log"));
  REQUIRE(greedy_status);
  REQUIRE(seeded_status);
  REQUIRE(late_status);
  CHECK(*greedy_status == 0);
  CHECK(*seeded_status == 0);
  CHECK(*late_status == 0);
  check_answers(cluster.dir() / "greedy.json", greedy_expected);
  check_answers(cluster.dir() / "seeded.json", seeded_expected);
  check_answers(cluster.dir() / "late.json", late_expected);
  CHECK(later.code == 0);
  CHECK(nlohmann::json::parse(later.out).at("tokens").get<std::vector<int32_t>>() == late_expected[0]);

  // No new request reached replica 0 once it was draining; its node left with status 0
  // without counting as lost (no restart, no "lost" line), and the cluster stayed ready.
  const auto metrics = http_call(port, bhttp::verb::get, "/metrics").body;
  CHECK(metric_value(metrics, queries) == replica0_before);
  CHECK(metric_value(metrics, R"(troupe_nodes{state="drained"})") == 1);
  CHECK(metric_value(metrics, R"(troupe_nodes{state="ready"})") == 1);
  CHECK(log.find("node replica0 process " + std::to_string(victim) + " exited with status 0") != std::string::npos);
  CHECK(log.find("node replica0 lost") == std::string::npos);
  CHECK(log.find("node replica0 restarting") == std::string::npos);
  CHECK(log.find("moves off failed replica") == std::string::npos);
  // The drain deadline (300 ms) passed with requests running: they moved, and still matched.
  CHECK(log.find("moves off draining replica 0") != std::string::npos);
  CHECK(log.find("resumes on replica 1") != std::string::npos);
  CHECK(http_call(port, bhttp::verb::get, "/ready").status == 200);
  const auto nodes = http_call(port, bhttp::verb::get, "/admin/nodes", "", admin);
  INFO(nodes.body);
  CHECK(nodes.status == 200);
  CHECK(node_state_of(nodes.body, "replica0") == "drained");
  CHECK(node_state_of(nodes.body, "replica1") == "ready");
  CHECK(cluster.stop());
  CHECK(cluster.processes().empty());
}
