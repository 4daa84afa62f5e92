// The metrics registry: values, cumulative buckets, escaping, validation, thread safety,
// and troupe_metrics' exposition checked by promtool and by prometheus_client's parser.
#include <catch2/catch.hpp>

#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "actors/metrics.h"
#include "actors/troupe_metrics.h"
#include "test_support.h"

using namespace troupe;
using Catch::Contains;

namespace {

/// Output (stdout and stderr) and exit status of a shell command.
struct command_result {
  int status = -1;
  std::string output;
};

/// Runs `cmd` with `input` on its stdin (through a scratch file).
command_result run_with_stdin(const std::string& cmd, const std::string& input) {
  auto file = test::scratch_dir("metrics") / "stdin.txt";
  std::ofstream(file, std::ios::binary) << input;
  command_result r;
  FILE* p = popen((cmd + " < '" + file.string() + "' 2>&1").c_str(), "r");
  if (!p) return r;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, p)) r.output.append(buf, n);
  int rc = pclose(p);
  r.status = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  return r;
}

/// The lines of `text`.
std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

bool has_line(const std::string& text, const std::string& line) {
  for (const auto& l : lines_of(text))
    if (l == line) return true;
  return false;
}

/// A troupe_metrics with every family holding at least one series, including a label value
/// that needs escaping.
void populate(troupe_metrics& m) {
  m.requests.with({"/v1/completions", "200"}).inc(41);
  m.requests.with({"/v1/chat/completions", "429"}).inc(3);
  m.requests.with({"other", "404"}).inc();
  m.queue_requests.set(5);
  m.queue_tokens.set(1234);
  m.client_disconnects.inc(2);
  for (double v : {0.02, 0.3, 1.7}) m.time_to_first_token.observe(v);
  for (double v : {0.125, 0.25, 0.5}) m.inter_token_latency.observe(v);
  m.e2e_latency.observe(2.5);
  m.prompt_tokens.observe(17);
  m.generation_tokens.observe(128);
  m.prompt_tokens_total.inc(17);
  m.generation_tokens_total.inc(128);
  for (const char* r : {"0", "1"}) {
    m.running_sequences.with({r}).set(3);
    m.waiting_sequences.with({r}).set(1);
    m.kv_cache_usage.with({r}).set(0.25);
    m.prefix_cache_queries.with({r}).inc(100);
    m.prefix_cache_hits.with({r}).inc(40);
    m.ahead_decodes.with({r}).inc(9);
    m.replica_ready.with({r}).set(1);
    m.shard_up.with({r, "0", "0"}).set(1);
    m.shard_up.with({r, "0", "1"}).set(0);
    m.shard_failures.with({r}).inc();
    m.replica_recoveries.with({r}).inc();
  }
  m.node_up.with({"node \"a\"\\b\nc"}).set(1);
  m.node_restarts.with({"node \"a\"\\b\nc"}).inc();
  m.capacity_replicas.with({"ready"}).set(2);
  m.capacity_devices.with({"in_use"}).set(3);
  m.nodes.with({"draining"}).set(1);
  m.router_routed.with({"0", "cache"}).inc(3);
  m.router_routed.with({"1", "balance"}).inc();
  m.router_matched_tokens.with({"0"}).inc(96);
  m.router_index_keys.set(12);
  m.step_duration.with({"0", "decode"}).observe(0.004);
  m.head_is_leader.set(1);
  m.head_term.set(7);
  m.head_takeovers.inc();
  m.head_takeover_seconds.observe(0.45);
}

const std::vector<std::string> documented_families = {
    "troupe_ahead_decodes_total",        "troupe_autoscale_decisions_total", "troupe_autoscale_target_replicas",
    "troupe_capacity_devices",           "troupe_capacity_replicas",
    "troupe_client_disconnects_total",   "troupe_e2e_request_latency_seconds",
    "troupe_generation_tokens_total",    "troupe_head_is_leader",
    "troupe_head_state_replication_errors_total", "troupe_head_state_sequence",
    "troupe_head_takeover_seconds",      "troupe_head_takeovers_total",
    "troupe_head_term",                  "troupe_inter_token_latency_seconds",
    "troupe_kv_cache_usage_ratio",       "troupe_node_restarts_total",
    "troupe_node_up",                    "troupe_nodes",
    "troupe_prefix_cache_hits_total",
    "troupe_prefix_cache_queries_total", "troupe_prompt_tokens_total",
    "troupe_queue_requests",             "troupe_queue_tokens",
    "troupe_replica_ready",              "troupe_replica_recoveries_total",
    "troupe_request_generation_tokens",  "troupe_request_prompt_tokens",
    "troupe_requests_total",             "troupe_router_index_keys",
    "troupe_router_matched_prefix_tokens_total", "troupe_router_routed_total",
    "troupe_running_sequences",
    "troupe_shard_failures_total",       "troupe_shard_up",
    "troupe_stage_kept_kv_tokens_total", "troupe_stage_recoveries_total",
    "troupe_stage_replay_tokens_total",  "troupe_stage_survivor_kv_writes_total",
    "troupe_step_duration_seconds",
    "troupe_time_to_first_token_seconds", "troupe_waiting_sequences"};

}  // namespace

TEST_CASE("a counter adds its increments and refuses to go down", "[metrics]") {
  metrics::registry r;
  auto& c = r.counter_family("jobs_total", "Jobs done.").with();
  c.inc();
  c.inc(2.5);
  REQUIRE(c.value() == 3.5);
  REQUIRE_THROWS_AS(c.inc(-1), std::invalid_argument);
  REQUIRE_THROWS_AS(c.inc(std::nan("")), std::invalid_argument);
  REQUIRE(c.value() == 3.5);
  const auto text = r.render();
  REQUIRE(has_line(text, "# HELP jobs_total Jobs done."));
  REQUIRE(has_line(text, "# TYPE jobs_total counter"));
  REQUIRE(has_line(text, "jobs_total 3.5"));
}

TEST_CASE("a gauge is set and moved by signed amounts", "[metrics]") {
  metrics::registry r;
  auto& g = r.gauge_family("depth", "Queue depth.", {"queue"}).with({"a"});
  g.set(10);
  g.add(-3);
  g.add(0.5);
  REQUIRE(g.value() == 7.5);
  REQUIRE(has_line(r.render(), "depth{queue=\"a\"} 7.5"));
}

TEST_CASE("histogram buckets are cumulative and end with an Inf bucket equal to the count", "[metrics]") {
  metrics::registry r;
  auto& h = r.histogram_family("wait_seconds", "Wait.", {1, 2, 5}, {"kind"}).with({"x"});
  for (double v : {0.5, 1.0, 1.5, 3.0, 10.0}) h.observe(v);
  h.observe(std::nan(""));
  REQUIRE(h.count() == 5);
  REQUIRE(h.sum() == 16.0);
  REQUIRE(h.cumulative_counts() == std::vector<uint64_t>{2, 3, 4, 5});
  const auto text = r.render();
  REQUIRE(has_line(text, "# TYPE wait_seconds histogram"));
  REQUIRE(has_line(text, "wait_seconds_bucket{kind=\"x\",le=\"1\"} 2"));
  REQUIRE(has_line(text, "wait_seconds_bucket{kind=\"x\",le=\"2\"} 3"));
  REQUIRE(has_line(text, "wait_seconds_bucket{kind=\"x\",le=\"5\"} 4"));
  REQUIRE(has_line(text, "wait_seconds_bucket{kind=\"x\",le=\"+Inf\"} 5"));
  REQUIRE(has_line(text, "wait_seconds_sum{kind=\"x\"} 16"));
  REQUIRE(has_line(text, "wait_seconds_count{kind=\"x\"} 5"));
}

TEST_CASE("a histogram without labels writes only the le label", "[metrics]") {
  metrics::registry r;
  r.histogram_family("size_bytes", "Sizes.", {0.5}).with().observe(0.25);
  const auto text = r.render();
  REQUIRE(has_line(text, "size_bytes_bucket{le=\"0.5\"} 1"));
  REQUIRE(has_line(text, "size_bytes_bucket{le=\"+Inf\"} 1"));
  REQUIRE(has_line(text, "size_bytes_sum 0.25"));
  REQUIRE(has_line(text, "size_bytes_count 1"));
}

TEST_CASE("label values and HELP text are escaped as the exposition format requires", "[metrics]") {
  metrics::registry r;
  r.gauge_family("odd", "first line\nsecond \\ line \"quoted\"", {"v"}).with({"a\\b\"c\nd"}).set(1);
  const auto text = r.render();
  REQUIRE(has_line(text, "# HELP odd first line\\nsecond \\\\ line \"quoted\""));
  REQUIRE(has_line(text, "odd{v=\"a\\\\b\\\"c\\nd\"} 1"));
  REQUIRE(metrics::escape_label_value("plain") == "plain");
}

TEST_CASE("families render sorted by name and series by label values, the same every time", "[metrics]") {
  metrics::registry r;
  auto& b = r.counter_family("b_total", "B.", {"k"});
  r.gauge_family("a_value", "A.").with().set(2);
  b.with({"z"}).inc();
  b.with({"m"}).inc();
  const auto text = r.render();
  const auto lines = lines_of(text);
  REQUIRE(lines == std::vector<std::string>{"# HELP a_value A.", "# TYPE a_value gauge", "a_value 2",
                                            "# HELP b_total B.", "# TYPE b_total counter",
                                            "b_total{k=\"m\"} 1", "b_total{k=\"z\"} 1"});
  REQUIRE(r.render() == text);
  REQUIRE(r.names() == std::vector<std::string>{"a_value", "b_total"});
}

TEST_CASE("a series is created once and keeps its address", "[metrics]") {
  metrics::registry r;
  auto& f = r.counter_family("hits_total", "Hits.", {"k"});
  auto* first = &f.with({"x"});
  f.with({"y"}).inc();
  REQUIRE(&f.with({"x"}) == first);
  REQUIRE(&r.counter_family("hits_total", "Hits.", {"k"}) == &f);
}

TEST_CASE("bad metric names, label names, label counts and buckets are rejected naming the metric", "[metrics]") {
  metrics::registry r;
  REQUIRE_THROWS_WITH(r.counter_family("1abc", "x"), Contains("'1abc'"));
  REQUIRE_THROWS_WITH(r.counter_family("a-b", "x"), Contains("'a-b'"));
  REQUIRE_THROWS_AS(r.counter_family("", "x"), std::invalid_argument);
  REQUIRE_NOTHROW(r.counter_family("ns:ok_total", "x"));
  REQUIRE_THROWS_WITH(r.gauge_family("g", "x", {"bad-label"}), Contains("g") && Contains("'bad-label'"));
  REQUIRE_THROWS_WITH(r.gauge_family("g", "x", {"a:b"}), Contains("'a:b'"));
  REQUIRE_THROWS_WITH(r.gauge_family("g", "x", {"__reserved"}), Contains("reserved"));
  REQUIRE_THROWS_WITH(r.gauge_family("g", "x", {"k", "k"}), Contains("twice"));
  REQUIRE_THROWS_WITH(r.histogram_family("h", "x", {1}, {"le"}), Contains("'le'"));
  REQUIRE_THROWS_WITH(r.histogram_family("h", "x", {2, 1}), Contains("metric h") && Contains("increasing"));
  REQUIRE_THROWS_WITH(r.histogram_family("h", "x", {1, std::numeric_limits<double>::infinity()}),
                      Contains("not finite"));
  auto& f = r.gauge_family("g2", "x", {"a"});
  REQUIRE_THROWS_WITH(f.with({"1", "2"}), Contains("metric g2") && Contains("2 label values"));
  REQUIRE_THROWS_AS(f.with(), std::invalid_argument);
  REQUIRE_THROWS_WITH(r.counter_family("g2", "x", {"a"}), Contains("g2") && Contains("gauge"));
  REQUIRE_THROWS_AS(r.gauge_family("g2", "x", {"b"}), std::invalid_argument);
  REQUIRE(r.names() == std::vector<std::string>{"g2", "ns:ok_total"});
}

TEST_CASE("values are written as the shortest exact decimal, with Prometheus infinities", "[metrics]") {
  REQUIRE(metrics::format_value(3) == "3");
  REQUIRE(metrics::format_value(0.1) == "0.1");
  REQUIRE(metrics::format_value(-2.5) == "-2.5");
  REQUIRE(metrics::format_value(1e21) == "1e+21");
  REQUIRE(std::stod(metrics::format_value(1.0 / 3)) == 1.0 / 3);
  REQUIRE(metrics::format_value(std::numeric_limits<double>::infinity()) == "+Inf");
  REQUIRE(metrics::format_value(-std::numeric_limits<double>::infinity()) == "-Inf");
  REQUIRE(metrics::format_value(std::nan("")) == "NaN");
}

TEST_CASE("latency and token buckets cover the documented ranges in increasing order", "[metrics]") {
  const auto lat = metrics::latency_buckets();
  REQUIRE(lat.front() == 0.001);
  REQUIRE(lat.back() == 120);
  const auto tok = metrics::token_buckets();
  REQUIRE(tok.front() == 1);
  REQUIRE(tok.back() == 32768);
  REQUIRE(tok.size() == 16);
  for (const auto* b : {&lat, &tok})
    for (size_t i = 1; i < b->size(); ++i) REQUIRE((*b)[i] > (*b)[i - 1]);
}

TEST_CASE("updates from several threads are all counted while the registry renders", "[metrics]") {
  metrics::registry r;
  auto& counters = r.counter_family("work_total", "Work.", {"thread"});
  auto& g = r.gauge_family("level", "Level.").with();
  auto& h = r.histogram_family("lat_seconds", "Latency.", {0.5, 1.5}).with();
  constexpr int threads = 8, per_thread = 20000;
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      for (int i = 0; i < per_thread; ++i) {
        counters.with({std::to_string(t % 2)}).inc();
        g.add(1);
        h.observe(i % 2 ? 1.0 : 0.25);
        if (i % 5000 == 0) r.render();
      }
    });
  for (auto& t : pool) t.join();
  REQUIRE(counters.with({"0"}).value() == threads / 2 * per_thread);
  REQUIRE(counters.with({"1"}).value() == threads / 2 * per_thread);
  REQUIRE(g.value() == threads * per_thread);
  REQUIRE(h.count() == uint64_t(threads) * per_thread);
  REQUIRE(h.sum() == threads * per_thread / 2 * 1.25);
  REQUIRE(h.cumulative_counts() ==
          std::vector<uint64_t>{threads * per_thread / 2, threads * per_thread, threads * per_thread});
}

TEST_CASE("troupe_metrics registers every documented family", "[metrics]") {
  metrics::registry r;
  troupe_metrics m(r);
  REQUIRE(r.names() == documented_families);
  populate(m);
  const auto text = r.render();
  REQUIRE(has_line(text, "troupe_requests_total{endpoint=\"/v1/completions\",status=\"200\"} 41"));
  REQUIRE(has_line(text, "troupe_shard_up{replica=\"1\",stage=\"0\",rank=\"1\"} 0"));
  REQUIRE(has_line(text, "troupe_time_to_first_token_seconds_count 3"));
  REQUIRE(has_line(text, "troupe_request_generation_tokens_bucket{le=\"128\"} 1"));
  REQUIRE(has_line(text, "troupe_request_generation_tokens_bucket{le=\"64\"} 0"));
}

TEST_CASE("a populated troupe_metrics passes promtool check metrics", "[metrics]") {
  metrics::registry r;
  troupe_metrics m(r);
  populate(m);
  const auto res = run_with_stdin("/usr/bin/promtool check metrics", r.render());
  INFO(res.output);
  REQUIRE(res.status == 0);
  REQUIRE(res.output.empty());
}

TEST_CASE("promtool check metrics catches a lint problem in a rendered registry", "[metrics]") {
  metrics::registry r;
  r.counter_family("misnamed", "A counter without the _total suffix.").with().inc();
  const auto res = run_with_stdin("/usr/bin/promtool check metrics", r.render());
  REQUIRE(res.status != 0);
  REQUIRE_THAT(res.output, Contains("misnamed"));
}

TEST_CASE("a populated troupe_metrics parses with the prometheus_client text parser", "[metrics]") {
  metrics::registry r;
  troupe_metrics m(r);
  populate(m);
  const auto python = test::source_dir() / ".venv" / "bin" / "python";
  REQUIRE(std::filesystem::exists(python));
  const std::string script =
      "import sys\n"
      "from prometheus_client.parser import text_string_to_metric_families as p\n"
      "for f in p(sys.stdin.read()):\n"
      "    for s in f.samples:\n"
      "        print(f.type, s.name, sorted(s.labels.items()), float(s.value))\n";
  auto script_file = test::scratch_dir("metrics-py") / "parse.py";
  std::ofstream(script_file) << script;
  const auto res = run_with_stdin("'" + python.string() + "' '" + script_file.string() + "'", r.render());
  INFO(res.output);
  REQUIRE(res.status == 0);
  REQUIRE(has_line(res.output,
                   "counter troupe_requests_total [('endpoint', '/v1/chat/completions'), ('status', '429')] 3.0"));
  REQUIRE(has_line(res.output, "gauge troupe_node_up [('node', 'node \"a\"\\\\b\\nc')] 1.0"));
  REQUIRE(has_line(res.output, "histogram troupe_e2e_request_latency_seconds_bucket [('le', '+Inf')] 1.0"));
  REQUIRE(has_line(res.output, "histogram troupe_inter_token_latency_seconds_sum [] 0.875"));
  REQUIRE(has_line(res.output, "gauge troupe_kv_cache_usage_ratio [('replica', '0')] 0.25"));
}
