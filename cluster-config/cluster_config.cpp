// The cluster file: parsing (with key paths in every error), validation, command-line
// overrides and YAML output. docs/configuration.md is the reference for the schema.
#include "cluster-config/cluster_config.h"

#include "runtime/model/model.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>
#include <utility>

namespace troupe {

namespace {

std::string message_of(const std::string& source, const std::string& path, const std::string& what) {
  return path.empty() ? source + ": " + what : source + ": " + path + ": " + what;
}

std::string join(const std::string& base, const std::string& key) {
  return base.empty() ? key : base + "." + key;
}

std::string indexed(const std::string& base, std::size_t i) {
  return base + "[" + std::to_string(i) + "]";
}

/// Levenshtein distance, for "did you mean".
std::size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diag = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      std::size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

/// " (did you mean X?)" for the closest known key within a few edits, else "".
std::string did_you_mean(const std::string& key, const std::vector<std::string>& known) {
  std::string best;
  std::size_t best_d = std::max<std::size_t>(2, key.size() / 3) + 1;
  for (const auto& k : known) {
    std::size_t d = edit_distance(key, k);
    if (d < best_d) {
      best_d = d;
      best = k;
    }
  }
  return best.empty() ? "" : " (did you mean " + best + "?)";
}

/// How a YAML value looks, for "expected X, got Y".
std::string describe(const YAML::Node& n) {
  if (!n.IsDefined() || n.IsNull()) return "nothing";
  if (n.IsSequence()) return "a list";
  if (n.IsMap()) return "a map";
  return "\"" + n.Scalar() + "\"";
}

/// "" when `d` is "cpu" or "cuda:N", else what is wrong with it.
std::string device_problem(const std::string& d) {
  if (d == "cpu") return "";
  const std::string prefix = "cuda:";
  if (d.compare(0, prefix.size(), prefix) == 0 && d.size() > prefix.size() && d.size() <= prefix.size() + 4 &&
      std::all_of(d.begin() + prefix.size(), d.end(), [](char ch) { return ch >= '0' && ch <= '9'; }))
    return "";
  return "expected a device \"cpu\" or \"cuda:N\", got \"" + d + "\"";
}

/// Milliseconds from "250ms", "1s", "1.5s", "2m", "1h"; false when the text is not one.
bool parse_duration(const std::string& text, std::chrono::milliseconds& out) {
  std::size_t i = 0;
  while (i < text.size() && ((text[i] >= '0' && text[i] <= '9') || text[i] == '.')) ++i;
  const std::string number = text.substr(0, i), unit = text.substr(i);
  if (number.empty() || number.front() == '.' || number.back() == '.' ||
      std::count(number.begin(), number.end(), '.') > 1 || number.size() > 15)
    return false;
  double factor = 0;
  if (unit == "ms") factor = 1;
  else if (unit == "s") factor = 1000;
  else if (unit == "m") factor = 60000;
  else if (unit == "h") factor = 3600000;
  else return false;
  const double ms = std::stod(number) * factor;
  if (ms > 1e15 || std::fabs(ms - std::round(ms)) > 1e-6) return false;
  out = std::chrono::milliseconds(static_cast<int64_t>(std::llround(ms)));
  return true;
}

/// Turns YAML values into typed fields; every error names the source and key path.
class reader {
 public:
  reader(std::string source, bool with_lines) : source_(std::move(source)), with_lines_(with_lines) {}

  [[noreturn]] void fail(const YAML::Node& at, const std::string& path, const std::string& what) const {
    std::string where;
    if (with_lines_ && at.IsDefined() && !at.Mark().is_null())
      where = " (line " + std::to_string(at.Mark().line + 1) + ")";
    throw config_error(source_, path, what + where);
  }

  int64_t integer(const YAML::Node& n, const std::string& path, int64_t lo, int64_t hi,
                   const char* expected) const {
    long long v = 0;
    if (!n.IsScalar() || !YAML::convert<long long>::decode(n, v))
      fail(n, path, std::string("expected ") + expected + ", got " + describe(n));
    if (v < lo || v > hi) fail(n, path, std::string("expected ") + expected + ", got " + std::to_string(v));
    return v;
  }

  void read(const YAML::Node& n, const std::string& path, int& out) const {
    out = static_cast<int>(integer(n, path, INT_MIN, INT_MAX, "an integer"));
  }
  void read(const YAML::Node& n, const std::string& path, int64_t& out) const {
    out = integer(n, path, INT64_MIN, INT64_MAX, "an integer");
  }
  void read(const YAML::Node& n, const std::string& path, double& out) const {
    if (!n.IsScalar() || !YAML::convert<double>::decode(n, out)) fail(n, path, "expected a number, got " + describe(n));
  }
  void read(const YAML::Node& n, const std::string& path, bool& out) const {
    if (!n.IsScalar() || !YAML::convert<bool>::decode(n, out))
      fail(n, path, "expected true or false, got " + describe(n));
  }
  void read(const YAML::Node& n, const std::string& path, std::string& out) const {
    if (!n.IsScalar()) fail(n, path, "expected a string, got " + describe(n));
    out = n.Scalar();
  }
  void read(const YAML::Node& n, const std::string& path, std::chrono::milliseconds& out) const {
    long long v = 0;
    if (n.IsScalar() && YAML::convert<long long>::decode(n, v)) {
      out = std::chrono::milliseconds(v);
      return;
    }
    if (!n.IsScalar() || !parse_duration(n.Scalar(), out))
      fail(n, path, "expected a duration (\"250ms\", \"1s\", \"2m\" or milliseconds), got " + describe(n));
  }
  template <class T>
  void read(const YAML::Node& n, const std::string& path, std::vector<T>& out) const {
    out.clear();
    if (n.IsNull()) return;
    if (!n.IsSequence()) fail(n, path, "expected a list, got " + describe(n));
    for (std::size_t i = 0; i < n.size(); ++i) {
      T v{};
      read(n[i], indexed(path, i), v);
      out.push_back(std::move(v));
    }
  }
  void read_port(const YAML::Node& n, const std::string& path, uint16_t& out, bool allow_zero) const {
    out = static_cast<uint16_t>(
        integer(n, path, allow_zero ? 0 : 1, 65535, allow_zero ? "a port 0..65535" : "a port 1..65535"));
  }

 private:
  std::string source_;
  bool with_lines_;
};

/// One YAML map: typed look-ups by key, then finish() rejects the keys nobody asked for.
class section {
 public:
  section(const reader& r, const YAML::Node& node, std::string path) : r_(r), path_(std::move(path)) {
    if (!node.IsDefined() || node.IsNull()) return;
    if (!node.IsMap())
      r_.fail(node, path_, std::string(path_.empty() ? "the file" : "this section") +
                               " must be a map of keys, got " + describe(node));
    for (auto it = node.begin(); it != node.end(); ++it) {
      if (!it->first.IsScalar()) r_.fail(it->first, path_, "keys must be plain names");
      const std::string key = it->first.Scalar();
      if (entries_.count(key)) r_.fail(it->first, join(path_, key), "duplicate key");
      entries_.emplace(key, std::make_pair(it->first, it->second));
    }
  }

  /// The value under `key` (undefined when absent); registers the key as known.
  YAML::Node child(const std::string& key) {
    known_.push_back(key);
    auto it = entries_.find(key);
    return it == entries_.end() ? YAML::Node(YAML::NodeType::Undefined) : it->second.second;
  }
  std::string path(const std::string& key) const { return join(path_, key); }
  const reader& rd() const { return r_; }

  template <class T>
  void get(const std::string& key, T& out) {
    YAML::Node n = child(key);
    if (n.IsDefined()) r_.read(n, path(key), out);
  }
  void get_port(const std::string& key, uint16_t& out, bool allow_zero = false) {
    YAML::Node n = child(key);
    if (n.IsDefined()) r_.read_port(n, path(key), out, allow_zero);
  }

  void finish() const {
    for (const auto& [key, kv] : entries_)
      if (std::find(known_.begin(), known_.end(), key) == known_.end())
        r_.fail(kv.first, join(path_, key), "unknown key" + did_you_mean(key, known_));
  }

 private:
  const reader& r_;
  std::string path_;
  std::map<std::string, std::pair<YAML::Node, YAML::Node>> entries_;
  std::vector<std::string> known_;
};

void read_model(section s, model_section& m) {
  s.get("path", m.path);
  s.get("dtype", m.dtype);
  s.get("load_format", m.load_format);
  s.finish();
}

void read_parallel(section s, parallel_section& p) {
  s.get("tensor", p.tensor);
  s.get("pipeline", p.pipeline);
  s.get("replicas", p.replicas);
  s.get("layers_per_stage", p.layers_per_stage);
  s.get("allow_uneven_heads", p.allow_uneven_heads);
  s.finish();
}

void read_head(section s, head_section& h) {
  s.get("host", h.host);
  s.get_port("port", h.port);
  s.finish();
}

node_section read_node(section s) {
  node_section n;
  n.devices = {"cpu"};
  s.get("name", n.name);
  s.get("host", n.host);
  s.get_port("port", n.port, true);
  YAML::Node devices = s.child("devices");
  if (devices.IsDefined()) {
    s.rd().read(devices, s.path("devices"), n.devices);
    for (std::size_t i = 0; i < n.devices.size(); ++i)
      if (auto problem = device_problem(n.devices[i]); !problem.empty())
        s.rd().fail(devices[i], indexed(s.path("devices"), i), problem);
  }
  s.get("threads", n.threads);
  s.finish();
  return n;
}

void read_nodes(const reader& r, const YAML::Node& list, std::vector<node_section>& nodes) {
  nodes.clear();
  if (list.IsNull()) return;
  if (!list.IsSequence()) r.fail(list, "nodes", "expected a list of nodes, got " + describe(list));
  for (std::size_t i = 0; i < list.size(); ++i) nodes.push_back(read_node(section(r, list[i], indexed("nodes", i))));
}

void read_server(section s, server_section& v) {
  s.get("host", v.host);
  s.get_port("port", v.port, true);
  s.get("model_name", v.model_name);
  s.get("api_keys", v.api_keys);
  s.get("max_queue_requests", v.max_queue_requests);
  s.get("max_queue_tokens", v.max_queue_tokens);
  s.get("max_body_bytes", v.max_body_bytes);
  s.get("max_n", v.max_n);
  s.finish();
}

void read_scheduler(section s, scheduler_section& v) {
  s.get("max_batch_tokens", v.max_batch_tokens);
  s.get("max_seqs", v.max_seqs);
  s.get("kv_tokens", v.kv_tokens);
  s.get("kv_fraction", v.kv_fraction);
  s.get("block_size", v.block_size);
  s.get("max_context", v.max_context);
  s.get("prefix_caching", v.prefix_caching);
  s.get("micro_batches", v.micro_batches);
  s.finish();
}

void read_fault_tolerance(section s, fault_tolerance_section& v) {
  s.get("heartbeat_interval", v.heartbeat_interval);
  s.get("heartbeat_timeout", v.heartbeat_timeout);
  s.get("collective_timeout", v.collective_timeout);
  s.get("step_timeout", v.step_timeout);
  s.get("request_wait", v.request_wait);
  s.get("max_restarts", v.max_restarts);
  s.get("request_retries", v.request_retries);
  s.get("drain_timeout", v.drain_timeout);
  s.get("stage_recovery", v.stage_recovery);
  s.get("stage_recovery_timeout", v.stage_recovery_timeout);
  s.finish();
}

void read_autoscale(section s, autoscale_section& v) {
  s.get("enabled", v.enabled);
  s.get("min_replicas", v.min_replicas);
  s.get("max_replicas", v.max_replicas);
  s.get("interval", v.interval);
  s.get("scale_up_queue", v.scale_up_queue);
  s.get("scale_up_kv", v.scale_up_kv);
  s.get("scale_down_load", v.scale_down_load);
  s.get("scale_down_after", v.scale_down_after);
  s.get("cooldown", v.cooldown);
  s.finish();
}

/// The whole tree into a config (defaults for what is absent); no validation.
cluster_config read_tree(const YAML::Node& root, const reader& r) {
  cluster_config c = default_cluster_config();
  section top(r, root, "");
  read_model(section(r, top.child("model"), "model"), c.model);
  read_parallel(section(r, top.child("parallel"), "parallel"), c.parallel);
  read_head(section(r, top.child("head"), "head"), c.head);
  if (YAML::Node nodes = top.child("nodes"); nodes.IsDefined()) read_nodes(r, nodes, c.nodes);
  read_server(section(r, top.child("server"), "server"), c.server);
  read_scheduler(section(r, top.child("scheduler"), "scheduler"), c.scheduler);
  read_fault_tolerance(section(r, top.child("fault_tolerance"), "fault_tolerance"), c.fault_tolerance);
  read_autoscale(section(r, top.child("autoscale"), "autoscale"), c.autoscale);
  top.finish();
  return c;
}

// ---- validation -------------------------------------------------------------------

/// Throws config_error for the config's source.
struct checker {
  std::string source;
  void require(bool ok, const std::string& path, const std::string& what) const {
    if (!ok) throw config_error(source, path, what);
  }
  void at_least(int64_t v, int64_t lo, const std::string& path) const {
    require(v >= lo, path, "must be >= " + std::to_string(lo) + ", got " + std::to_string(v));
  }
  void positive_ms(std::chrono::milliseconds v, const std::string& path) const {
    require(v.count() > 0, path, "must be a positive duration, got " + std::to_string(v.count()) + "ms");
  }
};

/// "localhost" and "127.0.0.1" are the same host for port clashes.
std::string host_key(const std::string& host) { return host == "localhost" ? "127.0.0.1" : host; }

void check_parallel(const checker& k, const parallel_section& p) {
  k.at_least(p.tensor, 1, "parallel.tensor");
  k.at_least(p.pipeline, 1, "parallel.pipeline");
  k.at_least(p.replicas, 1, "parallel.replicas");
  if (p.layers_per_stage.empty()) return;
  k.require(p.layers_per_stage.size() == static_cast<std::size_t>(p.pipeline), "parallel.layers_per_stage",
            "needs one entry per pipeline stage (" + std::to_string(p.pipeline) + "), got " +
                std::to_string(p.layers_per_stage.size()));
  for (std::size_t i = 0; i < p.layers_per_stage.size(); ++i)
    k.at_least(p.layers_per_stage[i], 1, indexed("parallel.layers_per_stage", i));
}

void check_node_devices(const checker& k, const node_section& n, const std::string& path) {
  k.require(!n.devices.empty(), join(path, "devices"), "a node needs at least one device");
  std::set<std::string> seen;
  for (std::size_t d = 0; d < n.devices.size(); ++d) {
    const std::string dp = indexed(join(path, "devices"), d);
    const std::string problem = device_problem(n.devices[d]);
    k.require(problem.empty(), dp, problem);
    k.require(n.devices[d] == "cpu" || seen.insert(n.devices[d]).second, dp,
              n.devices[d] + " is listed twice on this node");
  }
}

void check_nodes(const checker& k, const cluster_config& c) {
  k.require(!c.nodes.empty(), "nodes", "the cluster needs at least one node");
  std::map<std::string, std::size_t> names;
  std::map<std::pair<std::string, uint16_t>, std::size_t> endpoints;
  const auto head = std::make_pair(host_key(c.head.host), c.head.port);
  const auto server = std::make_pair(host_key(c.server.host), c.server.port);
  std::size_t devices = 0;
  for (std::size_t i = 0; i < c.nodes.size(); ++i) {
    const node_section& n = c.nodes[i];
    const std::string path = indexed("nodes", i);
    k.require(!n.name.empty(), join(path, "name"), "a node needs a non-empty name");
    auto [it, fresh] = names.emplace(n.name, i);
    k.require(fresh, join(path, "name"),
              "\"" + n.name + "\" is already the name of " + indexed("nodes", it->second));
    k.require(!n.host.empty(), join(path, "host"), "a node needs a host");
    k.at_least(n.threads, 0, join(path, "threads"));
    check_node_devices(k, n, path);
    devices += n.devices.size();
    if (n.port == 0) continue;
    const auto ep = std::make_pair(host_key(n.host), n.port);
    const std::string where = n.host + ":" + std::to_string(n.port);
    k.require(ep != head, join(path, "port"), where + " is the head's port (head.port)");
    k.require(ep != server, join(path, "port"), where + " is the HTTP server's port (server.port)");
    auto [e, unique] = endpoints.emplace(ep, i);
    k.require(unique, join(path, "port"), where + " is already used by " + indexed("nodes", e->second));
  }
  const auto& p = c.parallel;
  const int64_t shards = int64_t{p.tensor} * p.pipeline * p.replicas;
  k.require(shards <= static_cast<int64_t>(devices), "nodes",
            "the cluster needs " + std::to_string(shards) + " shards (tensor " + std::to_string(p.tensor) +
                " x pipeline " + std::to_string(p.pipeline) + " x replicas " + std::to_string(p.replicas) +
                ") but its nodes list " + std::to_string(devices) + " device" + (devices == 1 ? "" : "s"));
}

void check_server(const checker& k, const cluster_config& c) {
  const server_section& s = c.server;
  k.require(!c.head.host.empty(), "head.host", "must not be empty");
  k.at_least(c.head.port, 1, "head.port");
  k.require(!s.host.empty(), "server.host", "must not be empty");
  k.require(!(host_key(s.host) == host_key(c.head.host) && s.port == c.head.port), "server.port",
            std::to_string(s.port) + " is also the head's port (head.port)");
  for (std::size_t i = 0; i < s.api_keys.size(); ++i)
    k.require(!s.api_keys[i].empty(), indexed("server.api_keys", i), "an API key must not be empty");
  k.at_least(s.max_queue_requests, 1, "server.max_queue_requests");
  k.at_least(s.max_queue_tokens, 1, "server.max_queue_tokens");
  k.at_least(s.max_body_bytes, 1, "server.max_body_bytes");
  k.at_least(s.max_n, 1, "server.max_n");
}

void check_scheduler(const checker& k, const scheduler_section& s) {
  k.at_least(s.max_batch_tokens, 1, "scheduler.max_batch_tokens");
  k.at_least(s.max_seqs, 1, "scheduler.max_seqs");
  k.at_least(s.block_size, 1, "scheduler.block_size");
  k.require((s.block_size & (s.block_size - 1)) == 0 && s.block_size <= 256, "scheduler.block_size",
            "must be a power of two <= 256, got " + std::to_string(s.block_size));
  k.at_least(s.kv_tokens, 1, "scheduler.kv_tokens");
  k.require(s.kv_tokens >= s.block_size, "scheduler.kv_tokens",
            "must hold at least one block (block_size " + std::to_string(s.block_size) + "), got " +
                std::to_string(s.kv_tokens));
  k.require(s.kv_fraction > 0 && s.kv_fraction <= 1, "scheduler.kv_fraction",
            "must be in (0, 1], got " + std::to_string(s.kv_fraction));
  k.at_least(s.max_context, 0, "scheduler.max_context");
  k.at_least(s.micro_batches, 1, "scheduler.micro_batches");
}

void check_fault_tolerance(const checker& k, const fault_tolerance_section& f) {
  k.positive_ms(f.heartbeat_interval, "fault_tolerance.heartbeat_interval");
  k.positive_ms(f.heartbeat_timeout, "fault_tolerance.heartbeat_timeout");
  k.positive_ms(f.collective_timeout, "fault_tolerance.collective_timeout");
  k.require(f.step_timeout >= f.collective_timeout, "fault_tolerance.step_timeout",
            "must be at least collective_timeout (" + std::to_string(f.step_timeout.count()) + "ms < " +
                std::to_string(f.collective_timeout.count()) + "ms)");
  k.positive_ms(f.request_wait, "fault_tolerance.request_wait");
  k.require(f.heartbeat_interval < f.heartbeat_timeout, "fault_tolerance.heartbeat_interval",
            "must be shorter than heartbeat_timeout (" + std::to_string(f.heartbeat_interval.count()) +
                "ms >= " + std::to_string(f.heartbeat_timeout.count()) + "ms)");
  k.at_least(f.max_restarts, 0, "fault_tolerance.max_restarts");
  k.at_least(f.request_retries, 0, "fault_tolerance.request_retries");
  k.positive_ms(f.drain_timeout, "fault_tolerance.drain_timeout");
  k.positive_ms(f.stage_recovery_timeout, "fault_tolerance.stage_recovery_timeout");
}

void check_autoscale(const checker& k, const autoscale_section& a, const parallel_section& p) {
  const std::string replicas = "parallel.replicas (" + std::to_string(p.replicas) + ")";
  k.at_least(a.min_replicas, 1, "autoscale.min_replicas");
  k.require(a.min_replicas <= p.replicas, "autoscale.min_replicas",
            "must be at most " + replicas + ", got " + std::to_string(a.min_replicas));
  k.at_least(a.max_replicas, 0, "autoscale.max_replicas");
  k.require(a.max_replicas <= p.replicas, "autoscale.max_replicas",
            "must be at most " + replicas + ": the devices in the file bound it, got " +
                std::to_string(a.max_replicas));
  k.require(a.max_replicas == 0 || a.max_replicas >= a.min_replicas, "autoscale.max_replicas",
            "must be 0 (parallel.replicas) or at least min_replicas (" + std::to_string(a.min_replicas) +
                "), got " + std::to_string(a.max_replicas));
  k.positive_ms(a.interval, "autoscale.interval");
  k.require(a.scale_up_queue > 0, "autoscale.scale_up_queue",
            "must be > 0, got " + std::to_string(a.scale_up_queue));
  k.require(a.scale_up_kv > 0 && a.scale_up_kv <= 1, "autoscale.scale_up_kv",
            "must be in (0, 1], got " + std::to_string(a.scale_up_kv));
  k.require(a.scale_down_load >= 0 && a.scale_down_load < a.scale_up_queue, "autoscale.scale_down_load",
            "must be >= 0 and below scale_up_queue (" + std::to_string(a.scale_up_queue) + "), got " +
                std::to_string(a.scale_down_load));
  k.require(a.scale_down_after.count() >= 0, "autoscale.scale_down_after",
            "must not be negative, got " + std::to_string(a.scale_down_after.count()) + "ms");
  k.require(a.cooldown.count() >= 0, "autoscale.cooldown",
            "must not be negative, got " + std::to_string(a.cooldown.count()) + "ms");
}

// ---- overrides ----------------------------------------------------------------------

/// One step of a key path: a key, or an index into a list.
struct path_step {
  std::string key;
  long index = -1;
};

std::vector<path_step> split_path(const std::string& path, const std::string& source) {
  std::vector<path_step> steps;
  auto bad = [&](const std::string& why) -> config_error {
    return config_error(source, "", "bad key path \"" + path + "\": " + why);
  };
  std::size_t i = 0;
  while (i < path.size()) {
    if (path[i] == '[') {
      std::size_t close = path.find(']', i);
      if (steps.empty() || close == std::string::npos || close == i + 1 || close - i > 7) throw bad("bad [index]");
      const std::string digits = path.substr(i + 1, close - i - 1);
      if (!std::all_of(digits.begin(), digits.end(), [](char ch) { return ch >= '0' && ch <= '9'; }))
        throw bad("bad [index]");
      steps.push_back({"", std::stol(digits)});
      i = close + 1;
      if (i < path.size() && path[i] != '.' && path[i] != '[') throw bad("expected . or [ after ]");
      if (i < path.size() && path[i] == '.') ++i;
      continue;
    }
    std::size_t end = path.find_first_of(".[", i);
    if (end == std::string::npos) end = path.size();
    if (end == i) throw bad("empty key");
    steps.push_back({path.substr(i, end - i), -1});
    i = end;
    if (i < path.size() && path[i] == '.' && ++i == path.size()) throw bad("empty key");
  }
  if (steps.empty()) throw bad("empty key");
  return steps;
}

/// Sets `value` at `steps` inside `root`, creating maps for missing keys (the parser then
/// rejects unknown ones) and appending when an index equals the list's length.
void set_at(YAML::Node root, const std::vector<path_step>& steps, const YAML::Node& value,
            const std::string& source) {
  YAML::Node cur = root;
  std::string where;
  for (std::size_t s = 0; s < steps.size(); ++s) {
    const path_step& step = steps[s];
    const bool last = s + 1 == steps.size();
    if (step.index < 0) {
      if (cur.IsDefined() && !cur.IsNull() && !cur.IsMap())
        throw config_error(source, where, "is a value, not a section: it has no key \"" + step.key + "\"");
      where = join(where, step.key);
      if (last) {
        cur[step.key] = value;
        return;
      }
      YAML::Node next = cur[step.key];
      cur.reset(next);
      continue;
    }
    if (!cur.IsDefined()) {
      cur = YAML::Node(YAML::NodeType::Null);  // an unknown key: the parser names it, with a suggestion
      return;
    }
    if (!cur.IsSequence()) throw config_error(source, where, "is not a list: it has no [index]");
    const std::size_t size = cur.size(), idx = static_cast<std::size_t>(step.index);
    if (idx > size)
      throw config_error(source, indexed(where, idx),
                         "no such entry (" + where + " has " + std::to_string(size) + "; use [" +
                             std::to_string(size) + "] to append one)");
    where = indexed(where, idx);
    if (idx == size) cur.push_back(last ? value : YAML::Node(YAML::NodeType::Map));
    else if (last) cur[idx] = value;
    if (last) return;
    YAML::Node next = cur[idx];
    cur.reset(next);
  }
}

std::string yaml_load_error(const YAML::Exception& e) {
  if (e.mark.is_null()) return "YAML error: " + e.msg;
  return "line " + std::to_string(e.mark.line + 1) + ", column " + std::to_string(e.mark.column + 1) +
         ": YAML syntax error: " + e.msg;
}

void emit_string_list(YAML::Emitter& out, const std::vector<std::string>& v) {
  out << YAML::Flow << YAML::BeginSeq;
  for (const auto& s : v) out << YAML::DoubleQuoted << s;
  out << YAML::EndSeq;
}

/// "250ms", "2s" or "5m" for a positive duration; a plain integer otherwise (reads back the same).
std::string ms(std::chrono::milliseconds v) {
  const int64_t n = v.count();
  if (n <= 0) return std::to_string(n);
  if (n % 60000 == 0) return std::to_string(n / 60000) + "m";
  if (n % 1000 == 0) return std::to_string(n / 1000) + "s";
  return std::to_string(n) + "ms";
}

}  // namespace

config_error::config_error(const std::string& source, const std::string& path, const std::string& what)
    : std::runtime_error(message_of(source, path, what)), path(path) {}

cluster_config parse_cluster_config(const std::string& yaml_text, const std::string& source) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    throw config_error(source, "", yaml_load_error(e));
  }
  cluster_config c;
  try {
    c = read_tree(root, reader(source, true));
  } catch (const YAML::Exception& e) {
    throw config_error(source, "", yaml_load_error(e));
  }
  c.source = source;
  validate(c);
  return c;
}

cluster_config load_cluster_config(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw config_error(path, "", std::string("cannot open the cluster file: ") + std::strerror(errno));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) throw config_error(path, "", "cannot read the cluster file");
  return parse_cluster_config(text.str(), path);
}

void apply_overrides(cluster_config& c, const std::vector<std::string>& overrides) {
  YAML::Node root = YAML::Load(to_yaml(c));
  cluster_config next = c;
  std::string applied;
  for (const std::string& o : overrides) {
    const std::string source = "--set " + o;
    const std::size_t eq = o.find('=');
    if (eq == std::string::npos)
      throw config_error(source, "", "an override reads key.path=value (for example parallel.tensor=2)");
    std::string path = o.substr(0, eq);
    path.erase(0, path.find_first_not_of(" \t"));
    path.erase(path.find_last_not_of(" \t") + 1);
    YAML::Node value;
    try {
      value = YAML::Load(o.substr(eq + 1));
    } catch (const YAML::Exception& e) {
      throw config_error(source, path, "the value is not valid YAML: " + e.msg);
    }
    set_at(root, split_path(path, source), value, source);
    try {
      next = read_tree(root, reader(source, false));
    } catch (const YAML::Exception& e) {
      throw config_error(source, path, "YAML error: " + e.msg);
    }
    applied += (applied.empty() ? "" : ", ") + source;
  }
  next.source = c.source;
  cluster_config labelled = next;
  labelled.source = (c.source.empty() ? "<config>" : c.source) + (applied.empty() ? "" : " with " + applied);
  validate(labelled);
  c = std::move(next);
}

void validate(const cluster_config& c) {
  const checker k{c.source.empty() ? "<config>" : c.source};
  k.require(!c.model.path.empty(), "model.path", "must not be empty (use \"default\" for the default model)");
  k.require(c.model.dtype == "bf16" || c.model.dtype == "f16", "model.dtype",
            "must be bf16 or f16 (the GPU compute type), got \"" + c.model.dtype + "\"");
  k.require(c.model.load_format == "auto" || c.model.load_format == "random", "model.load_format",
            "must be auto or random, got \"" + c.model.load_format + "\"");
  check_parallel(k, c.parallel);
  check_server(k, c);
  check_nodes(k, c);
  check_scheduler(k, c.scheduler);
  check_fault_tolerance(k, c.fault_tolerance);
  check_autoscale(k, c.autoscale, c.parallel);
}

cluster_config default_cluster_config() {
  cluster_config c;
  node_section local;
  local.name = "local";
  local.host = "127.0.0.1";
  local.devices = {"cpu"};
  c.nodes.push_back(local);
  return c;
}

std::string to_yaml(const cluster_config& c) {
  YAML::Emitter out;
  const auto& p = c.parallel;
  out << YAML::BeginMap;
  out << YAML::Key << "model" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "path" << YAML::Value << YAML::DoubleQuoted << c.model.path << YAML::Key << "dtype"
      << YAML::Value << c.model.dtype << YAML::Key << "load_format" << YAML::Value << c.model.load_format
      << YAML::EndMap;
  out << YAML::Key << "parallel" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "tensor" << YAML::Value << p.tensor << YAML::Key << "pipeline" << YAML::Value << p.pipeline
      << YAML::Key << "replicas" << YAML::Value << p.replicas << YAML::Key << "layers_per_stage" << YAML::Value
      << YAML::Flow << p.layers_per_stage << YAML::Key << "allow_uneven_heads" << YAML::Value
      << p.allow_uneven_heads << YAML::EndMap;
  out << YAML::Key << "head" << YAML::Value << YAML::BeginMap << YAML::Key << "host" << YAML::Value
      << YAML::DoubleQuoted << c.head.host << YAML::Key << "port" << YAML::Value << c.head.port << YAML::EndMap;
  out << YAML::Key << "nodes" << YAML::Value << YAML::BeginSeq;
  for (const auto& n : c.nodes) {
    out << YAML::BeginMap << YAML::Key << "name" << YAML::Value << YAML::DoubleQuoted << n.name << YAML::Key
        << "host" << YAML::Value << YAML::DoubleQuoted << n.host << YAML::Key << "port" << YAML::Value << n.port
        << YAML::Key << "devices" << YAML::Value;
    emit_string_list(out, n.devices);
    out << YAML::Key << "threads" << YAML::Value << n.threads << YAML::EndMap;
  }
  out << YAML::EndSeq;
  const auto& s = c.server;
  out << YAML::Key << "server" << YAML::Value << YAML::BeginMap << YAML::Key << "host" << YAML::Value
      << YAML::DoubleQuoted << s.host << YAML::Key << "port" << YAML::Value << s.port << YAML::Key << "model_name"
      << YAML::Value << YAML::DoubleQuoted << s.model_name << YAML::Key << "api_keys"
      << YAML::Value;
  emit_string_list(out, s.api_keys);
  out << YAML::Key << "max_queue_requests" << YAML::Value << s.max_queue_requests << YAML::Key
      << "max_queue_tokens" << YAML::Value << s.max_queue_tokens << YAML::Key << "max_body_bytes" << YAML::Value
      << s.max_body_bytes << YAML::Key << "max_n" << YAML::Value << s.max_n << YAML::EndMap;
  const auto& q = c.scheduler;
  out << YAML::Key << "scheduler" << YAML::Value << YAML::BeginMap << YAML::Key << "max_batch_tokens"
      << YAML::Value << q.max_batch_tokens << YAML::Key << "max_seqs" << YAML::Value << q.max_seqs << YAML::Key
      << "kv_tokens" << YAML::Value << q.kv_tokens << YAML::Key << "kv_fraction" << YAML::Value << q.kv_fraction
      << YAML::Key << "block_size" << YAML::Value << q.block_size
      << YAML::Key << "max_context" << YAML::Value << q.max_context << YAML::Key << "prefix_caching"
      << YAML::Value << q.prefix_caching << YAML::Key << "micro_batches" << YAML::Value << q.micro_batches
      << YAML::EndMap;
  const auto& f = c.fault_tolerance;
  out << YAML::Key << "fault_tolerance" << YAML::Value << YAML::BeginMap << YAML::Key << "heartbeat_interval"
      << YAML::Value << ms(f.heartbeat_interval) << YAML::Key << "heartbeat_timeout" << YAML::Value
      << ms(f.heartbeat_timeout) << YAML::Key << "collective_timeout" << YAML::Value << ms(f.collective_timeout)
      << YAML::Key << "step_timeout" << YAML::Value << ms(f.step_timeout) << YAML::Key << "request_wait" << YAML::Value << ms(f.request_wait) << YAML::Key << "max_restarts"
      << YAML::Value << f.max_restarts << YAML::Key << "request_retries" << YAML::Value << f.request_retries
      << YAML::Key << "drain_timeout" << YAML::Value << ms(f.drain_timeout) << YAML::Key << "stage_recovery"
      << YAML::Value << f.stage_recovery << YAML::Key << "stage_recovery_timeout" << YAML::Value
      << ms(f.stage_recovery_timeout) << YAML::EndMap;
  const auto& a = c.autoscale;
  out << YAML::Key << "autoscale" << YAML::Value << YAML::BeginMap << YAML::Key << "enabled" << YAML::Value
      << a.enabled << YAML::Key << "min_replicas" << YAML::Value << a.min_replicas << YAML::Key << "max_replicas"
      << YAML::Value << a.max_replicas << YAML::Key << "interval" << YAML::Value << ms(a.interval) << YAML::Key
      << "scale_up_queue" << YAML::Value << a.scale_up_queue << YAML::Key << "scale_up_kv" << YAML::Value
      << a.scale_up_kv << YAML::Key << "scale_down_load" << YAML::Value << a.scale_down_load << YAML::Key
      << "scale_down_after" << YAML::Value << ms(a.scale_down_after) << YAML::Key << "cooldown" << YAML::Value
      << ms(a.cooldown) << YAML::EndMap;
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

}  // namespace troupe

namespace troupe {

std::string served_model_name(const cluster_config& c) {
  if (!c.server.model_name.empty()) return c.server.model_name;
  std::string path = c.model.path;
  try {
    path = resolve_model_path(path);
  } catch (const std::exception&) {
    // The default model is not fetched: name it by its key ("default").
  }
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  const auto slash = path.find_last_of('/');
  std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
  const std::string ext = ".gguf";
  if (name.size() > ext.size() && name.compare(name.size() - ext.size(), ext.size(), ext) == 0)
    name.resize(name.size() - ext.size());
  return name;
}

}  // namespace troupe
