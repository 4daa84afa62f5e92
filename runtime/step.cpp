#include "runtime/step.h"

#include <stdexcept>

namespace troupe {

bool needs_history(const sampling_params& p) {
  return p.repetition_penalty != 1.0f || p.frequency_penalty != 0.0f || p.presence_penalty != 0.0f;
}

std::vector<sample_result> sample_rows(tensor_view logits, const std::vector<sample_request>& requests,
                                       sampler_scratch& scratch) {
  if (logits.shape.rank != 2 || logits.shape[0] != static_cast<int64_t>(requests.size()))
    throw std::invalid_argument("sample_rows: logits " + logits.shape.str() + " for " +
                                std::to_string(requests.size()) + " requests");
  const int vocab = static_cast<int>(logits.shape[1]);
  std::vector<sample_result> out;
  out.reserve(requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    const auto& r = requests[i];
    out.push_back(sample(logits.f32() + i * static_cast<size_t>(vocab), vocab, r.params, r.history,
                         r.n_prompt, r.token_index, scratch));
  }
  return out;
}

}  // namespace troupe
