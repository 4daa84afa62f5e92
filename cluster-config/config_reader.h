#pragma once
// Internal to cluster-config/: the YAML reading machinery the cluster file's parser and
// its --set overrides share. Every error names the source and the key path.
#include "cluster-config/cluster_config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace troupe::config_detail {

/// "base.key" ("key" when base is empty).
std::string join(const std::string& base, const std::string& key);
/// "base[i]".
std::string indexed(const std::string& base, std::size_t i);
/// " (did you mean X?)" for the closest known key within a few edits, else "".
std::string did_you_mean(const std::string& key, const std::vector<std::string>& known);
/// How a YAML value looks, for "expected X, got Y".
std::string describe(const YAML::Node& n);
/// "" when `d` is "cpu" or "cuda:N", else what is wrong with it.
std::string device_problem(const std::string& d);
/// Milliseconds from "250ms", "1s", "1.5s", "2m", "1h"; false when the text is not one.
bool parse_duration(const std::string& text, std::chrono::milliseconds& out);
/// A YAML load error as "line L, column C: YAML syntax error: ...".
std::string yaml_load_error(const YAML::Exception& e);

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
  void read(const YAML::Node& n, const std::string& path, float& out) const {
    double d = 0;
    read(n, path, d);
    out = static_cast<float>(d);
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
  /// An optional value: absent or null leaves it unset.
  template <class T>
  void get(const std::string& key, std::optional<T>& out) {
    YAML::Node n = child(key);
    if (!n.IsDefined() || n.IsNull()) return;
    T v{};
    r_.read(n, path(key), v);
    out = v;
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

/// `gateways:` (cluster_config_gateways.cpp): reads the list (null = none), writes it
/// as YAML, and checks its entries (hosts, ports, clashes with server.host:server.port).
void read_gateways(const reader& r, const YAML::Node& list, std::vector<gateway_section>& gateways);
void emit_gateways(YAML::Emitter& out, const std::vector<gateway_section>& gateways);
void check_gateways(const std::string& source, const cluster_config& c);

/// The whole tree into a config (defaults for what is absent); no validation.
cluster_config read_tree(const YAML::Node& root, const reader& r);

}  // namespace troupe::config_detail
