#include "runtime/model/generation_defaults.h"

#include <sstream>

namespace troupe {

namespace {

/// "must be in [lo, hi], got v" when a set `v` lies outside [lo, hi] (or is `lo` itself
/// when `open_low`), else "".
template <class T>
std::string out_of_range(const std::optional<T>& v, double lo, double hi, bool open_low = false) {
  if (!v || (*v >= lo && *v <= hi && !(open_low && *v == lo))) return "";
  std::ostringstream os;
  os << "must be in " << (open_low ? "(" : "[") << lo << ", " << hi << "], got " << *v;
  return os.str();
}

}  // namespace

generation_defaults generation_defaults::overlaid_with(const generation_defaults& over) const {
  generation_defaults r = *this;
  if (over.temperature) r.temperature = over.temperature;
  if (over.top_p) r.top_p = over.top_p;
  if (over.top_k) r.top_k = over.top_k;
  if (over.min_p) r.min_p = over.min_p;
  if (over.repetition_penalty) r.repetition_penalty = over.repetition_penalty;
  if (over.presence_penalty) r.presence_penalty = over.presence_penalty;
  if (over.frequency_penalty) r.frequency_penalty = over.frequency_penalty;
  if (over.max_tokens) r.max_tokens = over.max_tokens;
  return r;
}

bool generation_defaults::empty() const { return *this == generation_defaults{}; }

bool generation_defaults::operator==(const generation_defaults& o) const {
  return temperature == o.temperature && top_p == o.top_p && top_k == o.top_k && min_p == o.min_p &&
         repetition_penalty == o.repetition_penalty && presence_penalty == o.presence_penalty &&
         frequency_penalty == o.frequency_penalty && max_tokens == o.max_tokens;
}

std::pair<std::string, std::string> first_problem(const generation_defaults& g) {
  const std::pair<const char*, std::string> checks[] = {
      {"temperature", out_of_range(g.temperature, 0, 2)},
      {"top_p", out_of_range(g.top_p, 0, 1, true)},
      {"top_k", g.top_k && *g.top_k < -1 ? "must be -1, 0 (off) or a positive count, got " +
                                               std::to_string(*g.top_k)
                                         : ""},
      {"min_p", out_of_range(g.min_p, 0, 1)},
      {"repetition_penalty", out_of_range(g.repetition_penalty, 0, 100, true)},
      {"presence_penalty", out_of_range(g.presence_penalty, -2, 2)},
      {"frequency_penalty", out_of_range(g.frequency_penalty, -2, 2)},
      {"max_tokens", g.max_tokens && *g.max_tokens < 1 ? "must be >= 1, got " + std::to_string(*g.max_tokens)
                                                       : ""},
  };
  for (const auto& [field, why] : checks)
    if (!why.empty()) return {field, why};
  return {"", ""};
}

std::string describe_generation(const generation_defaults& g) {
  std::ostringstream os;
  auto field = [&os](const char* name, const auto& v) {
    if (v) os << (os.tellp() > 0 ? ", " : "") << name << " " << *v;
  };
  for_each_field(g, field);
  return g.empty() ? "none (OpenAI's)" : os.str();
}

generation_defaults default_model_generation() {
  generation_defaults g;
  g.temperature = 0.2f;
  g.top_p = 0.9f;
  return g;
}

}  // namespace troupe
