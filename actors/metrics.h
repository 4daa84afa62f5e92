#pragma once
/// A small, thread-safe Prometheus metrics registry: counters, gauges and histograms with
/// labels, rendered in the text exposition format 0.0.4. No CAF, no I/O: the gateway
/// serves registry::render() on GET /metrics.
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace troupe::metrics {

/// Label values of one series, in the family's label-name order.
using label_values = std::vector<std::string>;

/// A monotonically increasing value (thread-safe, lock-free).
class counter {
 public:
  /// Adds `v` (>= 0; a negative or NaN `v` throws std::invalid_argument).
  void inc(double v = 1.0);
  /// The current value.
  double value() const;

 private:
  std::atomic<double> value_{0.0};
};

/// A value that goes up and down (thread-safe, lock-free).
class gauge {
 public:
  /// Sets the value.
  void set(double v);
  /// Adds `v` (may be negative).
  void add(double v);
  /// The current value.
  double value() const;

 private:
  std::atomic<double> value_{0.0};
};

/// Observations counted into fixed buckets (thread-safe, lock-free).
class histogram {
 public:
  /// A histogram over the upper bounds `buckets` (strictly increasing, finite; the
  /// implicit +Inf bucket is added). Throws std::invalid_argument otherwise.
  explicit histogram(std::vector<double> buckets);
  /// Counts one observation; NaN is ignored.
  void observe(double v);
  /// Observations so far.
  uint64_t count() const;
  /// Sum of the observations so far.
  double sum() const;
  /// The finite upper bounds, as given.
  const std::vector<double>& bounds() const { return bounds_; }
  /// Cumulative counts per bucket: one per bound, then +Inf (equal to the total).
  std::vector<uint64_t> cumulative_counts() const;

 private:
  std::vector<double> bounds_;                            // [n] finite upper bounds
  std::unique_ptr<std::atomic<uint64_t>[]> per_bucket_;   // [n + 1] non-cumulative, last = +Inf
  std::atomic<uint64_t> count_{0};
  std::atomic<double> sum_{0.0};
};

/// A metric name with label names; with() returns a stable reference (created on first
/// use, thread-safe).
template <class M>
class family {
 public:
  /// A family of series made by `make` (the registry builds these; not for direct use).
  family(std::string name, std::vector<std::string> label_names, std::function<std::unique_ptr<M>()> make)
      : name_(std::move(name)), label_names_(std::move(label_names)), make_(std::move(make)) {}

  /// The series of `values` (one per label name), created on first use. Throws
  /// std::invalid_argument when the number of values does not match the label names.
  M& with(const label_values& values = {}) {
    if (values.size() != label_names_.size())
      throw std::invalid_argument("metric " + name_ + ": " + std::to_string(values.size()) +
                                  " label values given, " + std::to_string(label_names_.size()) +
                                  " label names declared");
    std::lock_guard<std::mutex> lock(mutex_);
    auto& slot = series_[values];
    if (!slot) slot = make_();
    return *slot;
  }

  /// The metric name.
  const std::string& name() const { return name_; }
  /// The label names, in order.
  const std::vector<std::string>& label_names() const { return label_names_; }

  /// Calls `f(values, series)` for every series, in sorted label-value order.
  template <class F>
  void for_each(F&& f) const {
    std::lock_guard<std::mutex> lock(mutex_);
    for (const auto& [values, series] : series_) f(values, *series);
  }

 private:
  std::string name_;
  std::vector<std::string> label_names_;
  std::function<std::unique_ptr<M>()> make_;
  mutable std::mutex mutex_;
  std::map<label_values, std::unique_ptr<M>> series_;
};

/// Every metric family of a process, rendered together. Registering a name twice with the
/// same type, labels (and buckets) returns the existing family; otherwise it throws.
class registry {
 public:
  registry();
  ~registry();
  registry(const registry&) = delete;
  registry& operator=(const registry&) = delete;

  /// A counter family. Names follow [a-zA-Z_:][a-zA-Z0-9_:]*, label names
  /// [a-zA-Z_][a-zA-Z0-9_]* (not starting with "__", no duplicates); std::invalid_argument otherwise.
  family<counter>& counter_family(const std::string& name, const std::string& help,
                                  std::vector<std::string> label_names = {});
  /// A gauge family (same rules as counter_family).
  family<gauge>& gauge_family(const std::string& name, const std::string& help,
                              std::vector<std::string> label_names = {});
  /// A histogram family over `buckets` (strictly increasing, finite); "le" is not a
  /// valid label name here.
  family<histogram>& histogram_family(const std::string& name, const std::string& help,
                                      std::vector<double> buckets,
                                      std::vector<std::string> label_names = {});
  /// Prometheus text exposition format 0.0.4 (HELP, TYPE, escaped label values, +Inf
  /// bucket, _sum, _count), families sorted by name, series by label values.
  std::string render() const;
  /// The registered family names, sorted.
  std::vector<std::string> names() const;

 private:
  struct entry;
  entry& add_entry(const std::string& name, const std::string& help, const std::string& type,
                   const std::vector<std::string>& label_names, const std::vector<double>& buckets);

  mutable std::mutex mutex_;
  std::map<std::string, std::unique_ptr<entry>> entries_;
};

/// Histogram buckets for latencies in seconds, 0.001 .. 120.
std::vector<double> latency_buckets();
/// Histogram buckets for token counts, powers of two 1 .. 32768.
std::vector<double> token_buckets();

/// `v` as the exposition format writes it: shortest round-trip decimal, +Inf, -Inf, NaN.
std::string format_value(double v);
/// A label value escaped for the exposition format (\\, \", \n).
std::string escape_label_value(const std::string& v);
/// HELP text escaped for the exposition format (\\, \n).
std::string escape_help(const std::string& v);

}  // namespace troupe::metrics
