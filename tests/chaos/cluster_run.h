#pragma once
/// Helpers of the process-level fault tests (tests/actors/serving/test_migration.cpp and the
/// chaos scenarios): a `troupe serve` cluster, clients that run many prompts at once
/// through `troupe generate --head`, fault-free references from the single engine, and
/// the head log's node pids and timestamps.
#include <signal.h>
#include <sys/wait.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "engine_fixture.h"
#include "tools/troupe_process.h"

namespace troupe::test::chaos {

/// Prompts of the fault tests: varied, short, in English.
inline std::vector<std::string> fault_prompts(size_t n) {
  static const std::vector<std::string> base = {
      "Tell me a long story about a dragon.", "Write a poem about the sea.", "Explain how a steam engine works.",
      "List ten fruits and their colours.",  "Describe a walk through a forest.", "What makes a good friend?",
      "Write a letter to a pen pal.",        "How do bees make honey?"};
  std::vector<std::string> out;
  for (size_t i = 0; i < n; ++i) out.push_back(base[i % base.size()] + (i < base.size() ? "" : " Part " + std::to_string(i) + "."));
  return out;
}

/// `n` (at most 200) prompts that share little: ten forms over twenty subjects, every
/// (form, subject) pair at most once (the acceptance run's 200 streams).
inline std::vector<std::string> varied_prompts(size_t n) {
  static const std::vector<std::string> forms = {
      "Write a haiku about {}.",       "Explain {} to a child.",         "Give three facts about {}.",
      "Tell a short story about {}.",  "Why do people love {}?",         "Describe {} in one paragraph.",
      "What is the history of {}?",    "List the pros and cons of {}.",  "Compose a limerick on {}.",
      "Summarize {} for a newspaper."};
  static const std::vector<std::string> subjects = {
      "a lighthouse keeper", "the moon",        "volcanoes",         "a chess match",     "bread baking",
      "the Roman empire",    "honey bees",      "a jazz band",       "glaciers",          "a robot gardener",
      "the stock market",    "origami",         "a desert caravan",  "quantum computers", "coral reefs",
      "a night train",       "medieval castles", "the water cycle",  "a lost kitten",     "solar panels"};
  std::vector<std::string> out;
  for (size_t i = 0; i < n; ++i) {
    const size_t form = i % forms.size(), round = i / forms.size();
    const auto& subject = subjects[(13 * round + form) % subjects.size()];
    auto text = forms[form];
    text.replace(text.find("{}"), 2, subject);
    out.push_back(round < subjects.size() ? text : text + " (" + std::to_string(i) + ")");
  }
  return out;
}

/// The sampling of a fault test: greedy (temperature 0) or seeded with top-p.
inline sampling_params fault_sampling(float temperature, uint64_t seed, int max_tokens) {
  sampling_params p;
  p.temperature = temperature;
  p.top_p = 0.9f;
  p.seed = seed;
  p.max_tokens = max_tokens;
  p.ignore_eos = true;
  return p;
}

/// The `troupe generate` flags for `p` (as fault_sampling builds it).
inline std::string sampling_flags(const sampling_params& p) {
  std::ostringstream f;
  f << " --temperature " << p.temperature << " --top-p " << p.top_p << " --seed " << p.seed << " --max-tokens "
    << p.max_tokens << " --ignore-eos --output json";
  return f.str();
}

/// The single engine's results for each prompt with sampling `p` (the fault-free run).
inline auto fault_free_results(const std::vector<std::string>& prompts, const sampling_params& p) {
  engine_config cfg;
  cfg.n_threads = 2;
  cfg.kv_tokens = 8192;
  engine eng(shared_default_model(), cfg);
  std::vector<std::vector<int32_t>> encoded;
  for (const auto& t : prompts) encoded.push_back(shared_default_model()->tokenizer().encode(t, true, true));
  return eng.generate(encoded, p);
}

/// The single engine's tokens for each prompt (the fault-free run).
inline std::vector<std::vector<int32_t>> fault_free(const std::vector<std::string>& prompts, const sampling_params& p) {
  std::vector<std::vector<int32_t>> out;
  for (auto& r : fault_free_results(prompts, p)) out.push_back(r.tokens);
  return out;
}

/// fault_free, computed once per (prompts, sampling) in this test process: scenarios that
/// repeat over several victims share one reference run.
inline const std::vector<std::vector<int32_t>>& cached_fault_free(const std::vector<std::string>& prompts,
                                                                  const sampling_params& p) {
  static std::map<std::string, std::vector<std::vector<int32_t>>> cache;
  std::string key = sampling_flags(p);
  for (const auto& t : prompts) key += "\n" + t;
  auto it = cache.find(key);
  if (it == cache.end()) it = cache.emplace(key, fault_free(prompts, p)).first;
  return it->second;
}

/// Writes `prompts` as a --prompt-file (one JSON string a line).
inline std::filesystem::path write_prompts(const std::filesystem::path& path, const std::vector<std::string>& prompts) {
  std::ofstream f(path);
  for (const auto& p : prompts) f << nlohmann::json(p).dump() << "\n";
  return path;
}

/// One answer line of `generate --output json`.
struct answer {
  std::vector<int32_t> tokens;
  std::string finish_reason;
};

/// Every answer of a `generate --output json` run, in prompt order.
inline std::vector<answer> read_answers(const std::filesystem::path& path) {
  std::istringstream in(read_text(path));
  std::vector<answer> out;
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) continue;
    auto j = nlohmann::json::parse(line);
    out.push_back({j.at("tokens").get<std::vector<int32_t>>(), j.at("finish_reason").get<std::string>()});
  }
  return out;
}

/// Checks a client's `generate --output json` file against the fault-free tokens, prompt by
/// prompt (no duplicate, gap or changed token); `full_length`: every answer ran to max_tokens.
inline void check_answers(const std::filesystem::path& file, const std::vector<std::vector<int32_t>>& expected,
                          bool full_length = false) {
  const auto got = read_answers(file);
  REQUIRE(got.size() == expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    INFO(file.filename().string() << " prompt " << i);
    if (full_length) CHECK(got[i].finish_reason == "length");
    CHECK(got[i].tokens == expected[i]);
  }
}

/// The pid of node `name` from the head's last "node NAME starting (pid N" line; 0 if none.
inline pid_t node_pid(const std::string& log, const std::string& name) {
  const std::regex re("node " + name + R"( starting \(pid (\d+))");
  pid_t pid = 0;
  for (auto it = std::sregex_iterator(log.begin(), log.end(), re); it != std::sregex_iterator(); ++it)
    pid = static_cast<pid_t>(std::stol((*it)[1]));
  return pid;
}

/// How many times `text` occurs in `log`.
inline size_t count_of(const std::string& log, const std::string& text) {
  size_t n = 0;
  for (size_t at = log.find(text); at != std::string::npos; at = log.find(text, at + 1)) ++n;
  return n;
}

/// Runs `troupe <args>` in the background with stdout to `out` and stderr to `err`;
/// `prefix` runs it through a command first (a network namespace's "ip netns exec NS").
inline pid_t spawn_troupe(const std::string& args, const std::filesystem::path& out, const std::filesystem::path& err,
                          const std::string& prefix = "") {
  return spawn_background({"/bin/sh", "-c", "exec " + (prefix.empty() ? "" : prefix + " ") + troupe_exe() + " " +
                                                args + " >" + out.string() + " 2>" + err.string()},
                          err.string() + ".sh");
}

/// Polls until `log` contains `text` `times` times (or `timeout`); returns when it did, or nullopt.
inline std::optional<std::chrono::steady_clock::time_point> wait_for_count(const std::filesystem::path& log,
                                                                            const std::string& text, size_t times,
                                                                            std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (count_of(read_text(log), text) >= times) return std::chrono::steady_clock::now();
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return std::nullopt;
}

/// Waits until one of `texts` is in `log`; returns when (nullopt after `timeout`).
inline std::optional<std::chrono::steady_clock::time_point> wait_for_any(const std::filesystem::path& log,
                                                                          const std::vector<std::string>& texts,
                                                                          std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    const auto text = read_text(log);
    for (const auto& t : texts)
      if (text.find(t) != std::string::npos) return std::chrono::steady_clock::now();
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return std::nullopt;
}

/// Log lines of the head that show a failure was handled: the router moving a request off
/// a failed replica, or holding it there for a stage-local recovery.
inline const std::vector<std::string>& detection_marks() {
  static const std::vector<std::string> m{"moves off failed replica", "recovers stage-locally"};
  return m;
}

/// Log lines of the head that show serving again after a failure: a moved request
/// resuming, or a stage-local recovery finished.
inline const std::vector<std::string>& serving_marks() {
  static const std::vector<std::string> m{"resumes on replica", "stage-local recovery: stage"};
  return m;
}

/// A `troupe serve` over a cluster file, on reserved ports, stopped (SIGTERM) at the end.
class serve_cluster {
 public:
  /// Starts `troupe serve --config <source>/<config>` with ports from reserve_ports and
  /// `extra` --set flags; waits until it serves and `replicas` replicas are ready (so
  /// requests spread over all of them).
  serve_cluster(const std::string& config, const std::vector<std::string>& node_names, const std::string& dir_name,
                const std::string& extra = "", size_t replicas = 1)
      : dir_(scratch_dir(dir_name)), base_(reserve_ports(static_cast<int>(node_names.size()) + 1)) {
    std::string sets = " --set head.port=" + std::to_string(base_) + " --set server.port=0";
    for (size_t i = 0; i < node_names.size(); ++i)
      sets += " --set nodes[" + std::to_string(i) + "].port=" + std::to_string(base_ + 1 + static_cast<int>(i));
    pid_ = spawn_troupe("serve --config " + (source_dir() / config).string() + sets + extra, dir_ / "serve.out",
                        log());
    if (wait_for_log(log(), "serving:", pid_, std::chrono::seconds(180)) &&
        wait_for_count(log(), ": ready (", replicas, std::chrono::seconds(120)))
      return;
    const auto text = read_text(log());
    stop();
    FAIL("troupe serve did not start serving: " << text);
  }
  ~serve_cluster() { stop(); }
  serve_cluster(const serve_cluster&) = delete;
  serve_cluster& operator=(const serve_cluster&) = delete;

  /// The scratch directory of this run.
  const std::filesystem::path& dir() const { return dir_; }
  /// The head's log.
  std::filesystem::path log() const { return dir_ / "serve.log"; }
  /// " --head 127.0.0.1:PORT" for clients.
  std::string head_flag() const { return " --head 127.0.0.1:" + std::to_string(base_); }
  /// Live processes of this cluster (the head and its nodes carry "head.port=PORT").
  std::vector<pid_t> processes() const { return processes_with_argument("head.port=" + std::to_string(base_)); }
  /// Stops the head (SIGTERM, then SIGKILL); true when it exited by itself.
  bool stop() {
    if (pid_ <= 0) return true;
    kill(pid_, SIGTERM);
    auto st = wait_exit(pid_, std::chrono::seconds(30));
    if (!st) {
      kill(-pid_, SIGKILL);
      wait_exit(pid_, std::chrono::seconds(5));
    }
    pid_ = 0;
    return st.has_value();
  }

 private:
  std::filesystem::path dir_;
  int base_ = 0;
  pid_t pid_ = 0;
};

}  // namespace troupe::test::chaos
