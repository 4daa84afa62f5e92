#include "runtime/engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <sstream>
#include <stdexcept>

#include "kernels/sample.h"

namespace troupe {

namespace {

std::string show(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

[[noreturn]] void reject(const std::string& field, const std::string& rule, const std::string& got) {
  throw std::invalid_argument(field + " must be " + rule + ", got " + got);
}

/// True when lo <= v <= hi (false for NaN).
bool in_closed(float v, float lo, float hi) { return v >= lo && v <= hi; }

/// Checks everything sample() takes besides the parameters.
void check_inputs(const float* logits, int vocab, const std::vector<int32_t>& history,
                  int n_prompt) {
  if (vocab <= 0) reject("vocab", ">= 1", std::to_string(vocab));
  if (logits == nullptr) throw std::invalid_argument("logits must not be null");
  if (n_prompt < 0 || static_cast<size_t>(n_prompt) > history.size())
    reject("n_prompt", "in [0, " + std::to_string(history.size()) + "] (the history length)",
           std::to_string(n_prompt));
  for (size_t i = 0; i < history.size(); ++i)
    if (history[i] < 0 || history[i] >= vocab)
      reject("history[" + std::to_string(i) + "]", "a token id in [0, " + std::to_string(vocab) + ")",
             std::to_string(history[i]));
}

/// Applies the penalties without re-checking the inputs (already checked by the caller).
void penalize(float* x, const sampling_params& p, const std::vector<int32_t>& history,
              int n_prompt) {
  std::vector<int32_t> toks;
  if (p.repetition_penalty != 1.0f) {
    toks.assign(history.begin(), history.end());
    std::sort(toks.begin(), toks.end());
    toks.erase(std::unique(toks.begin(), toks.end()), toks.end());
    for (int32_t t : toks) x[t] = x[t] > 0.0f ? x[t] / p.repetition_penalty : x[t] * p.repetition_penalty;
  }
  if (p.frequency_penalty != 0.0f || p.presence_penalty != 0.0f) {
    toks.assign(history.begin() + n_prompt, history.end());
    std::sort(toks.begin(), toks.end());
    for (size_t i = 0; i < toks.size();) {
      size_t j = i;
      while (j < toks.size() && toks[j] == toks[i]) ++j;
      const float count = static_cast<float>(j - i);
      x[toks[i]] -= p.frequency_penalty * count + p.presence_penalty;
      i = j;
    }
  }
}

/// The kernel's parameters of one draw.
kernels::sample_row row_of(const sampling_params& p, uint64_t token_index) {
  kernels::sample_row row;
  row.temperature = p.temperature;
  row.top_p = p.top_p;
  row.top_k = p.top_k;
  row.min_p = p.min_p;
  row.seed = p.seed;
  row.token_index = token_index;
  return row;
}

}  // namespace

void validate(const sampling_params& p) {
  if (!in_closed(p.temperature, 0.0f, 100.0f)) reject("temperature", "in [0, 100]", show(p.temperature));
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f)) reject("top_p", "in (0, 1]", show(p.top_p));
  if (p.top_k < -1) reject("top_k", "-1 or 0 (off) or >= 1", std::to_string(p.top_k));
  if (!in_closed(p.min_p, 0.0f, 1.0f)) reject("min_p", "in [0, 1]", show(p.min_p));
  if (!(p.repetition_penalty > 0.0f && std::isfinite(p.repetition_penalty)))
    reject("repetition_penalty", "in (0, inf)", show(p.repetition_penalty));
  if (!in_closed(p.frequency_penalty, -2.0f, 2.0f))
    reject("frequency_penalty", "in [-2, 2]", show(p.frequency_penalty));
  if (!in_closed(p.presence_penalty, -2.0f, 2.0f))
    reject("presence_penalty", "in [-2, 2]", show(p.presence_penalty));
  if (p.logprobs < 0 || p.logprobs > max_logprobs)
    reject("logprobs", "in [0, " + std::to_string(max_logprobs) + "]", std::to_string(p.logprobs));
  if (p.max_tokens < 1) reject("max_tokens", ">= 1", std::to_string(p.max_tokens));
  if (p.stop.size() > max_stop_strings)
    reject("stop", "at most " + std::to_string(max_stop_strings) + " strings",
           std::to_string(p.stop.size()) + " strings");
  for (size_t i = 0; i < p.stop.size(); ++i)
    if (p.stop[i].empty()) reject("stop[" + std::to_string(i) + "]", "a non-empty string", "\"\"");
  for (size_t i = 0; i < p.stop_token_ids.size(); ++i)
    if (p.stop_token_ids[i] < 0)
      reject("stop_token_ids[" + std::to_string(i) + "]", ">= 0", std::to_string(p.stop_token_ids[i]));
}

void apply_penalties(float* logits, int vocab, const sampling_params& p,
                     const std::vector<int32_t>& history, int n_prompt) {
  check_inputs(logits, vocab, history, n_prompt);
  penalize(logits, p, history, n_prompt);
}

sample_result sample(const float* logits, int vocab, const sampling_params& p,
                     const std::vector<int32_t>& history, int n_prompt, uint64_t token_index) {
  sampler_scratch scratch;
  return sample(logits, vocab, p, history, n_prompt, token_index, scratch);
}

sample_result sample(const float* logits, int vocab, const sampling_params& p,
                     const std::vector<int32_t>& history, int n_prompt, uint64_t token_index,
                     sampler_scratch& scratch) {
  validate(p);
  check_inputs(logits, vocab, history, n_prompt);
  std::vector<float>& x = scratch.logits;
  x.assign(logits, logits + vocab);
  penalize(x.data(), p, history, n_prompt);

  const kernels::cpu::row_sample s =
      kernels::cpu::sample_host(x.data(), vocab, row_of(p, token_index), p.logprobs, scratch.draw);
  sample_result r{s.token, s.logprob, {}};
  r.top.reserve(s.top.size());
  for (const auto& [token, logprob] : s.top) r.top.push_back({token, logprob});
  return r;
}

}  // namespace troupe
