// Batch-invariant mode on the GPU (engine_config::batch_invariant): a sequence's logits are
// bitwise the same alone and in a batch of 9 with chunked prefill mixed in, and a request
// resumed from its emitted tokens (as after a GPU failure) repeats the fault-free logits and
// tokens. bf16 random model with head_dim 64 (the flash prefill kernel's shape). Needs a GPU.
#ifdef TROUPE_HAVE_CUDA_KERNELS
#include <algorithm>
#include <catch2/catch.hpp>
#include <cstring>
#include <fstream>

#include "kernels/cuda/cuda_test_util.h"
#include "runtime/engine/engine.h"
#include "test_support.h"

using namespace troupe;

namespace {

std::shared_ptr<const model> invariant_model() {
  static const std::string dir = [] {
    const auto d = test::scratch_dir("batch_invariant_cuda");
    std::ofstream(d / "config.json") << R"({"model_type": "llama", "hidden_size": 512, "intermediate_size": 1024,
      "num_hidden_layers": 2, "num_attention_heads": 8, "num_key_value_heads": 2, "vocab_size": 1000,
      "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "rope_theta": 10000.0})";
    return d.string();
  }();
  load_options o;
  o.random_weights = true;
  o.random_seed = 29;
  o.device = device_ref::parse("cuda:0");
  o.weight_type = dtype::bf16;
  return model::load(dir, o);
}

/// An engine on the model with batch-invariant kernels, recording logits; a small token
/// budget so long prompts are chunked and share steps with decode rows.
engine_config invariant_config() {
  engine_config ec;
  ec.n_threads = 1;
  ec.kv_tokens = 8192;
  ec.max_batch_tokens = 96;
  ec.max_seqs = 16;
  ec.record_logits = true;
  ec.batch_invariant = true;
  ec.prefix_caching = false;
  return ec;
}

sampling_params greedy(int max_tokens) {
  sampling_params p;
  p.temperature = 0;
  p.max_tokens = max_tokens;
  p.ignore_eos = true;
  return p;
}

std::vector<int32_t> prompt_of(int len, int salt) {
  std::vector<int32_t> p(static_cast<size_t>(len));
  for (int i = 0; i < len; ++i) p[static_cast<size_t>(i)] = (i * 37 + salt * 101 + 7) % 1000;
  return p;
}

/// The number of positions at which two logit sequences differ in any bit.
size_t differing_steps(const std::vector<std::vector<float>>& a, const std::vector<std::vector<float>>& b) {
  size_t n = a.size() == b.size() ? 0 : 1;
  for (size_t t = 0; t < std::min(a.size(), b.size()); ++t)
    if (a[t].size() != b[t].size() || std::memcmp(a[t].data(), b[t].data(), a[t].size() * sizeof(float)) != 0) ++n;
  return n;
}

}  // namespace

TEST_CASE("with batch-invariant kernels a sequence's GPU logits are bitwise the same alone and in a batch of 9",
          "[cuda]") {
  if (!test::cuda_device_or_skip()) return;
  const auto m = invariant_model();
  const auto target = prompt_of(150, 0);
  const auto alone = engine(m, invariant_config()).generate({target}, greedy(20));
  std::vector<std::vector<int32_t>> batch{target};
  for (int i = 1; i < 9; ++i) batch.push_back(prompt_of(i % 3 == 0 ? 300 + 10 * i : 1 + 5 * i, i));
  const auto together = engine(m, invariant_config()).generate(batch, greedy(20));
  REQUIRE(alone.size() == 1);
  REQUIRE(together.size() == 9);
  REQUIRE(alone[0].logits.size() == 20);
  CHECK(together[0].tokens == alone[0].tokens);
  CHECK(differing_steps(together[0].logits, alone[0].logits) == 0);
}

TEST_CASE("with batch-invariant kernels a GPU request resumed from its emitted tokens repeats the fault-free run",
          "[cuda]") {
  if (!test::cuda_device_or_skip()) return;
  const auto m = invariant_model();
  const auto prompt = prompt_of(130, 5);
  const auto fault_free = engine(m, invariant_config()).generate({prompt, prompt_of(40, 6)}, greedy(24));
  REQUIRE(fault_free[0].tokens.size() == 24);
  // Resumed after 10 tokens, beside another request: the prompt and the 10 tokens are
  // prefilled (in chunks), then decoding goes on.
  engine e(m, invariant_config());
  resume_point from;
  from.emitted.assign(fault_free[0].tokens.begin(), fault_free[0].tokens.begin() + 10);
  const seq_id id = e.submit(prompt, greedy(24), from);
  e.submit(prompt_of(200, 7), greedy(24));
  std::vector<int32_t> tokens;
  std::vector<std::vector<float>> logits;
  while (e.has_work())
    for (auto& ev : e.step())
      if (ev.id == id && ev.token >= 0) {
        tokens.push_back(ev.token);
        logits.push_back(std::move(ev.logits));
      }
  const std::vector<int32_t> rest(fault_free[0].tokens.begin() + 10, fault_free[0].tokens.end());
  const std::vector<std::vector<float>> rest_logits(fault_free[0].logits.begin() + 10, fault_free[0].logits.end());
  CHECK(tokens == rest);
  CHECK(differing_steps(logits, rest_logits) == 0);
}

#endif
