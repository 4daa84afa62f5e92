// Recovery as a serving cluster sees it: kill -9 of a node under `troupe serve` while a
// client's request runs; the request and a later one get the fault-free tokens. And a
// node that the head may not restart: its shards move to a spare node's free device.
#include <signal.h>
#include <sys/wait.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <regex>
#include <sstream>
#include <thread>

#include "engine_fixture.h"
#include "tools/troupe_process.h"

using namespace troupe;
using namespace troupe::test;

namespace {

const std::string story = "Tell me a long story about a dragon.";
const std::string later = "What is the capital of France?";

/// The single engine's greedy tokens for `prompt`.
std::vector<int32_t> fault_free(const std::string& prompt, int n) {
  auto eng = make_engine();
  return eng->generate({shared_default_model()->tokenizer().encode(prompt, true, true)}, greedy(n))[0].tokens;
}

/// The pid of node `name` from the head's "node NAME starting (pid N" log line; 0 if none.
pid_t node_pid(const std::string& log, const std::string& name) {
  std::smatch m;
  const std::regex re("node " + name + R"( starting \(pid (\d+))");
  return std::regex_search(log, m, re) ? static_cast<pid_t>(std::stol(m[1])) : 0;
}

/// The tokens of the last JSON line of `path` (a `generate --output json` answer).
std::vector<int32_t> answer_tokens(const std::filesystem::path& path) {
  std::istringstream in(read_text(path));
  std::string line, last;
  while (std::getline(in, line))
    if (!line.empty()) last = line;
  return nlohmann::json::parse(last).at("tokens").get<std::vector<int32_t>>();
}

std::string generate_args(const std::string& prompt, int n) {
  return " --prompt '" + prompt + "' --temperature 0 --ignore-eos --max-tokens " + std::to_string(n) +
         " --output json";
}

/// Runs `troupe <args>` in the background with stdout to `out` and stderr to `err`.
pid_t spawn_troupe(const std::string& args, const std::filesystem::path& out, const std::filesystem::path& err) {
  return spawn_background({"/bin/sh", "-c", "exec " + troupe_exe() + " " + args + " >" + out.string() + " 2>" + err.string()},
                          err.string() + ".sh");
}

/// Under `troupe serve --config example`, kill -9 of node `victim` while a client's
/// request streams: the request ends with the fault-free tokens, the head restarted the
/// node, and a later request from a new client gets the single engine's tokens.
void check_serve_recovery(const std::string& example, const std::string& victim_node) {
  const auto expected_story = fault_free(story, 160), expected_later = fault_free(later, 16);
  const int base = reserve_ports(4);
  const auto dir = scratch_dir("serve-recovery-" + example);
  const std::string ports = " --set head.port=" + std::to_string(base) + " --set nodes[0].port=" +
                            std::to_string(base + 1) + " --set nodes[1].port=" + std::to_string(base + 2) +
                            " --set server.port=0";
  const std::string head = " --head 127.0.0.1:" + std::to_string(base);
  const pid_t serve = spawn_troupe("serve --config " + (source_dir() / "cluster-config/examples" / example).string() + ports,
                                   dir / "serve.out", dir / "serve.log");
  REQUIRE(wait_for_log(dir / "serve.log", "serving:", serve, std::chrono::seconds(120)));

  const pid_t client = spawn_troupe("generate" + head + generate_args(story, 160), dir / "story.json", dir / "story.log");
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  const pid_t victim = node_pid(read_text(dir / "serve.log"), victim_node);
  REQUIRE(victim > 0);
  const auto killed = std::chrono::steady_clock::now();
  REQUIRE(kill(victim, SIGKILL) == 0);
  // Detection: the kill -> the head's "node NAME lost after" line (polled every 10 ms).
  std::optional<std::chrono::milliseconds> detected;
  while (!detected && std::chrono::steady_clock::now() < killed + std::chrono::seconds(10)) {
    if (read_text(dir / "serve.log").find("node " + victim_node + " lost after") != std::string::npos)
      detected = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - killed);
    else
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }

  auto status = wait_exit(client, std::chrono::seconds(120));
  INFO(read_text(dir / "serve.log") << read_text(dir / "story.log"));
  REQUIRE(detected);
  WARN(example << ": kill -9 of " << victim_node << " detected after " << detected->count() << " ms");
  // The broken connection reveals a kill -9 at once: 26 to 52 ms on an idle VM
  // (docs/benchmarks.md), 123 to 277 ms with the shared 2-core VM at load 11 to 15. 500 ms
  // is about 1.8x the slowest, the margin for a head waiting for CPU, and half the 1 s
  // heartbeat deadline: a detection that fell back to the deadline fails it.
  CHECK(*detected <= std::chrono::milliseconds(500));
  REQUIRE(status);
  REQUIRE(WIFEXITED(*status));
  CHECK(WEXITSTATUS(*status) == 0);
  CHECK(answer_tokens(dir / "story.json") == expected_story);
  CHECK(read_text(dir / "serve.log").find("node " + victim_node + " restarting") != std::string::npos);

  auto r = run_troupe("generate" + head + generate_args(later, 16), dir / "later.log");
  REQUIRE(r.code == 0);
  auto j = nlohmann::json::parse(r.out);
  CHECK(j.at("tokens").get<std::vector<int32_t>>() == expected_later);

  kill(serve, SIGTERM);
  auto stopped = wait_exit(serve, std::chrono::seconds(30));
  REQUIRE(stopped);
  CHECK(WIFEXITED(*stopped));
}

}  // namespace

TEST_CASE("under troupe serve a killed stage node is replaced and a later request gets the right tokens",
          "[recovery][slow]") {
  check_serve_recovery("pipeline2.yaml", "stage1");
}

TEST_CASE("under troupe serve a killed tensor rank node is replaced and a later request gets the right tokens",
          "[recovery][slow]") {
  check_serve_recovery("tensor2.yaml", "tp1");
}

TEST_CASE("a lost node the head may not restart has its shards moved to a spare node", "[recovery][slow]") {
  const auto expected = fault_free(story, 160);
  const int base = reserve_ports(4);
  const auto dir = scratch_dir("replace-on-spare");
  const auto config = dir / "spare.yaml";
  {
    std::ofstream f(config);
    f << "model: {path: default}\n"
         "parallel: {pipeline: 2}\n"
         "head: {host: 127.0.0.1, port: " << base << "}\n"
         "nodes:\n";
    int i = 1;
    for (const char* name : {"stage0", "stage1", "spare"})
      f << "  - {name: " << name << ", host: 127.0.0.1, port: " << base + i++ << ", devices: [cpu], threads: 1}\n";
    f << "server: {port: 0}\n"
         "fault_tolerance: {max_restarts: 0}\n";
  }
  const pid_t head = spawn_troupe("generate --config " + config.string() + generate_args(story, 160), dir / "out.json",
                                  dir / "head.log");
  REQUIRE(wait_for_log(dir / "head.log", "replica 0: ready", head, std::chrono::seconds(120)));
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  const pid_t victim = node_pid(read_text(dir / "head.log"), "stage1");
  REQUIRE(victim > 0);
  REQUIRE(kill(victim, SIGKILL) == 0);

  auto status = wait_exit(head, std::chrono::seconds(120));
  const auto log = read_text(dir / "head.log");
  INFO(log);
  REQUIRE(status);
  REQUIRE(WIFEXITED(*status));
  CHECK(WEXITSTATUS(*status) == 0);
  CHECK(log.find("moves from lost node stage1 to node spare") != std::string::npos);
  CHECK(answer_tokens(dir / "out.json") == expected);
}
