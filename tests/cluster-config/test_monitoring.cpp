// cluster-config/monitoring: the alert rules pass promtool, and every metric the rules and
// the Grafana dashboard query is one that troupe_metrics registers.
#include <catch2/catch.hpp>

#include <sys/wait.h>
#include <yaml-cpp/yaml.h>

#include <cctype>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "actors/metrics.h"
#include "actors/troupe_metrics.h"
#include "test_support.h"

using namespace troupe;
using Catch::Contains;

namespace {

std::filesystem::path monitoring_dir() { return test::source_dir() / "cluster-config" / "monitoring"; }

/// Exit status and output (stdout and stderr) of a shell command.
std::pair<int, std::string> run_command(const std::string& cmd) {
  std::string out;
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return {-1, "popen failed: " + cmd};
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  int rc = pclose(p);
  return {WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, out};
}

/// Every series name a rendered troupe_metrics exposes (histograms as _bucket/_sum/_count).
std::set<std::string> exported_series() {
  metrics::registry r;
  troupe_metrics m(r);
  std::set<std::string> out;
  std::istringstream in(r.render());
  for (std::string line; std::getline(in, line);) {
    std::istringstream words(line);
    std::string hash, kind, name, type;
    if (!(words >> hash >> kind >> name >> type) || hash != "#" || kind != "TYPE") continue;
    if (type == "histogram")
      for (const char* suffix : {"_bucket", "_sum", "_count"}) out.insert(name + suffix);
    else
      out.insert(name);
  }
  return out;
}

/// The metric names a PromQL expression selects: identifiers that are not functions,
/// aggregations, keywords, label names (in {...} or by/without/on/ignoring lists), or
/// inside strings or range brackets.
std::set<std::string> metric_names_in(const std::string& expr) {
  static const std::regex strings(R"("(\\.|[^"\\])*"|'(\\.|[^'\\])*')");
  static const std::regex matchers(R"(\{[^}]*\})");
  static const std::regex ranges(R"(\[[^\]]*\])");
  static const std::regex grouping(R"(\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\))");
  static const std::set<std::string> keywords = {"and", "or",  "unless", "bool", "offset", "by", "without",
                                                 "on",  "ignoring", "group_left", "group_right", "inf", "nan"};
  std::string s = std::regex_replace(expr, strings, " ");
  s = std::regex_replace(s, matchers, " ");
  s = std::regex_replace(s, ranges, " ");
  s = std::regex_replace(s, grouping, " ");
  auto word_char = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == ':'; };
  std::set<std::string> out;
  for (size_t i = 0; i < s.size();) {
    if (!word_char(s[i]) && s[i] != '$' && s[i] != '.') {
      ++i;
      continue;
    }
    const bool skip = s[i] == '$' || s[i] == '.' || std::isdigit(static_cast<unsigned char>(s[i]));
    size_t j = i + 1;
    while (j < s.size() && (word_char(s[j]) || s[j] == '.')) ++j;
    std::string word = s.substr(i, j - i);
    size_t k = j;
    while (k < s.size() && std::isspace(static_cast<unsigned char>(s[k]))) ++k;
    const bool call = k < s.size() && s[k] == '(';
    if (!skip && !call && !keywords.count(word)) out.insert(word);
    i = j;
  }
  return out;
}

/// The metric names in `exprs` that troupe_metrics does not export.
std::vector<std::string> unknown_metrics(const std::vector<std::string>& exprs) {
  const auto known = exported_series();
  std::vector<std::string> out;
  for (const auto& e : exprs)
    for (const auto& name : metric_names_in(e))
      if (!known.count(name)) out.push_back(name + " (in: " + e + ")");
  return out;
}

/// Every rule of troupe-alerts.yml.
std::vector<YAML::Node> alert_rules() {
  const auto path = monitoring_dir() / "troupe-alerts.yml";
  YAML::Node doc = YAML::LoadFile(path.string());
  std::vector<YAML::Node> out;
  for (const auto& group : doc["groups"])
    for (const auto& rule : group["rules"]) out.push_back(rule);
  return out;
}

nlohmann::json dashboard() {
  std::ifstream in(monitoring_dir() / "grafana-dashboard.json");
  REQUIRE(in.good());
  return nlohmann::json::parse(in);
}

/// Every "expr" string anywhere in `j`.
void collect_exprs(const nlohmann::json& j, std::vector<std::string>& out) {
  if (j.is_object()) {
    for (auto it = j.begin(); it != j.end(); ++it) {
      if (it.key() == "expr" && it->is_string()) out.push_back(it->get<std::string>());
      collect_exprs(*it, out);
    }
  } else if (j.is_array()) {
    for (const auto& v : j) collect_exprs(v, out);
  }
}

/// The rule whose alert name is `name`; fails the test when there is none.
YAML::Node rule_named(const std::string& name) {
  for (const auto& r : alert_rules())
    if (r["alert"].as<std::string>() == name) return r;
  FAIL("no alert rule named " << name);
  return {};
}

}  // namespace

TEST_CASE("promtool check rules accepts the troupe alert rules", "[monitoring]") {
  const auto [status, output] = run_command("/usr/bin/promtool check rules '" +
                                            (monitoring_dir() / "troupe-alerts.yml").string() + "'");
  INFO(output);
  REQUIRE(status == 0);
  REQUIRE_THAT(output, Contains("SUCCESS"));
}

TEST_CASE("promtool check rules rejects a rule file with a broken expression", "[monitoring]") {
  auto path = test::scratch_dir("monitoring") / "broken.yml";
  std::ofstream(path) << "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: rate(troupe_node_up[5m]\n";
  const auto [status, output] = run_command("/usr/bin/promtool check rules '" + path.string() + "'");
  REQUIRE(status != 0);
  REQUIRE_THAT(output, Contains("FAILED"));
}

TEST_CASE("every alert rule has a for duration, a severity label and a summary and description", "[monitoring]") {
  const auto rules = alert_rules();
  REQUIRE(rules.size() >= 6);
  for (const auto& r : rules) {
    const auto name = r["alert"].as<std::string>("");
    INFO("rule " << name);
    REQUIRE(!name.empty());
    REQUIRE(r["for"].IsDefined());
    const auto severity = r["labels"]["severity"].as<std::string>("");
    REQUIRE((severity == "warning" || severity == "critical"));
    REQUIRE(!r["annotations"]["summary"].as<std::string>("").empty());
    REQUIRE(!r["annotations"]["description"].as<std::string>("").empty());
  }
}

TEST_CASE("the alert rules cover latency, errors, rejections, replicas, the KV cache and nodes", "[monitoring]") {
  auto expr = [](const std::string& name) { return rule_named(name)["expr"].as<std::string>(); };
  REQUIRE_THAT(expr("TroupeHighE2ELatencyP99"),
               Contains("histogram_quantile(0.99") && Contains("troupe_e2e_request_latency_seconds_bucket"));
  REQUIRE_THAT(expr("TroupeHighErrorRate"), Contains("status=~\"5..\""));
  REQUIRE_THAT(expr("TroupeTooManyRejections"), Contains("status=\"429\""));
  REQUIRE(expr("TroupeReplicaDown") == "troupe_replica_ready == 0");
  REQUIRE(rule_named("TroupeReplicaDown")["for"].as<std::string>() == "1m");
  REQUIRE(expr("TroupeKVCacheNearlyFull") == "troupe_kv_cache_usage_ratio > 0.95");
  REQUIRE(rule_named("TroupeKVCacheNearlyFull")["for"].as<std::string>() == "5m");
  REQUIRE(expr("TroupeNodeDown") == "troupe_node_up == 0");
}

TEST_CASE("the metric-name check finds a misspelled metric and ignores functions and labels", "[monitoring]") {
  REQUIRE(metric_names_in("histogram_quantile(0.99, sum by (le) (rate(troupe_x_bucket{a=\"b c\"}[$__rate_interval])))") ==
          std::set<std::string>{"troupe_x_bucket"});
  REQUIRE(metric_names_in("sum(rate(a_total[5m])) by (status) / on (replica) b > bool 1e-9") ==
          std::set<std::string>{"a_total", "b"});
  REQUIRE(unknown_metrics({"rate(troupe_request_total[5m])"}).size() == 1);
  REQUIRE(unknown_metrics({"rate(troupe_requests_total[5m]) and troupe_kv_cache_usage_ratio"}).empty());
}

TEST_CASE("every metric an alert rule queries is one troupe_metrics registers", "[monitoring]") {
  std::vector<std::string> exprs;
  for (const auto& r : alert_rules()) exprs.push_back(r["expr"].as<std::string>());
  REQUIRE(!exprs.empty());
  const auto unknown = unknown_metrics(exprs);
  INFO("unknown metrics: " << Catch::Detail::stringify(unknown));
  REQUIRE(unknown.empty());
}

TEST_CASE("the Grafana dashboard is valid JSON with a Prometheus input and schema 36 or newer", "[monitoring]") {
  const auto d = dashboard();
  REQUIRE(d.at("schemaVersion").get<int>() >= 36);
  const auto& inputs = d.at("__inputs");
  REQUIRE(inputs.size() == 1);
  REQUIRE(inputs[0].at("name") == "DS_PROMETHEUS");
  REQUIRE(inputs[0].at("pluginId") == "prometheus");
  REQUIRE(!d.at("title").get<std::string>().empty());
}

TEST_CASE("every metric the dashboard queries is one troupe_metrics registers", "[monitoring]") {
  std::vector<std::string> exprs;
  collect_exprs(dashboard(), exprs);
  REQUIRE(exprs.size() >= 20);
  const auto unknown = unknown_metrics(exprs);
  INFO("unknown metrics: " << Catch::Detail::stringify(unknown));
  REQUIRE(unknown.empty());
}

TEST_CASE("the dashboard has a panel for each view the operators need, all on the Prometheus input", "[monitoring]") {
  const auto d = dashboard();
  std::set<std::string> titles;
  std::set<int> ids;
  for (const auto& p : d.at("panels")) {
    INFO("panel " << p.dump());
    REQUIRE(ids.insert(p.at("id").get<int>()).second);
    REQUIRE(p.at("gridPos").at("w").get<int>() > 0);
    titles.insert(p.at("title").get<std::string>());
    if (p.at("type") == "row") continue;
    REQUIRE(!p.at("targets").empty());
    for (const auto& t : p.at("targets")) REQUIRE(t.at("datasource").at("uid") == "${DS_PROMETHEUS}");
  }
  for (const char* title :
       {"Request rate by status", "Time to first token p50/p90/p99", "Inter-token latency p50/p90/p99",
        "End-to-end latency p50/p90/p99", "Tokens per second", "Queue depth (requests)", "Queue depth (tokens)",
        "Running and waiting sequences", "KV cache usage", "Prefix cache hit rate", "Replica ready", "Shard up",
        "Node up", "Restarts and recoveries"}) {
    INFO("panel title " << title);
    REQUIRE(titles.count(title) == 1);
  }
}
