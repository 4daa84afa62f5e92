#pragma once
/// Token sampling on the host: penalties, greedy or temperature / top-k / top-p / min-p
/// sampling, and log-probabilities, with OpenAI / vLLM semantics.
///
/// A draw is a pure function of (logits, params, history, token_index): the randomness comes
/// from uniform01(seed, token_index) (kernels/base/rng.h), and nothing is shared between calls,
/// so a sequence samples the same token whatever batch it is in.
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/sample.h"

namespace troupe {

/// Sampling parameters of one request (OpenAI / vLLM semantics).
struct sampling_params {
  float temperature = 1.0f;         // [0, 100]; 0 (or below greedy_temperature) => greedy
  float top_p = 1.0f;               // (0, 1]
  int top_k = 0;                    // 0 or -1 => off
  float min_p = 0.0f;               // [0, 1]
  float repetition_penalty = 1.0f;  // > 0; prompt+output tokens: positive logit /= p, negative *= p
  float frequency_penalty = 0.0f;   // [-2, 2]; output tokens only, times count
  float presence_penalty = 0.0f;    // [-2, 2]; output tokens only
  uint64_t seed = 0;
  int logprobs = 0;                 // top-N logprobs to return, 0..20
  int max_tokens = 256;             // >= 1
  bool ignore_eos = false;
  std::vector<std::string> stop;    // stop strings (at most 16, each non-empty)
  std::vector<int32_t> stop_token_ids;
};

/// Temperatures below this sample greedily (as vLLM does): dividing by them would overflow.
constexpr float greedy_temperature = kernels::greedy_temperature;
/// Most stop strings one request may carry.
constexpr size_t max_stop_strings = 16;
/// Most top log-probabilities one request may ask for.
constexpr int max_logprobs = 20;

/// Throws std::invalid_argument whose message names the field and the allowed range, e.g.
/// "temperature must be in [0, 100], got -1".
void validate(const sampling_params& p);

/// One token and its log-probability.
struct token_logprob {
  int32_t token;
  float logprob;
};

/// The sampled token, its log-probability and the requested top-N alternatives.
struct sample_result {
  int32_t token;
  float logprob;                   // log-softmax of the penalized logits (before temperature)
  std::vector<token_logprob> top;  // [p.logprobs] highest logprobs, descending, ties by id
};

/// Reusable work buffers of sample() (one per sampling thread; holds no state between calls).
struct sampler_scratch {
  std::vector<float> logits;           // [vocab] penalized logits
  kernels::cpu::sample_scratch draw;   // the draw's own buffers
};

/// Samples one token from logits[vocab] (not modified). `history` = prompt tokens followed by
/// generated tokens; `n_prompt` = how many of them are prompt. token_index = index of the
/// token being generated (0 for the first). The result is a pure function of (logits,
/// params, history, token_index). Throws std::invalid_argument on bad parameters, a bad
/// vocab size or n_prompt, a history token outside [0, vocab), a NaN or +inf logit, or
/// logits that are all -inf.
sample_result sample(const float* logits, int vocab, const sampling_params& p,
                     const std::vector<int32_t>& history, int n_prompt, uint64_t token_index);

/// sample() with caller-owned work buffers (avoids three vocab-sized allocations per call).
sample_result sample(const float* logits, int vocab, const sampling_params& p,
                     const std::vector<int32_t>& history, int n_prompt, uint64_t token_index,
                     sampler_scratch& scratch);

/// Applies the repetition, frequency and presence penalties of `p` to logits[vocab] in place
/// (vLLM order and semantics). Exposed for the GPU path and for tests.
void apply_penalties(float* logits, int vocab, const sampling_params& p,
                     const std::vector<int32_t>& history, int n_prompt);

}  // namespace troupe
