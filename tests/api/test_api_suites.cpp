// The HTTP API end to end: a real `troupe serve` (cluster-config/examples/single.yaml) on
// ports from reserve_ports, driven by the Python suites in tests/api with the test venv's
// interpreter: the official openai client, a 5000-connection flood and an HTTP/JSON fuzzer.
#include <signal.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "tools/troupe_process.h"

using namespace troupe::test;
namespace fs = std::filesystem;

namespace {

/// A `troupe serve` of single.yaml in the background, head and node on ports from
/// reserve_ports (the HTTP port is the kernel's pick); stopped (SIGTERM, then SIGKILL of
/// its process group) when it goes out of scope.
struct served {
  pid_t pid = -1;
  int port = 0;
  fs::path log;

  served(const std::string& tag, const std::vector<std::string>& extra, bool wait_ready = true) {
    log = scratch_dir("api-" + tag) / "serve.log";
    const int base = reserve_ports(2);
    std::vector<std::string> argv = {troupe_exe(), "serve", "--config",
                                     (source_dir() / "cluster-config" / "examples" / "single.yaml").string(),
                                     "--set", "head.port=" + std::to_string(base),
                                     "--set", "nodes[0].port=" + std::to_string(base + 1),
                                     "--set", "server.port=0"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    pid = spawn_background(argv, log);
    const std::string listening = "http: listening on 127.0.0.1:";
    REQUIRE(wait_for_log(log, listening, pid, std::chrono::seconds(60)));
    const auto text = read_text(log);
    port = std::stoi(text.substr(text.find(listening) + listening.size()));
    if (wait_ready) REQUIRE(wait_for_log(log, "serving:", pid, std::chrono::seconds(180)));
  }
  ~served() {
    ::kill(pid, SIGTERM);
    if (!wait_exit(pid, std::chrono::seconds(30))) {
      ::kill(-pid, SIGKILL);
      wait_exit(pid, std::chrono::seconds(5));
    }
  }
  std::string base_url() const { return "http://127.0.0.1:" + std::to_string(port); }
};

/// Runs tests/api/<script> with the test venv's Python; its exit status (output in `out`).
int run_python(const std::string& script, const std::string& args, const fs::path& out) {
  const auto python = source_dir() / ".venv" / "bin" / "python";
  INFO("the test venv is missing: run tools/venv.sh");
  REQUIRE(fs::exists(python));
  const auto path = source_dir() / "tests" / "api" / script;
  INFO(path.string() << " does not exist yet");
  REQUIRE(fs::exists(path));
  const auto cmd = python.string() + " " + path.string() + " " + args + " >" + out.string() + " 2>&1";
  const int status = std::system(cmd.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace

TEST_CASE("the official openai client passes its suite against troupe serve", "[api][slow]") {
  served s("openai", {"--api-key", "suite-key"});
  const auto out = s.log.parent_path() / "suite.txt";
  const int rc = run_python("openai_client_suite.py",
                            "--base-url " + s.base_url() + "/v1 --api-key suite-key --troupe " + troupe_exe(), out);
  INFO(read_text(out) << "\n--- server log ---\n" << read_text(s.log));
  CHECK(rc == 0);
  CHECK(process_alive(s.pid));
}

TEST_CASE("a server that is still loading answers health but 503 for ready and generation", "[api][slow]") {
  // The only node is placed on an address that never registers: no replica ever gets ready.
  served s("loading", {"--set", "nodes[0].host=192.0.2.1"}, false);
  const auto out = s.log.parent_path() / "suite.txt";
  const int rc = run_python("openai_client_suite.py", "--base-url " + s.base_url() + "/v1 --expect-not-ready", out);
  INFO(read_text(out) << "\n--- server log ---\n" << read_text(s.log));
  CHECK(rc == 0);
}

TEST_CASE("5000 concurrent connections against a small queue get only answers or 429", "[api][slow]") {
  served s("flood", {"--set", "server.max_queue_requests=8"});
  const auto out = s.log.parent_path() / "flood.txt";
  const int rc = run_python("flood.py",
                            "--base-url " + s.base_url() + " --server-pid " + std::to_string(s.pid) +
                                " --connections 5000",
                            out);
  INFO(read_text(out) << "\n--- server log ---\n" << read_text(s.log));
  CHECK(rc == 0);
  CHECK(process_alive(s.pid));
}

TEST_CASE("1200 malformed HTTP requests and JSON bodies each get a 4xx and the server stays up", "[api][slow]") {
  served s("fuzz", {});
  const auto out = s.log.parent_path() / "fuzz.txt";
  const int rc = run_python("fuzz_http.py", "--host 127.0.0.1 --port " + std::to_string(s.port) + " --count 1200", out);
  INFO(read_text(out) << "\n--- server log ---\n" << read_text(s.log));
  CHECK(rc == 0);
  CHECK(process_alive(s.pid));
}
