// Every example topology serves through router -> replica -> shards in real processes
// on 127.0.0.1 and gives the single-process engine's greedy tokens.
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <sstream>
#include <nlohmann/json.hpp>

#include "cluster-config/cluster_config.h"
#include "engine_fixture.h"
#include "tools/troupe_process.h"

using namespace troupe;
using namespace troupe::test;

namespace {

/// Runs `troupe <args>`; the head's log (stderr) goes to a scratch folder named by `tag`.
cli_result run_topology(const std::string& args, const std::string& tag) {
  return run_troupe(args, scratch_dir("topology-" + tag) / "head.log");
}

/// --set flags that move the head and every node to ports of their own (tests run in
/// parallel and next to a possibly running `troupe serve`).
std::string port_overrides(const std::string& example, int base) {
  auto c = load_cluster_config((source_dir() / "cluster-config" / "examples" / example).string());
  std::string s = " --set head.port=" + std::to_string(base);
  for (size_t i = 0; i < c.nodes.size(); ++i)
    s += " --set nodes[" + std::to_string(i) + "].port=" + std::to_string(base + 1 + static_cast<int>(i));
  return s;
}

int base_port(int) { return reserve_ports(8); }

/// Every golden prompt, run together through `example`, gives the single engine's tokens.
void check_topology(const std::string& example, int slot) {
  auto goldens = read_goldens("smollm2_f32.json");
  auto eng = make_engine();
  std::vector<std::vector<int32_t>> prompts;
  // The CLI tokenizes each prompt itself: pass the golden's exact text, one JSON line each.
  const auto file = scratch_dir("topology-prompts-" + example) / "prompts.jsonl";
  {
    std::ofstream out(file);
    for (const auto& g : goldens) {
      prompts.push_back(g.prompt_tokens);
      out << nlohmann::json{{"prompt", g.text}}.dump() << "\n";
    }
  }
  auto expected = eng->generate(prompts, greedy(12));
  auto r = run_topology("generate --config " + (source_dir() / "cluster-config" / "examples" / example).string() +
                          port_overrides(example, base_port(slot)) + " --prompt-file " + file.string() +
                          " --temperature 0 --ignore-eos --max-tokens 12 --output json",
                      example);
  INFO(example << "\n" << r.err);
  REQUIRE(r.code == 0);
  std::istringstream lines(r.out);
  std::string line;
  size_t i = 0;
  for (; std::getline(lines, line) && i < goldens.size(); ++i) {
    INFO("prompt " << goldens[i].name);
    auto j = nlohmann::json::parse(line);
    CHECK(j.at("prompt_tokens").get<std::vector<int32_t>>() == goldens[i].prompt_tokens);
    CHECK(j.at("tokens").get<std::vector<int32_t>>() == expected[i].tokens);
    if (i + 1 < goldens.size()) continue;
    // The last answer carries every replica's step counters (tools/bench_overhead.sh).
    // (A replica that became ready after every prompt was routed ran no step.)
    int64_t steps = 0;
    for (const auto& r : j.at("replicas")) {
      steps += r.at("steps").get<int64_t>();
      CHECK(r.at("decode_kernel_us").get<int64_t>() <= r.at("decode_wall_us").get<int64_t>());
      CHECK(r.at("step_messages").get<int64_t>() % 2 == 0);
    }
    CHECK(steps > 0);
  }
  CHECK(i == goldens.size());
}

}  // namespace

TEST_CASE("the one-process topology serves the single engine's tokens", "[topology][slow]") {
  check_topology("single.yaml", 0);
}

TEST_CASE("pipeline 2 across two processes serves the single engine's tokens", "[topology][slow]") {
  check_topology("pipeline2.yaml", 1);
}

TEST_CASE("tensor 2 across two processes serves the single engine's tokens", "[topology][slow]") {
  check_topology("tensor2.yaml", 2);
}

TEST_CASE("tensor 2 x pipeline 2 across four processes serves the single engine's tokens", "[topology][slow]") {
  check_topology("tensor2_pipeline2.yaml", 3);
}

TEST_CASE("two replicas serve the single engine's tokens", "[topology][slow]") {
  check_topology("replicas2.yaml", 4);
}
