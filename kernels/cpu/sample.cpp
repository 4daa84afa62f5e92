// CPU logits processing: argmax and sampling per row, through the host sampler
// (runtime/sampler.h) so that the reference is the sampler itself.
#include "kernels/sample.h"

#include <string>

#include "kernels/cpu/op_checks.h"
#include "runtime/sampler.h"

namespace troupe::kernels::cpu {
namespace {

/// Checks tokens i32 [m] and logits f32 [m, vocab] on the host.
void check(const char* op, tensor_view tokens, tensor_view logits) {
  require_host(op, "tokens", tokens, dtype::i32);
  require_host(op, "logits", logits);
  require_rank(op, "logits", logits, 2);
  require(logits.shape[1] > 0 && logits.shape[1] <= INT32_MAX, op,
          "logits " + logits.shape.str() + " needs a vocab in [1, 2^31)");
  require_shape(op, "tokens", tokens, shape_t{logits.shape[0]});
}

}  // namespace

void argmax(const op_context& ctx, tensor_view tokens, tensor_view logits) {
  check("argmax", tokens, logits);
  const int64_t m = logits.shape[0], vocab = logits.shape[1];
  for (int64_t r = 0; r < m; ++r) {
    const float* x = logits.f32() + r * vocab;
    int32_t best = 0;
    for (int64_t i = 1; i < vocab; ++i)
      if (x[i] > x[best]) best = static_cast<int32_t>(i);
    tokens.i32()[r] = best;
  }
}

void sample(const op_context& ctx, tensor_view tokens, tensor_view logits,
            const std::vector<sample_row>& rows) {
  const char* op = "sample";
  check(op, tokens, logits);
  require(static_cast<int64_t>(rows.size()) == logits.shape[0], op,
          std::to_string(rows.size()) + " parameter rows for logits " + logits.shape.str());
  const int64_t m = logits.shape[0];
  const int vocab = static_cast<int>(logits.shape[1]);
  sampler_scratch scratch;
  for (int64_t r = 0; r < m; ++r) {
    const sample_row& row = rows[static_cast<size_t>(r)];
    sampling_params p;
    p.temperature = row.temperature;
    p.top_p = row.top_p;
    p.top_k = row.top_k;
    p.min_p = row.min_p;
    p.seed = row.seed;
    try {
      tokens.i32()[r] =
          troupe::sample(logits.f32() + r * vocab, vocab, p, {}, 0, row.token_index, scratch).token;
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument(std::string(op) + ": row " + std::to_string(r) + ": " + e.what());
    }
  }
}

}  // namespace troupe::kernels::cpu
