// `troupe serve` with no cluster file: the default model on one local CPU node.
#include <signal.h>
#include <sys/wait.h>

#include <catch2/catch.hpp>
#include <regex>

#include "tools/troupe_process.h"

using namespace troupe::test;

TEST_CASE("troupe serve without a cluster file serves the default model and cleans up", "[cli][slow]") {
  const int base = reserve_ports(2);
  const auto dir = scratch_dir("serve-default");
  const pid_t serve = spawn_background({troupe_exe(), "serve", "--set", "head.port=" + std::to_string(base), "--set",
                                        "nodes[0].port=" + std::to_string(base + 1), "--set", "server.port=0"},
                                       dir / "serve.log");
  REQUIRE(wait_for_log(dir / "serve.log", "serving:", serve, std::chrono::seconds(120)));
  const auto log = read_text(dir / "serve.log");
  INFO(log);
  CHECK(log.find("http: listening on 127.0.0.1:") != std::string::npos);
  std::smatch m;
  REQUIRE(std::regex_search(log, m, std::regex(R"(\(1 node\(s\) in (\S+troupe-default-\d+\.yaml)\))")));
  const std::string file = m[1];
  CHECK(std::filesystem::exists(file));
  kill(serve, SIGTERM);
  auto status = wait_exit(serve, std::chrono::seconds(30));
  REQUIRE(status);
  CHECK(WIFEXITED(*status));
  CHECK(WEXITSTATUS(*status) == 0);
  CHECK_FALSE(std::filesystem::exists(file));
}
