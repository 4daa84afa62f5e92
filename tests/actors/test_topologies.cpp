// Every example topology serves through router -> replica -> shards in real processes
// on 127.0.0.1 and gives the single-process engine's greedy tokens.
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <catch2/catch.hpp>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cluster-config/cluster_config.h"
#include "engine_fixture.h"

using namespace troupe;
using namespace troupe::test;

namespace {

struct cli_result {
  int code = -1;
  std::string out;  ///< stdout only (the head logs on stderr, kept in `log`)
  std::string log;
};

cli_result run_troupe(const std::string& args, const std::string& tag) {
  auto log = scratch_dir("topology-" + tag) / "head.log";
  std::string cmd = (binary_dir() / "bin" / "troupe").string() + " " + args + " 2>" + log.string();
  cli_result r;
  FILE* p = popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  std::array<char, 4096> buf{};
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  const int status = pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::ifstream in(log);
  r.log.assign(std::istreambuf_iterator<char>(in), {});
  return r;
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

int base_port(int slot) { return 21000 + (getpid() % 200) * 40 + slot * 8; }

void check_topology(const std::string& example, int slot) {
  auto goldens = read_goldens("smollm2_f32.json");
  auto eng = make_engine();
  for (size_t i : {size_t{0}, size_t{13}}) {  // a chat prompt and a plain one
    const auto& g = goldens[i];
    auto expected = eng->generate({g.prompt_tokens}, greedy(12));
    // The CLI tokenizes its --prompt itself; pass the golden's exact text without chat wrapping.
    std::string quoted;
    for (char ch : g.text) quoted += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
    auto r = run_troupe("generate --config " + (source_dir() / "cluster-config" / "examples" / example).string() +
                            port_overrides(example, base_port(slot)) + " --prompt '" + quoted +
                            "' --temperature 0 --ignore-eos --max-tokens 12 --output json",
                        example + std::to_string(i));
    INFO(example << " prompt " << g.name << "\n" << r.log);
    REQUIRE(r.code == 0);
    auto j = nlohmann::json::parse(r.out);
    CHECK(j.at("prompt_tokens").get<std::vector<int32_t>>() == g.prompt_tokens);
    CHECK(j.at("tokens").get<std::vector<int32_t>>() == expected[0].tokens);
  }
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
