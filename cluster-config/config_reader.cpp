// The YAML reading helpers of the cluster file (see config_reader.h).
#include "cluster-config/config_reader.h"

#include <cmath>

namespace troupe::config_detail {

namespace {

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

}  // namespace

std::string join(const std::string& base, const std::string& key) {
  return base.empty() ? key : base + "." + key;
}

std::string indexed(const std::string& base, std::size_t i) {
  return base + "[" + std::to_string(i) + "]";
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

std::string yaml_load_error(const YAML::Exception& e) {
  if (e.mark.is_null()) return "YAML error: " + e.msg;
  return "line " + std::to_string(e.mark.line + 1) + ", column " + std::to_string(e.mark.column + 1) +
         ": YAML syntax error: " + e.msg;
}

}  // namespace troupe::config_detail
