// Client and node timeouts apart: a head that does not run for 2 s (SIGSTOP, what a head
// starved of CPU looks like) keeps its client's connection and its nodes, and the client's
// request completes; a node that goes silent afterwards is still lost within the heartbeat
// timeout (the supervisor's application heartbeats, not CAF's long connection timeout).
#include <signal.h>
#include <sys/wait.h>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <regex>
#include <thread>

#include "engine_fixture.h"
#include "tools/troupe_process.h"

using namespace troupe;
using namespace troupe::test;
using namespace std::chrono_literals;

namespace {

/// The pid of node `name` from the head's "node NAME starting (pid N" log line; 0 if none.
pid_t logged_node_pid(const std::string& log, const std::string& name) {
  std::smatch m;
  const std::regex re("node " + name + R"( starting \(pid (\d+))");
  return std::regex_search(log, m, re) ? static_cast<pid_t>(std::stol(m[1])) : 0;
}

/// Polls `path` every 5 ms until it holds `text`; the time that took, or nullopt after `timeout`.
std::optional<std::chrono::milliseconds> time_until_logged(const std::filesystem::path& path, const std::string& text,
                                                           std::chrono::milliseconds timeout) {
  const auto t0 = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() < t0 + timeout) {
    if (read_text(path).find(text) != std::string::npos)
      return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0);
    std::this_thread::sleep_for(5ms);
  }
  return std::nullopt;
}

}  // namespace

TEST_CASE("a head stopped for 2 s keeps its client and its node, the request completes, and a silent node is "
          "still lost within the heartbeat timeout",
          "[actors][liveness]") {
  const std::string prompt = "Tell me a long story about a dragon.";
  const int n_tokens = 80;
  const int base = reserve_ports(3);
  const auto dir = scratch_dir("head-stall");
  const std::string sets = " --set head.port=" + std::to_string(base) + " --set nodes[0].port=" +
                           std::to_string(base + 1) + " --set server.port=0";
  const auto log = dir / "serve.log";
  const pid_t serve = spawn_background(
      {"/bin/sh", "-c",
       "exec " + troupe_exe() + " serve --config " + (source_dir() / "cluster-config/examples/single.yaml").string() +
           sets + " >" + (dir / "serve.out").string() + " 2>" + log.string()},
      dir / "serve.sh.log");
  REQUIRE(wait_for_log(log, "serving:", serve, std::chrono::seconds(60)));
  const pid_t node = logged_node_pid(read_text(log), "local");
  REQUIRE(node > 0);

  const pid_t client = spawn_background(
      {"/bin/sh", "-c",
       "exec " + troupe_exe() + " generate --head 127.0.0.1:" + std::to_string(base) + " --prompt '" + prompt +
           "' --temperature 0 --ignore-eos --max-tokens " + std::to_string(n_tokens) + " --output json >" +
           (dir / "answer.json").string() + " 2>" + (dir / "client.log").string()},
      dir / "client.sh.log");
  std::this_thread::sleep_for(600ms);  // connected, and the request streams
  REQUIRE(process_alive(client));
  REQUIRE(kill(serve, SIGSTOP) == 0);
  std::this_thread::sleep_for(2000ms);
  REQUIRE(kill(serve, SIGCONT) == 0);

  const auto status = wait_exit(client, std::chrono::seconds(60));
  INFO(read_text(log) << read_text(dir / "client.log"));
  REQUIRE(status);
  CHECK(WIFEXITED(*status));
  CHECK(WEXITSTATUS(*status) == 0);
  const auto answer = nlohmann::json::parse(read_text(dir / "answer.json"));
  CHECK(answer.at("tokens").size() == static_cast<size_t>(n_tokens));
  const auto after_stall = read_text(log);
  CHECK(after_stall.find("the head did not run for") != std::string::npos);
  CHECK(after_stall.find("lost after") == std::string::npos);
  CHECK(after_stall.find("restarting") == std::string::npos);

  // A node that stops answering is still found by its missing heartbeats (1 s by default).
  REQUIRE(kill(node, SIGSTOP) == 0);
  const auto lost = time_until_logged(log, "node local lost after", 5s);
  kill(node, SIGCONT);
  INFO(read_text(log));
  REQUIRE(lost);
  WARN("a silent node was lost " << lost->count() << " ms after its SIGSTOP");
  CHECK(*lost >= 800ms);   // by the heartbeat deadline, not by a broken connection
  CHECK(*lost <= 1400ms);  // the 1 s heartbeat timeout, a 50 ms sweep and scheduling on a busy machine

  kill(serve, SIGTERM);
  const auto stopped = wait_exit(serve, std::chrono::seconds(30));
  REQUIRE(stopped);
  CHECK(WIFEXITED(*stopped));
}
