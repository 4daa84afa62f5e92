// A running cluster answers `troupe generate --head`: under mpirun (rank 0 the head,
// ranks 1 and 2 the two pipeline stages; or, with two heads and a gateway in the file,
// ranks 0 and 1 the heads, rank 2 the gateway, ranks 3 and 4 the stages) and under a plain
// `troupe serve`; the tokens are the single-process engine's, and SIGTERM ends every
// process the cluster started.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "chaos/http_completions.h"
#include "engine_fixture.h"
#include "tools/troupe_process.h"

using namespace troupe;
using namespace troupe::test;
namespace fs = std::filesystem;

namespace {

const char* const kPrompt = "The capital of France is";

int base_port() {
  static const int base = reserve_ports(8);
  return base;
}

/// --set flags that put pipeline2.yaml's head on `port` and its nodes on the next two.
std::vector<std::string> port_overrides(int port) {
  return {"--set", "head.port=" + std::to_string(port), "--set", "nodes[0].port=" + std::to_string(port + 1),
          "--set", "nodes[1].port=" + std::to_string(port + 2),
          // The HTTP gateway on any free port: tests run side by side.
          "--set", "server.port=0"};
}

std::string pipeline2() { return (source_dir() / "cluster-config" / "examples" / "pipeline2.yaml").string(); }

/// The single-process engine's greedy answer (8 tokens, stopping at EOS like the CLI).
std::vector<int32_t> engine_tokens(const std::vector<int32_t>& prompt) {
  auto p = greedy(8);
  p.ignore_eos = false;
  return make_engine()->generate({prompt}, p)[0].tokens;
}

/// SIGKILLs whatever a failed test left running: the group of `leader` and `extra`.
struct process_cleanup {
  pid_t leader = -1;
  std::vector<pid_t> extra;
  ~process_cleanup() {
    for (pid_t p : extra)
      if (process_alive(p)) kill(p, SIGKILL);
    if (leader > 0 && process_alive(leader)) {
      kill(-leader, SIGKILL);
      wait_exit(leader, std::chrono::seconds(5));
    }
  }
};

/// Runs the client against 127.0.0.1:`port` and checks its tokens against the engine's.
void check_client(int port, const fs::path& dir, const fs::path& server_log) {
  const auto prompt = shared_default_model()->tokenizer().encode(kPrompt, true, true);
  const auto expected = engine_tokens(prompt);
  auto r = run_troupe("generate --head 127.0.0.1:" + std::to_string(port) + " --prompt '" + kPrompt +
                          "' --temperature 0 --max-tokens 8 --output json",
                      dir / "client.err");
  INFO("client stderr:\n" << r.err << "\nserver log:\n" << read_text(server_log));
  REQUIRE(r.code == 0);
  auto j = nlohmann::json::parse(r.out);
  CHECK(j.at("prompt_tokens").get<std::vector<int32_t>>() == prompt);
  CHECK(j.at("tokens").get<std::vector<int32_t>>() == expected);
  CHECK(j.at("text").get<std::string>().find("Paris") != std::string::npos);
}

/// SIGTERMs `leader`; it must exit within 30 s, and then none of `started` (nor any
/// process with `unique_arg` on its command line) may be left. Returns its wait status.
int stop_and_check(pid_t leader, const std::vector<pid_t>& started, const std::string& unique_arg,
                   const fs::path& log) {
  REQUIRE(kill(leader, SIGTERM) == 0);
  auto status = wait_exit(leader, std::chrono::seconds(30));
  INFO("server log:\n" << read_text(log));
  REQUIRE(status.has_value());
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  auto alive = [&] {
    std::vector<pid_t> left;
    for (pid_t p : started)
      if (process_alive(p)) left.push_back(p);
    return left;
  };
  while (!alive().empty() && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  CHECK(alive().empty());
  CHECK(processes_with_argument(unique_arg).empty());
  return *status;
}

}  // namespace

TEST_CASE("mpirun -np 3 serves pipeline2 to generate --head and SIGTERM leaves no process",
          "[actors][mpirun][slow]") {
  const int port = base_port();
  const auto dir = scratch_dir("mpirun");
  const auto log = dir / "mpirun.log";
  std::vector<std::string> argv{"/usr/bin/mpirun", "--allow-run-as-root", "--oversubscribe", "-np", "3",
                                troupe_exe(), "serve", "--config", pipeline2()};
  for (auto& s : port_overrides(port)) argv.push_back(s);
  // One host, no ssh needed: the rsh agent is never called for local ranks, but it must
  // name a program that exists.
  process_cleanup cleanup;
  cleanup.leader = spawn_background(argv, log, {"OMPI_MCA_plm_rsh_agent=false"});
  REQUIRE(wait_for_log(log, "supervisor listening", cleanup.leader, std::chrono::seconds(30)));
  check_client(port, dir, log);
  const auto ranks = children_of(cleanup.leader);
  cleanup.extra = ranks;
  INFO("mpirun log:\n" << read_text(log));
  CHECK(ranks.size() == 3);
  CHECK(read_text(log).find("node stage1 registered") != std::string::npos);
  stop_and_check(cleanup.leader, ranks, "head.port=" + std::to_string(port), log);
}

TEST_CASE("mpirun -np 5 maps ranks to two heads, a gateway and two pipeline stages: generate --head and the "
          "gateway's HTTP API answer alike, and SIGTERM leaves no process",
          "[actors][mpirun][slow]") {
  const int port = reserve_ports(9);
  const auto p = [port](int i) { return std::to_string(port + i); };
  const auto dir = scratch_dir("mpirun-heads");
  const auto log = dir / "mpirun.log";
  std::vector<std::string> argv{"/usr/bin/mpirun", "--allow-run-as-root", "--oversubscribe", "-np", "5",
                                troupe_exe(), "serve", "--config", pipeline2()};
  // head: first, then each heads[] entry whole (head: must equal heads[0] after every --set).
  for (const std::string& s : std::vector<std::string>{
           "head.port=" + p(0), "heads[0]={host: 127.0.0.1, port: " + p(0) + ", voter_port: " + p(1) + "}",
        "heads[1]={host: 127.0.0.1, port: " + p(2) + ", voter_port: " + p(3) + "}", "nodes[0].port=" + p(4),
        "nodes[0].voter_port=" + p(5), "nodes[1].port=" + p(6), "nodes[1].voter_port=" + p(7),
        "gateways[0]={host: 127.0.0.1, port: " + p(8) + "}", "server.port=0", "server.model_name=smol", "fault_tolerance.head_grace=60s",
        "leadership.state_dir=" + (dir / "state").string()})
    argv.insert(argv.end(), {"--set", s});
  process_cleanup cleanup;
  cleanup.leader = spawn_background(argv, log, {"OMPI_MCA_plm_rsh_agent=false"});
  REQUIRE(wait_for_log(log, "serving through the head's router", cleanup.leader, std::chrono::seconds(120)));
  const auto ranks = children_of(cleanup.leader);
  cleanup.extra = ranks;
  const auto text = read_text(log);
  INFO("mpirun log:\n" << text);
  CHECK(ranks.size() == 5);
  CHECK(chaos::count_of(text, "leads with term") == 1);
  CHECK(chaos::count_of(text, "node stage0 registered") >= 1);
  CHECK(chaos::count_of(text, "node stage1 registered") >= 1);
  const auto leader_port = chaos::count_of(text, "head 1 leads with term") == 1 ? p(2) : p(0);
  CHECK(chaos::count_of(text, "serving through the head's router at 127.0.0.1:" + leader_port) == 1);

  const auto prompt = shared_default_model()->tokenizer().encode(kPrompt, true, true);
  const auto expected = engine_tokens(prompt);
  auto r = run_troupe("generate --head 127.0.0.1:" + p(0) + ",127.0.0.1:" + p(2) + " --prompt '" + kPrompt +
                          "' --temperature 0 --max-tokens 8 --output json",
                      dir / "client.err");
  INFO("client stderr:\n" << r.err);
  REQUIRE(r.code == 0);
  const auto j = nlohmann::json::parse(r.out);
  CHECK(j.at("tokens").get<std::vector<int32_t>>() == expected);
  auto sp = greedy(8);
  sp.ignore_eos = false;
  std::atomic<int> events{0};
  const auto http = chaos::complete(static_cast<uint16_t>(port + 8), kPrompt, false, sp, events);
  INFO("HTTP error: " << http.error);
  CHECK(http.status == 200);
  CHECK(http.text == j.at("text").get<std::string>());
  stop_and_check(cleanup.leader, ranks, "head.port=" + p(0), log);
}

TEST_CASE("troupe serve answers generate --head started right after it, and SIGTERM stops its nodes",
          "[actors][mpirun][slow]") {
  const int port = base_port() + 4;
  const auto dir = scratch_dir("serve-head");
  const auto log = dir / "serve.log";
  std::vector<std::string> argv{troupe_exe(), "serve", "--config", pipeline2()};
  for (auto& s : port_overrides(port)) argv.push_back(s);
  process_cleanup cleanup;
  cleanup.leader = spawn_background(argv, log);
  // The client starts while the data plane is still coming up ("not serving yet").
  REQUIRE(wait_for_log(log, "supervisor listening", cleanup.leader, std::chrono::seconds(30)));
  check_client(port, dir, log);
  const auto nodes = children_of(cleanup.leader);
  cleanup.extra = nodes;
  CHECK(nodes.size() == 2);
  const int status = stop_and_check(cleanup.leader, nodes, "head.port=" + std::to_string(port), log);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}

TEST_CASE("generate --head names an unreachable head and rejects a malformed address", "[actors][cli]") {
  const auto dir = scratch_dir("head-errors");
  const int closed = base_port() + 7;  // nothing listens there
  auto r = run_troupe("generate --head 127.0.0.1:" + std::to_string(closed) + " --prompt hi", dir / "a.err");
  INFO(r.err);
  CHECK(r.code == 1);
  CHECK(r.err.find("head unreachable at 127.0.0.1:" + std::to_string(closed)) != std::string::npos);
  for (const std::string bad : {"localhost", "127.0.0.1:", ":7100", "127.0.0.1:http", "127.0.0.1:70000"}) {
    auto m = run_troupe("generate --head '" + bad + "' --prompt hi", dir / "b.err");
    INFO(bad << ": " << m.err);
    CHECK(m.code == 2);
    CHECK(m.err.find("--head must be HOST:PORT") != std::string::npos);
    CHECK(m.err.find("'" + bad + "'") != std::string::npos);
  }
  auto both = run_troupe("generate --head 127.0.0.1:7100 --config " + pipeline2() + " --prompt hi", dir / "c.err");
  CHECK(both.code == 2);
  CHECK(both.err.find("--head and --config cannot be combined") != std::string::npos);
}
