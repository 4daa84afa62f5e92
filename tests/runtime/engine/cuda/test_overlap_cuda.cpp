// Overlapped steps on the GPU (scheduler.overlap): a scheduling-only engine keeps two steps
// at one CUDA shard worker, whose ahead rows take the tokens the step before sampled (on
// the device, or on the host for a row that asks for logprobs), and every request ends
// with the tokens and log-probabilities of one step at a time. Batch-invariant kernels, so
// the two runs' different steps (an ended sequence's dropped row) cannot change a bit.
// bf16 random model. Needs a GPU (and NCCL, as every GPU shard).
#if defined(TROUPE_HAVE_CUDA_KERNELS) && defined(TROUPE_HAVE_NCCL)
#include <catch2/catch.hpp>
#include <deque>
#include <fstream>
#include <map>

#include "engine_fixture.h"
#include "kernels/cuda/cuda_test_util.h"
#include "runtime/engine/overlap_drive.h"

using namespace troupe;
using namespace troupe::test;

namespace {

/// A two-layer Llama-shape config with random weights (written once per process).
const std::string& random_model_dir() {
  static const std::string dir = [] {
    const auto d = scratch_dir("overlap_cuda");
    std::ofstream(d / "config.json") << R"({"model_type": "llama", "hidden_size": 512, "intermediate_size": 1024,
      "num_hidden_layers": 2, "num_attention_heads": 8, "num_key_value_heads": 2, "vocab_size": 1000,
      "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "rope_theta": 10000.0})";
    return d.string();
  }();
  return dir;
}

/// The config and tokenizer without weights, for the scheduling engine.
std::shared_ptr<const model> metadata_model() {
  load_options o;
  o.random_weights = true;
  o.layer_end = 0;
  o.load_embeddings = false;
  o.load_head = false;
  return model::load(random_model_dir(), o);
}

std::vector<int32_t> prompt_of(int len, int salt) {
  std::vector<int32_t> p(static_cast<size_t>(len));
  for (int i = 0; i < len; ++i) p[static_cast<size_t>(i)] = (i * 37 + salt * 101 + 7) % 1000;
  return p;
}

}  // namespace

TEST_CASE("overlapped and pipelined steps on a GPU shard give the tokens and log-probabilities of one step at a time",
          "[cuda]") {
  if (!cuda_device_or_skip()) return;
  engine_config cfg;
  cfg.kv_tokens = 4096;
  cfg.max_seqs = 16;
  cfg.max_batch_tokens = 256;
  cfg.prefix_caching = false;
  cfg.local_execution = false;
  shard_spec spec;
  spec.model_path = random_model_dir();
  spec.layers = {0, 2};
  spec.device = "cuda:0";
  spec.weight_type = "bf16";
  spec.random_weights = true;
  spec.context = shard_context_for(cfg);
  spec.context.batch_invariant = true;
  shard_worker w(spec);
  w.connect({}, {}, {}, std::chrono::steady_clock::now() + std::chrono::seconds(60));

  std::vector<std::vector<int32_t>> prompts;
  std::vector<sampling_params> ps;
  for (int i = 0; i < 9; ++i) {
    prompts.push_back(prompt_of(5 + 23 * i, i));
    sampling_params p;
    p.temperature = 0.0f;
    p.max_tokens = 8 + 3 * i;  // sequences end at different steps
    p.ignore_eos = true;
    ps.push_back(p);
  }
  ps[1].temperature = 0.9f;  // sampled on the device
  ps[1].seed = 3;
  ps[2].logprobs = 2;  // sampled on the host
  ps[3].repetition_penalty = 1.2f;  // a history the shard completes

  const auto meta = metadata_model();
  cfg.batch_invariant = true;
  engine plain_engine(meta, cfg);
  const auto plain = drive(plain_engine, w, prompts, ps, 1);
  cfg.overlap = true;
  engine overlap_engine(meta, cfg);
  const auto overlapped = drive(overlap_engine, w, prompts, ps, 2);
  CHECK(overlapped.ahead_rows > 0);
  for (size_t i = 0; i < prompts.size(); ++i) {
    INFO("prompt " << i);
    CHECK(plain.out[i].tokens.size() == static_cast<size_t>(ps[i].max_tokens));
    CHECK(overlapped.out[i].tokens == plain.out[i].tokens);
    CHECK(overlapped.out[i].logprobs == plain.out[i].logprobs);
  }
  // Pipelined: the next step enqueued before the one before it ends, its tokens fed on the
  // device; the logprobs and penalty rows' steps run one at a time.
  engine pipelined_engine(meta, cfg);
  const auto pipelined = drive_pipelined(pipelined_engine, w, prompts, ps);
  CHECK(pipelined.counts.begun_behind > 5);
  CHECK(pipelined.counts.one_at_a_time > 0);
  for (size_t i = 0; i < prompts.size(); ++i) {
    INFO("prompt " << i << ", pipelined");
    CHECK(pipelined.d.out[i].tokens == plain.out[i].tokens);
    CHECK(pipelined.d.out[i].logprobs == plain.out[i].logprobs);
  }
  // Greedy rows only: every step after the first pipelines.
  std::vector<sampling_params> greedy(ps.size(), ps[0]);
  for (size_t i = 0; i < greedy.size(); ++i) greedy[i].max_tokens = ps[i].max_tokens;
  engine greedy_plain_engine(meta, cfg), greedy_pipelined_engine(meta, cfg);
  cfg.overlap = false;
  engine greedy_one_engine(meta, cfg);
  const auto one = drive(greedy_one_engine, w, prompts, greedy, 1);
  const auto fed = drive_pipelined(greedy_pipelined_engine, w, prompts, greedy);
  CHECK(fed.counts.one_at_a_time == 0);
  CHECK(fed.d.ahead_rows > 0);
  for (size_t i = 0; i < prompts.size(); ++i) {
    INFO("prompt " << i << ", greedy pipelined");
    CHECK(fed.d.out[i].tokens == one.out[i].tokens);
  }
}

#endif
