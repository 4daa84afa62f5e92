#pragma once
/// Logits processing on the device: greedy argmax and temperature / top-k / top-p / min-p
/// sampling per row, with the same counter-based draw as the host sampler.
#include <cstdint>
#include <utility>
#include <vector>

#include "kernels/op_context.h"

namespace troupe::kernels {

/// Temperatures below this sample greedily (as vLLM does): dividing by them would overflow.
constexpr float greedy_temperature = 1e-5f;

/// Sampling parameters of one logits row (sampling_params' sampling fields, see
/// runtime/engine/sampler.h; penalties are applied to the logits beforehand).
struct sample_row {
  float temperature = 1.0f;  ///< [0, 100]; below greedy_temperature: argmax
  float top_p = 1.0f;        ///< (0, 1]
  int top_k = 0;             ///< 0 or -1: off
  float min_p = 0.0f;        ///< [0, 1]
  uint64_t seed = 0;         ///< request seed
  uint64_t token_index = 0;  ///< index of the token being generated
};

namespace cpu {
/// Reusable work buffers of sample_host (one per sampling thread; no state between calls).
struct sample_scratch {
  std::vector<float> weights;   // [vocab] exp((logit - max) / temperature)
  std::vector<uint64_t> keys;   // [<= vocab] candidates: (order-mapped logit << 32) | token id
};

/// One row's draw: the token, its log-probability and the top-N alternatives.
struct row_sample {
  int32_t token = 0;                             ///< the sampled token
  float logprob = 0.0f;                          ///< log-softmax of the logits (before temperature)
  std::vector<std::pair<int32_t, float>> top;    ///< [n_top] (token, logprob), descending, ties by id
};

/// Draws one token from x[vocab] (host memory, penalties already applied) with row's
/// parameters: greedy below greedy_temperature, else temperature, top-k, min-p, top-p and
/// the inverse-CDF draw at uniform01(seed, token_index); plus the n_top best logprobs. The
/// result is a pure function of (x, row, n_top). Throws std::invalid_argument naming the
/// first NaN or +inf logit, a field out of range, or when every logit is -inf.
row_sample sample_host(const float* x, int vocab, const sample_row& row, int n_top,
                       sample_scratch& scratch);

/// CPU implementation of kernels::argmax.
void argmax(const op_context& ctx, tensor_view tokens, tensor_view logits);
/// CPU implementation of kernels::sample.
void sample(const op_context& ctx, tensor_view tokens, tensor_view logits,
            const std::vector<sample_row>& rows);
}  // namespace cpu

#ifdef TROUPE_HAVE_CUDA_KERNELS
namespace cuda {
/// CUDA implementation of kernels::argmax.
void argmax(const op_context& ctx, tensor_view tokens, tensor_view logits);
/// CUDA implementation of kernels::sample.
void sample(const op_context& ctx, tensor_view tokens, tensor_view logits,
            const std::vector<sample_row>& rows, void* staging);
}  // namespace cuda
#endif

/// tokens[r] (i32 [m]) = the index of the largest logits[r, :] (f32 [m, vocab]), ties to
/// the lowest index.
inline void argmax(const op_context& ctx, tensor_view tokens, tensor_view logits) {
  switch (ctx.backend) {
    case backend_kind::cpu:
      return cpu::argmax(ctx, tokens, logits);
    case backend_kind::cuda:
#ifdef TROUPE_HAVE_CUDA_KERNELS
      return cuda::argmax(ctx, tokens, logits);
#else
      throw backend_unavailable("argmax: this build has no CUDA kernels");
#endif
  }
  throw backend_unavailable("argmax: unknown backend");
}

/// tokens[r] (i32 [m]) = the token troupe::sample() (runtime/engine/sampler.h) draws from
/// logits[r, :] (f32 [m, vocab]) with rows[r]'s parameters and no penalties: the draw is
/// uniform01(seed, token_index) over the kept candidates in descending-logit order. Logits
/// must be finite or -inf with at least one finite per row (the CPU checks; the device
/// does not). rows is host memory; the CUDA path copies it to the device on the stream:
/// through `staging` when given (page-locked host memory of rows.size() sample_rows at
/// least, left untouched until the stream has run the copy), so the call never waits for
/// the stream; else from rows itself, pageable, which CUDA may make wait for the stream.
/// On the GPU the candidate masses are summed in another order than on the CPU, so the two
/// can differ only when a cutoff falls within float rounding of a boundary.
inline void sample(const op_context& ctx, tensor_view tokens, tensor_view logits,
                   const std::vector<sample_row>& rows, void* staging = nullptr) {
  switch (ctx.backend) {
    case backend_kind::cpu:
      return cpu::sample(ctx, tokens, logits, rows);
    case backend_kind::cuda:
#ifdef TROUPE_HAVE_CUDA_KERNELS
      return cuda::sample(ctx, tokens, logits, rows, staging);
#else
      throw backend_unavailable("sample: this build has no CUDA kernels");
#endif
  }
  throw backend_unavailable("sample: unknown backend");
}

}  // namespace troupe::kernels
