// The troupe command as a user meets it: real process, real exit codes and messages.
#include <sys/wait.h>

#include <array>
#include <catch2/catch.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "test_support.h"

using namespace troupe::test;
namespace fs = std::filesystem;

namespace {

struct run_result {
  int code = -1;
  std::string out;  ///< stdout and stderr together
};

run_result troupe_cli(const std::string& args) {
  std::string cmd = (binary_dir() / "bin" / "troupe").string() + " " + args + " 2>&1";
  run_result r;
  FILE* p = popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  std::array<char, 4096> buf{};
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  int status = pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

/// Copies the first `bytes` of the default model to `dst`.
void write_prefix(const fs::path& dst, size_t bytes) {
  std::ifstream in(default_model(), std::ios::binary);
  std::string data(bytes, '\0');
  in.read(data.data(), static_cast<std::streamsize>(bytes));
  std::ofstream(dst, std::ios::binary).write(data.data(), static_cast<std::streamsize>(in.gcount()));
}

}  // namespace

TEST_CASE("generate --output json prints tokens, text and finish reason", "[cli][slow]") {
  auto r = troupe_cli("generate --model default --prompt 'The capital of France is' --temperature 0 "
                      "--max-tokens 8 --output json");
  INFO(r.out);
  REQUIRE(r.code == 0);
  auto j = nlohmann::json::parse(r.out);
  CHECK(j.at("prompt_tokens").size() > 3);
  CHECK(j.at("tokens").size() <= 8);
  CHECK(j.at("text").get<std::string>().find("Paris") != std::string::npos);
  CHECK((j.at("finish_reason") == "length" || j.at("finish_reason") == "stop"));
}

TEST_CASE("a chat question is answered through the chat template", "[cli][slow]") {
  auto r = troupe_cli("generate --model default --chat --prompt 'What is the capital of France?' "
                      "--temperature 0 --max-tokens 30");
  INFO(r.out);
  REQUIRE(r.code == 0);
  CHECK(r.out.find("Paris") != std::string::npos);
}

TEST_CASE("info describes the default model", "[cli][slow]") {
  auto r = troupe_cli("info --model default");
  INFO(r.out);
  REQUIRE(r.code == 0);
  CHECK(r.out.find("llama") != std::string::npos);
  CHECK(r.out.find("Q4_1=210") != std::string::npos);
  CHECK(r.out.find("chatml") != std::string::npos);
}

TEST_CASE("a missing model path is named in the error", "[cli]") {
  auto r = troupe_cli("generate --model /nonexistent/model.gguf --prompt hi");
  CHECK(r.code == 1);
  CHECK(r.out.find("/nonexistent/model.gguf") != std::string::npos);
}

TEST_CASE("a truncated GGUF file fails with the file name and a non-zero exit", "[cli][slow]") {
  auto dir = scratch_dir("cli-truncated");
  for (size_t cut : {size_t{10}, size_t{4000}, size_t{2000000}, size_t{50000000}}) {
    auto f = dir / ("cut" + std::to_string(cut) + ".gguf");
    write_prefix(f, cut);
    auto r = troupe_cli("generate --model " + f.string() + " --prompt hi");
    INFO("cut at " << cut << ": " << r.out);
    CHECK(r.code == 1);
    CHECK(r.out.find(f.filename().string()) != std::string::npos);
    CHECK(r.out.find("truncated") != std::string::npos);
  }
}

TEST_CASE("a file with the wrong magic is rejected as not GGUF", "[cli]") {
  auto f = scratch_dir("cli-magic") / "not-a-model.gguf";
  std::ofstream(f) << "this is not a GGUF file, just text long enough to read a header";
  auto r = troupe_cli("info --model " + f.string());
  INFO(r.out);
  CHECK(r.code == 1);
  CHECK(r.out.find("magic") != std::string::npos);
}

TEST_CASE("a Hugging Face directory without tokenizer.json is rejected naming the file", "[cli]") {
  auto dir = scratch_dir("cli-no-tokenizer");
  std::ofstream(dir / "config.json") << R"({"model_type": "llama", "hidden_size": 64,
    "intermediate_size": 128, "num_hidden_layers": 1, "num_attention_heads": 2,
    "num_key_value_heads": 1, "vocab_size": 10, "rms_norm_eps": 1e-5,
    "max_position_embeddings": 64})";
  auto r = troupe_cli("info --model " + dir.string());
  INFO(r.out);
  CHECK(r.code == 1);
  CHECK(r.out.find("tokenizer.json") != std::string::npos);
}

TEST_CASE("invalid sampling values and flags are usage errors", "[cli]") {
  auto r1 = troupe_cli("generate --model default --prompt hi --temperature -1");
  CHECK(r1.code == 2);
  CHECK(r1.out.find("temperature") != std::string::npos);
  auto r2 = troupe_cli("generate --model default --prompt hi --top-p 1.5");
  CHECK(r2.code == 2);
  CHECK(r2.out.find("top_p") != std::string::npos);
  auto r3 = troupe_cli("generate --model default --prompt hi --no-such-flag");
  CHECK(r3.code == 2);
  CHECK(r3.out.find("no-such-flag") != std::string::npos);
  auto r4 = troupe_cli("generate --model default");
  CHECK(r4.code == 2);
  CHECK(r4.out.find("prompt") != std::string::npos);
  auto r5 = troupe_cli("generate --model default --prompt hi --output xml");
  CHECK(r5.code == 2);
  CHECK(r5.out.find("--output") != std::string::npos);
  auto r6 = troupe_cli("frobnicate");
  CHECK(r6.code == 2);
  CHECK(r6.out.find("unknown command") != std::string::npos);
}

TEST_CASE("a prompt longer than the context is refused with a clear message", "[cli][slow]") {
  std::string prompt;
  for (int i = 0; i < 80; ++i) prompt += "word ";
  auto r = troupe_cli("generate --model default --kv-tokens 64 --max-tokens 4 --prompt '" + prompt + "'");
  INFO(r.out);
  CHECK(r.code == 1);
  CHECK(r.out.find("context") != std::string::npos);
}

TEST_CASE("--help documents every generate flag", "[cli]") {
  auto r = troupe_cli("generate --help");
  CHECK(r.code == 0);
  for (const char* flag : {"--model", "--prompt", "--chat", "--max-tokens", "--temperature", "--top-p",
                           "--top-k", "--seed", "--output"})
    CHECK(r.out.find(flag) != std::string::npos);
}
