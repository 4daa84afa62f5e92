// The embedded-client example against a real two-process cluster (troupe serve with one
// node process): both of its halves print the single engine's greedy tokens.
#include <signal.h>
#include <sys/wait.h>

#include <catch2/catch.hpp>
#include <sstream>

#include "engine_fixture.h"
#include "tools/troupe_process.h"

using namespace troupe;
using namespace troupe::test;

TEST_CASE("the embedded client example gets the single engine's tokens from a two-process cluster",
          "[client][slow]") {
  const std::string prompt = "The capital of France is";
  auto eng = make_engine();
  auto expected = eng->generate({shared_default_model()->tokenizer().encode(prompt, true, true)}, greedy(16))[0];
  const int base = reserve_ports(2);
  const auto dir = scratch_dir("embedded-client");
  const pid_t serve = spawn_background(
      {troupe_exe(), "serve", "--config", (source_dir() / "cluster-config/examples/single.yaml").string(), "--set",
       "head.port=" + std::to_string(base), "--set", "nodes[0].port=" + std::to_string(base + 1), "--set",
       "server.port=0"},
      dir / "serve.log");
  REQUIRE(wait_for_log(dir / "serve.log", "serving:", serve, std::chrono::seconds(120)));

  const std::string cmd = (binary_dir() / "bin" / "example_embedded_client").string() + " 127.0.0.1 " +
                          std::to_string(base) + " '" + prompt + "' 2>" + (dir / "client.log").string();
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int status = pclose(p);
  INFO(out << read_text(dir / "client.log") << read_text(dir / "serve.log"));
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);

  std::string tokens;
  for (int32_t t : expected.tokens) tokens += " " + std::to_string(t);
  CHECK(out.find("[blocking] tokens:" + tokens + "\n") != std::string::npos);
  CHECK(out.find("[blocking] " + expected.text + "\n") != std::string::npos);
  CHECK(out.find("[actor API] " + expected.text + "\n[actor API] finished: length") != std::string::npos);

  kill(serve, SIGTERM);
  auto stopped = wait_exit(serve, std::chrono::seconds(30));
  REQUIRE(stopped);
  CHECK(WIFEXITED(*stopped));
}
