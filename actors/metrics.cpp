#include "actors/metrics.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <sstream>

namespace troupe::metrics {

namespace {

/// Adds `v` to an atomic double (C++17 has no fetch_add for floating point).
void atomic_add(std::atomic<double>& a, double v) {
  double old = a.load(std::memory_order_relaxed);
  while (!a.compare_exchange_weak(old, old + v, std::memory_order_relaxed)) {
  }
}

bool is_name_start(char c, bool colon_ok) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (colon_ok && c == ':');
}

bool is_name_char(char c, bool colon_ok) { return is_name_start(c, colon_ok) || (c >= '0' && c <= '9'); }

/// True when `s` matches [a-zA-Z_:][a-zA-Z0-9_:]* (metric) or [a-zA-Z_][a-zA-Z0-9_]* (label).
bool valid_name(const std::string& s, bool colon_ok) {
  if (s.empty() || !is_name_start(s[0], colon_ok)) return false;
  return std::all_of(s.begin() + 1, s.end(), [&](char c) { return is_name_char(c, colon_ok); });
}

void validate_names(const std::string& name, const std::vector<std::string>& label_names, bool histogram) {
  if (!valid_name(name, true))
    throw std::invalid_argument("metric name '" + name + "' does not match [a-zA-Z_:][a-zA-Z0-9_:]*");
  std::set<std::string> seen;
  for (const auto& l : label_names) {
    if (!valid_name(l, false))
      throw std::invalid_argument("metric " + name + ": label name '" + l +
                                  "' does not match [a-zA-Z_][a-zA-Z0-9_]*");
    if (l.rfind("__", 0) == 0)
      throw std::invalid_argument("metric " + name + ": label name '" + l + "' is reserved (starts with __)");
    if (histogram && l == "le")
      throw std::invalid_argument("metric " + name + ": label name 'le' is reserved for histogram buckets");
    if (!seen.insert(l).second)
      throw std::invalid_argument("metric " + name + ": label name '" + l + "' given twice");
  }
}

void validate_buckets(const std::vector<double>& b, const std::string& where) {
  for (size_t i = 0; i < b.size(); ++i) {
    if (!std::isfinite(b[i]))
      throw std::invalid_argument(where + ": bucket " + std::to_string(i) + " is not finite");
    if (i > 0 && !(b[i] > b[i - 1]))
      throw std::invalid_argument(where + ": buckets are not strictly increasing at index " + std::to_string(i));
  }
}

/// `{a="x",b="y"}` (with an optional trailing le pair), or "" when there are no labels.
std::string label_block(const std::vector<std::string>& names, const label_values& values,
                        const std::string& le = {}) {
  if (names.empty() && le.empty()) return {};
  std::string out = "{";
  for (size_t i = 0; i < names.size(); ++i) {
    if (i) out += ',';
    out += names[i] + "=\"" + escape_label_value(values[i]) + '"';
  }
  if (!le.empty()) out += std::string(names.empty() ? "" : ",") + "le=\"" + le + '"';
  return out + '}';
}

}  // namespace

void counter::inc(double v) {
  if (!(v >= 0.0)) throw std::invalid_argument("counter increment must be >= 0, got " + format_value(v));
  atomic_add(value_, v);
}

double counter::value() const { return value_.load(std::memory_order_relaxed); }

void gauge::set(double v) { value_.store(v, std::memory_order_relaxed); }

void gauge::add(double v) { atomic_add(value_, v); }

double gauge::value() const { return value_.load(std::memory_order_relaxed); }

histogram::histogram(std::vector<double> buckets)
    : bounds_(std::move(buckets)), per_bucket_(new std::atomic<uint64_t>[bounds_.size() + 1]) {
  validate_buckets(bounds_, "histogram");
  for (size_t i = 0; i <= bounds_.size(); ++i) per_bucket_[i].store(0, std::memory_order_relaxed);
}

void histogram::observe(double v) {
  if (std::isnan(v)) return;
  size_t i = std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin();
  per_bucket_[i].fetch_add(1, std::memory_order_relaxed);
  atomic_add(sum_, v);
  count_.fetch_add(1, std::memory_order_relaxed);
}

uint64_t histogram::count() const { return count_.load(std::memory_order_relaxed); }

double histogram::sum() const { return sum_.load(std::memory_order_relaxed); }

std::vector<uint64_t> histogram::cumulative_counts() const {
  std::vector<uint64_t> out(bounds_.size() + 1);
  uint64_t running = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    running += per_bucket_[i].load(std::memory_order_relaxed);
    out[i] = running;
  }
  return out;
}

struct registry::entry {
  std::string help;                                 ///< unescaped HELP text
  std::string type;                                 ///< "counter", "gauge" or "histogram"
  std::vector<std::string> label_names;
  std::vector<double> buckets;                      ///< histograms only
  std::unique_ptr<family<counter>> counters;        ///< set when type == "counter"
  std::unique_ptr<family<gauge>> gauges;            ///< set when type == "gauge"
  std::unique_ptr<family<histogram>> histograms;    ///< set when type == "histogram"
};

registry::registry() = default;
registry::~registry() = default;

registry::entry& registry::add_entry(const std::string& name, const std::string& help, const std::string& type,
                                     const std::vector<std::string>& label_names,
                                     const std::vector<double>& buckets) {
  validate_names(name, label_names, type == "histogram");
  auto it = entries_.find(name);
  if (it != entries_.end()) {
    const entry& e = *it->second;
    if (e.type != type || e.label_names != label_names || e.buckets != buckets)
      throw std::invalid_argument("metric " + name + " is already registered as a " + e.type +
                                  " with other labels or buckets");
    return *it->second;
  }
  auto e = std::make_unique<entry>();
  e->help = help;
  e->type = type;
  e->label_names = label_names;
  e->buckets = buckets;
  return *entries_.emplace(name, std::move(e)).first->second;
}

family<counter>& registry::counter_family(const std::string& name, const std::string& help,
                                          std::vector<std::string> label_names) {
  std::lock_guard<std::mutex> lock(mutex_);
  entry& e = add_entry(name, help, "counter", label_names, {});
  if (!e.counters)
    e.counters = std::make_unique<family<counter>>(name, label_names, [] { return std::make_unique<counter>(); });
  return *e.counters;
}

family<gauge>& registry::gauge_family(const std::string& name, const std::string& help,
                                      std::vector<std::string> label_names) {
  std::lock_guard<std::mutex> lock(mutex_);
  entry& e = add_entry(name, help, "gauge", label_names, {});
  if (!e.gauges)
    e.gauges = std::make_unique<family<gauge>>(name, label_names, [] { return std::make_unique<gauge>(); });
  return *e.gauges;
}

family<histogram>& registry::histogram_family(const std::string& name, const std::string& help,
                                              std::vector<double> buckets, std::vector<std::string> label_names) {
  validate_buckets(buckets, "metric " + name);
  std::lock_guard<std::mutex> lock(mutex_);
  entry& e = add_entry(name, help, "histogram", label_names, buckets);
  if (!e.histograms)
    e.histograms = std::make_unique<family<histogram>>(
        name, label_names, [buckets] { return std::make_unique<histogram>(buckets); });
  return *e.histograms;
}

std::string registry::render() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::string out;
  for (const auto& [name, e] : entries_) {
    out += "# HELP " + name + ' ' + escape_help(e->help) + '\n';
    out += "# TYPE " + name + ' ' + e->type + '\n';
    const auto& labels = e->label_names;
    auto scalar = [&](const label_values& v, double value) {
      out += name + label_block(labels, v) + ' ' + format_value(value) + '\n';
    };
    if (e->counters) e->counters->for_each([&](const label_values& v, const counter& c) { scalar(v, c.value()); });
    if (e->gauges) e->gauges->for_each([&](const label_values& v, const gauge& g) { scalar(v, g.value()); });
    if (!e->histograms) continue;
    e->histograms->for_each([&](const label_values& v, const histogram& h) {
      // Counts and sum are read separately from a live histogram; _count is taken from
      // the same snapshot as the buckets so that +Inf always equals _count.
      auto cumulative = h.cumulative_counts();
      for (size_t i = 0; i < cumulative.size(); ++i) {
        std::string le = i < h.bounds().size() ? format_value(h.bounds()[i]) : "+Inf";
        out += name + "_bucket" + label_block(labels, v, le) + ' ' + std::to_string(cumulative[i]) + '\n';
      }
      out += name + "_sum" + label_block(labels, v) + ' ' + format_value(h.sum()) + '\n';
      out += name + "_count" + label_block(labels, v) + ' ' + std::to_string(cumulative.back()) + '\n';
    });
  }
  return out;
}

std::vector<std::string> registry::names() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<std::string> out;
  for (const auto& kv : entries_) out.push_back(kv.first);
  return out;
}

std::vector<double> latency_buckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.4,
          0.5,   0.75,   1,     1.5,  2,    2.5,  5,    7.5,  10,  15,   20,  30,  60, 120};
}

std::vector<double> token_buckets() {
  std::vector<double> out;
  for (double v = 1; v <= 32768; v *= 2) out.push_back(v);
  return out;
}

std::string format_value(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[32];
  if (v == std::floor(v) && std::fabs(v) < 1e15) {
    std::snprintf(buf, sizeof buf, "%.0f", v);
    return buf;
  }
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof buf, "%.*g", precision, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  return buf;
}

std::string escape_label_value(const std::string& v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

std::string escape_help(const std::string& v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

}  // namespace troupe::metrics
