// `troupe serve` with no cluster file: the default model on one local CPU node, and the
// README's first request to it.
#include <signal.h>
#include <sys/wait.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <nlohmann/json.hpp>
#include <regex>

#include "chaos/gateway_client.h"
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

namespace {

/// One chat request to the gateway on `port`: the reply, its JSON and how long it took.
struct timed_reply {
  int status = 0;
  nlohmann::json body;
  double seconds = 0;
};

timed_reply post_chat(uint16_t port, const std::string& body) {
  const auto start = std::chrono::steady_clock::now();
  const auto r = chaos::http_call(port, boost::beast::http::verb::post, "/v1/chat/completions", body);
  timed_reply t;
  t.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  t.status = r.status;
  if (r.status == 200) t.body = nlohmann::json::parse(r.body);
  return t;
}

}  // namespace

TEST_CASE("the README's first curl answers Paris within 10 s and a request without sampling fields stops at the cap",
          "[cli][slow][generation]") {
  const int base = reserve_ports(3);
  const auto dir = scratch_dir("serve-readme");
  const uint16_t http_port = static_cast<uint16_t>(base + 2);
  const pid_t serve = spawn_background({troupe_exe(), "serve", "--set", "head.port=" + std::to_string(base), "--set",
                                        "nodes[0].port=" + std::to_string(base + 1), "--set",
                                        "server.port=" + std::to_string(http_port)},
                                       dir / "serve.log");
  REQUIRE(wait_for_log(dir / "serve.log", "serving:", serve, std::chrono::seconds(120)));
  const auto log = read_text(dir / "serve.log");
  INFO(log);
  CHECK(log.find("sampling defaults for requests that leave them out: temperature 0.2, top_p 0.9; "
                 "max_tokens at most 512") != std::string::npos);
  // README.md "Using it", byte for byte: the first curl (greedy, no max_tokens).
  const std::string readme =
      R"({"model": "SmolLM2-135M-Instruct.Q4_1", "messages": [{"role": "user", "content": "What is the capital of France?"}], "temperature": 0})";
  const timed_reply paris = post_chat(http_port, readme);
  INFO("README request: " << paris.seconds << " s, " << paris.body.dump());
  REQUIRE(paris.status == 200);
  const auto& choice = paris.body.at("choices").at(0);
  CHECK(choice.at("message").at("content").get<std::string>().find("Paris") != std::string::npos);
  CHECK(choice.at("finish_reason") == "stop");
  // 0.4-1.2 s measured on the 2-core dev machine; the README promises seconds: 10 s leaves
  // room for ctest running another test beside it.
  CHECK(paris.seconds < 10);
  // The same question with no temperature, no seed and no max_tokens takes the model's
  // defaults (temperature 0.2): the draw may ramble, but never past the 512-token cap.
  const std::string plain =
      R"({"model": "SmolLM2-135M-Instruct.Q4_1", "messages": [{"role": "user", "content": "What is the capital of France?"}]})";
  const timed_reply any = post_chat(http_port, plain);
  INFO("request without sampling fields: " << any.seconds << " s, " << any.body.dump());
  REQUIRE(any.status == 200);
  const std::string reason = any.body.at("choices").at(0).at("finish_reason");
  CHECK((reason == "stop" || reason == "length"));
  // No time bound here: an unseeded draw may run to the cap, and beside CI's soak 512 tokens
  // took 35 s on one run and 181 s on another; speed lives in the benchmarks.
  CHECK(any.body.at("usage").at("completion_tokens").get<int>() <= 512);
  kill(serve, SIGTERM);
  auto status = wait_exit(serve, std::chrono::seconds(30));
  REQUIRE(status);
  CHECK(WIFEXITED(*status));
}
