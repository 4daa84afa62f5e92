// The load generator (tools/loadgen.py) as a user meets it: clear messages for bad flags
// and for a server that is not there, and a small sweep against a real `troupe serve`
// that writes the JSON report and the PNG plot.
#include <signal.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <regex>

#include "tools/troupe_process.h"

using namespace troupe::test;
namespace fs = std::filesystem;

namespace {

/// The test venv's Python ($TROUPE_VENV or <source>/.venv); fails the test when missing.
std::string venv_python() {
  const char* v = std::getenv("TROUPE_VENV");
  const fs::path venv = v && *v ? fs::path(v) : source_dir() / ".venv";
  const auto py = venv / "bin" / "python";
  INFO("the test venv is missing at " << venv << ": run tools/venv.sh");
  REQUIRE(fs::exists(py));
  return py.string();
}

/// Runs `tools/loadgen.py <args>` to completion: exit code, stdout and stderr.
cli_result run_loadgen(const std::string& args, const fs::path& dir) {
  return run_command(venv_python() + " " + (source_dir() / "tools" / "loadgen.py").string() + " " + args,
                     dir / "loadgen.err");
}

bool contains(const std::string& text, const std::string& what) { return text.find(what) != std::string::npos; }

/// A `troupe serve` of single.yaml on free ports, stopped (with its process group) at scope exit.
struct serve_process {
  pid_t pid = -1;
  fs::path log;
  int http_port = 0;

  explicit serve_process(const fs::path& dir) : log(dir / "serve.log") {
    const int base = reserve_ports(2);
    pid = spawn_background({troupe_exe(), "serve", "--config",
                            (source_dir() / "cluster-config" / "examples" / "single.yaml").string(), "--set",
                            "server.port=0", "--set", "head.port=" + std::to_string(base), "--set",
                            "nodes[0].port=" + std::to_string(base + 1)},
                           log);
    INFO(read_text(log));
    REQUIRE(wait_for_log(log, "http: listening on", pid, std::chrono::minutes(3)));
    std::smatch m;
    const auto text = read_text(log);
    REQUIRE(std::regex_search(text, m, std::regex(R"(http: listening on [0-9.]+:([0-9]+))")));
    http_port = std::stoi(m[1].str());
  }
  ~serve_process() {
    ::kill(-pid, SIGTERM);
    if (!wait_exit(pid, std::chrono::seconds(30))) {
      ::kill(-pid, SIGKILL);
      wait_exit(pid, std::chrono::seconds(10));
    }
  }
};

}  // namespace

TEST_CASE("loadgen rejects bad flags with a message naming the flag and no traceback", "[loadgen]") {
  const auto dir = scratch_dir("loadgen-flags");
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"--concurrency 1,4", "--base-url"},
      {"--base-url localhost:8000", "--base-url"},
      {"--base-url http://127.0.0.1:8000 --concurrency 0", "--concurrency"},
      {"--base-url http://127.0.0.1:8000 --concurrency 1,x", "--concurrency"},
      {"--base-url http://127.0.0.1:8000 --request-rate -2", "--request-rate"},
      {"--base-url http://127.0.0.1:8000 --request-rate 2 --concurrency 4", "not allowed with"},
      {"--base-url http://127.0.0.1:8000 --endpoint embeddings", "--endpoint"},
      {"--base-url http://127.0.0.1:8000 --num-prompts -3", "--num-prompts"},
      {"--base-url http://127.0.0.1:8000 --dataset /nonexistent/prompts.jsonl", "/nonexistent/prompts.jsonl"},
      {"--base-url http://127.0.0.1:8000 --plot /nonexistent/dir/p.png", "--plot"},
      {"--base-url http://127.0.0.1:8000 --no-such-flag", "--no-such-flag"},
      {"--base-url http://127.0.0.1:8000 --multiturn 4 --request-rate 2", "--multiturn"},
      {"--base-url http://127.0.0.1:8000 --multiturn 0", "--multiturn"},
      {"--base-url http://127.0.0.1:8000 --multiturn 2 --turns 0", "--turns"},
  };
  for (const auto& [args, named] : cases) {
    const auto r = run_loadgen(args, dir);
    INFO(args << "\n" << r.err);
    CHECK(r.code == 2);
    CHECK(contains(r.err, "loadgen: error:"));
    CHECK(contains(r.err, named));
    CHECK_FALSE(contains(r.err, "Traceback"));
  }
}

TEST_CASE("loadgen names a dataset line that is not a prompt", "[loadgen]") {
  const auto dir = scratch_dir("loadgen-dataset");
  std::ofstream(dir / "prompts.jsonl") << "{\"prompt\": \"hello\"}\n{\"prompt\": 7}\n";
  const auto r = run_loadgen("--base-url http://127.0.0.1:8000 --dataset " + (dir / "prompts.jsonl").string(), dir);
  INFO(r.err);
  CHECK(r.code == 2);
  CHECK(contains(r.err, (dir / "prompts.jsonl").string() + ":2"));
  CHECK(contains(r.err, "\"prompt\""));
  CHECK_FALSE(contains(r.err, "Traceback"));
}

TEST_CASE("loadgen reports a server that is not there without a traceback", "[loadgen]") {
  const auto dir = scratch_dir("loadgen-unreachable");
  const int port = reserve_ports(1);  // reserved, free, and nobody listens on it
  const auto r = run_loadgen("--base-url http://127.0.0.1:" + std::to_string(port) + " --timeout 5", dir);
  INFO(r.err);
  CHECK(r.code == 1);
  CHECK(contains(r.err, "cannot reach the server at http://127.0.0.1:" + std::to_string(port)));
  CHECK_FALSE(contains(r.err, "Traceback"));
}

TEST_CASE("a small loadgen sweep against troupe serve writes the JSON report and the PNG plot",
          "[loadgen][slow]") {
  const auto dir = scratch_dir("loadgen-sweep");
  serve_process server(dir);
  const auto json_file = dir / "sweep.json", png_file = dir / "sweep.png";
  const auto r = run_loadgen("--base-url http://127.0.0.1:" + std::to_string(server.http_port) +
                                 " --wait-ready 600 --concurrency 1,2 --num-prompts 4 --input-len 16"
                                 " --output-len 8 --json " + json_file.string() + " --plot " + png_file.string(),
                             dir);
  INFO(r.out << r.err << read_text(server.log));
  REQUIRE(r.code == 0);
  CHECK(contains(r.out, "TTFT p50"));
  const auto j = nlohmann::json::parse(read_text(json_file));
  CHECK(j.at("config").at("endpoint") == "completions");
  CHECK_FALSE(j.at("config").at("model").get<std::string>().empty());
  REQUIRE(j.at("runs").size() == 2);
  for (size_t i = 0; i < 2; ++i) {
    const auto& run = j.at("runs")[i];
    CHECK(run.at("concurrency") == static_cast<int>(i + 1));
    CHECK(run.at("requests") == 4);
    CHECK(run.at("ok") == 4);
    CHECK(run.at("failed") == 0);
    CHECK(run.at("errors").empty());
    CHECK(run.at("total_output_tokens") == 4 * 8);  // ignore_eos: the output length is exact
    // Text chunks: one per request at least, never more than its tokens.
    CHECK(run.at("output_chunks").get<int>() >= 4);
    CHECK(run.at("output_chunks").get<int>() <= 4 * 8);
    CHECK(run.at("request_throughput").get<double>() > 0.0);
    CHECK(run.at("output_throughput").get<double>() > 0.0);
    for (const char* metric : {"ttft_ms", "itl_ms", "e2e_ms"}) {
      for (const char* q : {"mean", "p50", "p90", "p99"}) CHECK(run.at(metric).at(q).get<double>() > 0.0);
      CHECK(run.at(metric).at("p50").get<double>() <= run.at(metric).at("p99").get<double>());
    }
    CHECK(run.at("ttft_ms").at("p50").get<double>() <= run.at("e2e_ms").at("p50").get<double>());
    // The server's own steps over the pass: 7 decode rows per request (8 tokens, the first
    // from the prefill), up to i + 1 in a step, less one per arrival that joined a prefill
    // (a mixed step); and the prompts' prefills, alone or beside decodes.
    const auto& steps = run.at("steps");
    REQUIRE(steps.contains("decode"));
    CHECK(steps.at("decode").at("count").get<int>() >= (7 * 4 - 4) / static_cast<int>(i + 1));
    CHECK(steps.at("decode").at("mean_ms").get<double>() > 0.0);
    CHECK(steps.value("prefill", nlohmann::json{{"count", 0}}).at("count").get<int>() +
              steps.value("mixed", nlohmann::json{{"count", 0}}).at("count").get<int>() >= 4 / static_cast<int>(i + 1));
  }
  const auto png = read_text(png_file);
  CHECK(png.size() > 1000);
  CHECK(png.substr(0, 8) == std::string("\x89PNG\r\n\x1a\n"));
}

TEST_CASE("a multi-turn loadgen pass against troupe serve grows each history and reports the prefix hit rate",
          "[loadgen][slow]") {
  const auto dir = scratch_dir("loadgen-multiturn");
  serve_process server(dir);
  const auto json_file = dir / "multiturn.json";
  const auto r = run_loadgen("--base-url http://127.0.0.1:" + std::to_string(server.http_port) +
                                 " --wait-ready 600 --multiturn 3 --turns 3 --system-prompts 1 --system-len 80"
                                 " --user-len 8 --output-len 8 --concurrency 2 --json " + json_file.string(),
                             dir);
  INFO(r.out << r.err << read_text(server.log));
  REQUIRE(r.code == 0);
  CHECK(contains(r.out, "prefix hit rate"));
  const auto j = nlohmann::json::parse(read_text(json_file));
  CHECK(j.at("config").at("endpoint") == "chat");
  CHECK(j.at("config").at("multiturn").at("conversations") == 3);
  REQUIRE(j.at("runs").size() == 1);
  const auto& run = j.at("runs")[0];
  CHECK(run.at("requests") == 9);  // 3 conversations x 3 turns
  CHECK(run.at("ok") == 9);
  CHECK(run.at("total_output_tokens") == 9 * 8);
  // Every turn after a conversation's first, and every conversation after the first on the
  // shared system prompt, finds a prefix cached on the one replica: well over a third of
  // the prompt tokens (the first request's alone are all computed).
  const auto& cache = run.at("cache");
  CHECK(cache.at("prefix_query_tokens").get<double>() >= run.at("total_input_tokens").get<double>());
  CHECK(cache.at("prefix_hit_tokens").get<double>() > 0.0);
  CHECK(cache.at("prefix_hit_rate").get<double>() > 0.35);
  CHECK(cache.at("prefix_hit_rate").get<double>() < 1.0);
  CHECK(cache.at("routed").at("least_loaded").get<int>() + cache.at("routed").value("cache", 0) == 9);
}
