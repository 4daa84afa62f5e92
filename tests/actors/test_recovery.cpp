// kill -9 of a node process while a request runs: the head stays up, the replica gets
// new shards, and the request ends with exactly the tokens of a run without failure.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <thread>

#include "engine_fixture.h"

using namespace troupe;
using namespace troupe::test;

namespace {

using clock_type = std::chrono::system_clock;

/// Milliseconds since midnight of a log line's "HH:MM:SS.mmm" (local time, like the logger).
int64_t log_ms(const std::string& line) {
  std::smatch m;
  if (!std::regex_search(line, m, std::regex(R"((\d\d):(\d\d):(\d\d)\.(\d\d\d))"))) return -1;
  return ((std::stoll(m[1]) * 60 + std::stoll(m[2])) * 60 + std::stoll(m[3])) * 1000 + std::stoll(m[4]);
}

int64_t now_ms_of_day() {
  const auto t = clock_type::now();
  const std::time_t tt = clock_type::to_time_t(t);
  std::tm lt{};
  localtime_r(&tt, &lt);
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count() % 1000;
  return ((lt.tm_hour * 60 + lt.tm_min) * 60 + lt.tm_sec) * 1000 + ms;
}

std::string read_all(const std::filesystem::path& p) {
  std::ifstream in(p);
  return {std::istreambuf_iterator<char>(in), {}};
}

/// The first log line after `from` that matches `pattern`, or "".
std::string find_line(const std::string& log, const std::string& pattern, size_t from = 0) {
  auto pos = log.find(pattern, from);
  if (pos == std::string::npos) return "";
  auto begin = log.rfind('\n', pos);
  begin = begin == std::string::npos ? 0 : begin + 1;
  return log.substr(begin, log.find('\n', pos) - begin);
}

void check_recovery(const std::string& example, const std::string& victim, int base) {
  const std::string prompt = "Tell me a long story about a dragon.";
  auto eng = make_engine();
  auto expected = eng->generate({shared_default_model()->tokenizer().encode(prompt, true, true)}, greedy(160));

  auto dir = scratch_dir("recovery-" + example);
  const auto out = dir / "out.json", log = dir / "head.log";
  std::string cmd = (binary_dir() / "bin" / "troupe").string() + " generate --config " +
                    (source_dir() / "cluster-config" / "examples" / example).string() +
                    " --set head.port=" + std::to_string(base) + " --set nodes[0].port=" + std::to_string(base + 1) +
                    " --set nodes[1].port=" + std::to_string(base + 2) + " --prompt '" + prompt +
                    "' --temperature 0 --ignore-eos --max-tokens 160 --output json";
  const pid_t head = fork();
  REQUIRE(head >= 0);
  if (head == 0) {
    execl("/bin/sh", "sh", "-c", (cmd + " >" + out.string() + " 2>" + log.string()).c_str(), nullptr);
    _exit(127);
  }
  // Wait until the replica serves and the request has produced some tokens.
  std::string text;
  for (int i = 0; i < 600 && find_line(text = read_all(log), "replica 0: ready").empty(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  REQUIRE_FALSE(find_line(text, "replica 0: ready").empty());
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  const auto started = find_line(text, "node " + victim + " starting (pid ");
  std::smatch m;
  REQUIRE(std::regex_search(started, m, std::regex(R"(pid (\d+))")));
  const pid_t node = static_cast<pid_t>(std::stol(m[1]));
  const int64_t killed_at = now_ms_of_day();
  REQUIRE(kill(node, SIGKILL) == 0);

  int status = 0;
  REQUIRE(waitpid(head, &status, 0) == head);
  text = read_all(log);
  INFO(text);
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
  auto j = nlohmann::json::parse(read_all(out));
  CHECK(j.at("tokens").get<std::vector<int32_t>>() == expected[0].tokens);
  const auto lost_pos = text.find("is down");
  REQUIRE(lost_pos != std::string::npos);
  const int64_t detected = log_ms(find_line(text, "is down"));
  const int64_t serving = log_ms(find_line(text, "replica 0: ready", lost_pos));
  REQUIRE(serving > 0);
  WARN(example << ": kill -9 of " << victim << " detected after " << detected - killed_at
               << " ms, serving again after " << serving - killed_at << " ms");
  // kill -9 breaks the node's connection at once: 26 to 52 ms on an idle VM
  // (docs/benchmarks.md, "Recovery from a lost node"), 123 to 277 ms with the shared 2-core
  // VM at load 11 to 15 (this test and test_serve_recovery.cpp). 500 ms is about 1.8x the
  // slowest, the margin for a head waiting for CPU, and half the 1 s heartbeat deadline: a
  // detection that fell back to the deadline fails it.
  CHECK(detected - killed_at < 500);
  CHECK(serving - killed_at < 5000);
}

int base_port(int) { return reserve_ports(4); }

}  // namespace

TEST_CASE("kill -9 of a pipeline stage's node: the request finishes with the fault-free tokens",
          "[recovery][slow]") {
  check_recovery("pipeline2.yaml", "stage1", base_port(0));
}

TEST_CASE("kill -9 of a tensor rank's node: the request finishes with the fault-free tokens",
          "[recovery][slow]") {
  check_recovery("tensor2.yaml", "tp1", base_port(1));
}
