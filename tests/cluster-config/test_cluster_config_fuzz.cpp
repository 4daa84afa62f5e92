// The cluster file as untrusted input: seeded mutations of the example files and of
// --set overrides either parse or raise a config_error naming the file; nothing else escapes.
#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "cluster-config/cluster_config.h"
#include "fuzz_support.h"
#include "test_support.h"

using namespace troupe;
using namespace troupe::test;
using namespace troupe::test::fuzz;

namespace {

/// The text of every cluster-config/examples/*.yaml, in name order.
std::vector<std::string> example_files() {
  std::vector<std::filesystem::path> paths;
  for (const auto& e : std::filesystem::directory_iterator(source_dir() / "cluster-config" / "examples"))
    if (e.path().extension() == ".yaml") paths.push_back(e.path());
  std::sort(paths.begin(), paths.end());
  std::vector<std::string> out;
  for (const auto& p : paths) {
    std::ifstream in(p);
    std::stringstream s;
    s << in.rdbuf();
    out.push_back(s.str());
  }
  return out;
}

/// A structure-aware edit: one "key: value" line gets a boundary value, loses its value,
/// is duplicated or dropped, or is re-indented.
std::string mutate_line(const std::string& text, rng& r) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  if (lines.empty()) return text;
  const size_t i = r.below(lines.size());
  std::string& l = lines[i];
  const size_t colon = l.find(": ");
  switch (r.below(5)) {
    case 0:
      if (colon != std::string::npos) l = l.substr(0, colon + 2) + r.pick(boundary_texts());
      break;
    case 1:
      if (colon != std::string::npos) l = l.substr(0, colon + 1);
      break;
    case 2: lines.insert(lines.begin() + static_cast<long>(i), l); break;
    case 3: lines.erase(lines.begin() + static_cast<long>(i)); break;
    default: l = std::string(r.below(5), ' ') + l; break;
  }
  std::string out;
  for (const auto& x : lines) out += x + "\n";
  return out;
}

/// Keys --set accepts, each with a well-formed value.
const std::vector<std::string>& override_keys() {
  static const std::vector<std::string> k = {
      "parallel.tensor",      "parallel.pipeline",         "parallel.replicas",       "parallel.layers_per_stage",
      "head.port",            "head.host",                 "server.port",             "server.max_body_bytes",
      "nodes[0].port",        "nodes[0].devices",          "nodes[1].name",           "nodes[7].port",
      "scheduler.max_seqs",   "scheduler.micro_batches",   "fault_tolerance.heartbeat_timeout",
      "model.path",           "model.generation_defaults.temperature",            "cache.ttl",
      "router.policy",        "autoscale.max_replicas"};
  return k;
}

}  // namespace

TEST_CASE("mutated example cluster files parse or raise a config_error naming the file", "[config][fuzz]") {
  const auto files = example_files();
  REQUIRE(files.size() >= 8);
  rng r(0x636c7573);
  tally t;
  for (int c = 0; c < 1500; ++c) {
    const auto& base = files[static_cast<size_t>(c) % files.size()];
    const std::string text = r.below(2) ? mutate(base, r, true) : mutate_line(base, r);
    expect_clear<config_error>(t, "case " + std::to_string(c) + ":\n" + text,
                               [&] { parse_cluster_config(text, "fuzz.yaml"); },
                               [](const config_error& e) { return std::string(e.what()).rfind("fuzz.yaml: ", 0) == 0; });
  }
  INFO("parsed " << t.parsed << ", rejected " << t.rejected);
  CHECK(t.parsed + t.rejected == 1500);
  CHECK(t.parsed > 50);
  CHECK(t.rejected > 500);
}

TEST_CASE("command-line overrides with boundary values apply or raise a config_error naming the key", "[config][fuzz]") {
  const auto files = example_files();
  rng r(0x736574);
  tally t;
  for (int c = 0; c < 1000; ++c) {
    const std::string key = r.pick(override_keys());
    const std::string value = r.below(4) ? r.pick(boundary_texts()) : mutate(r.pick(boundary_texts()), r, true);
    const std::string set = r.below(8) ? key + "=" + value : mutate(key + "=" + value, r, true);
    expect_clear<config_error>(t, "case " + std::to_string(c) + ": --set " + set, [&] {
      auto cfg = parse_cluster_config(files[static_cast<size_t>(c) % files.size()], "fuzz.yaml");
      apply_overrides(cfg, {set});
    });
  }
  INFO("applied " << t.parsed << ", rejected " << t.rejected);
  CHECK(t.parsed + t.rejected == 1000);
  CHECK(t.parsed > 20);
  CHECK(t.rejected > 300);
}
