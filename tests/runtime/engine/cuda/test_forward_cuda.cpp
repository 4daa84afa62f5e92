// The model forward on a GPU against the CPU forward, on random models whose weights are
// bit-identical on both (the `random` load format): f32 to rounding, bf16 within its
// tolerance, and CUDA-graph decode equal to eager decode. Needs a GPU (skipped without one).
// Tensor and pipeline parallelism over NCCL are checked against transformers by
// tools/gpu/agreement.py (tools/gpu/check.sh).
#ifdef TROUPE_HAVE_CUDA_KERNELS
#include <catch2/catch.hpp>
#include <cmath>
#include <fstream>

#include "kernels/cuda/cuda_test_util.h"
#include "kernels/attention.h"
#include "kernels/norm_matmul.h"
#include "kernels/matmul.h"
#include "runtime/engine/engine.h"
#include "test_support.h"

using namespace troupe;

namespace {

std::string config_dir() {
  static const std::string dir = [] {
    const auto d = test::scratch_dir("forward_cuda");
    std::ofstream(d / "config.json") << R"({"model_type": "llama", "hidden_size": 256, "intermediate_size": 640,
      "num_hidden_layers": 4, "num_attention_heads": 8, "num_key_value_heads": 2, "vocab_size": 1000,
      "max_position_embeddings": 1024, "rms_norm_eps": 1e-5, "rope_theta": 10000.0})";
    return d.string();
  }();
  return dir;
}

std::shared_ptr<const model> random_model(const std::string& device, dtype t) {
  load_options o;
  o.random_weights = true;
  o.random_seed = 11;
  o.device = device_ref::parse(device);
  o.weight_type = t;
  return model::load(config_dir(), o);
}

std::vector<generation_result> run(std::shared_ptr<const model> m, bool graphs, int64_t* replays = nullptr) {
  engine_config ec;
  ec.n_threads = 2;
  ec.kv_tokens = 4096;
  ec.record_logits = !graphs;
  ec.cuda_graphs = graphs;
  engine e(std::move(m), ec);
  sampling_params p;
  p.temperature = 0;
  p.max_tokens = 24;
  p.ignore_eos = true;
  std::vector<std::vector<int32_t>> prompts{{5, 17, 300, 2, 999, 41, 8}, {7}, std::vector<int32_t>(70, 3)};
  auto out = e.generate(prompts, p);
  if (replays && e.context()) *replays = e.context()->graph_replays();
  return out;
}

/// ||a - b|| / ||b|| over the recorded logits of the steps both runs fed the same tokens
/// (up to and including the first step whose sampled tokens differ).
double relative_error(const generation_result& a, const generation_result& b) {
  double num = 0, den = 0;
  for (size_t t = 0; t < std::min(a.logits.size(), b.logits.size()); ++t) {
    for (size_t i = 0; i < a.logits[t].size(); ++i) {
      const double d = double{a.logits[t][i]} - b.logits[t][i];
      num += d * d;
      den += double{b.logits[t][i]} * b.logits[t][i];
    }
    if (a.tokens[t] != b.tokens[t]) break;
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

}  // namespace

TEST_CASE("a random model in f32 on the GPU gives the CPU's logits and greedy tokens", "[cuda]") {
  if (!test::cuda_device_or_skip()) return;
  const auto cpu = run(random_model("cpu", dtype::f32), false);
  const auto gpu = run(random_model("cuda:0", dtype::f32), false);
  REQUIRE(gpu.size() == cpu.size());
  for (size_t i = 0; i < cpu.size(); ++i) {
    CAPTURE(i);
    CHECK(gpu[i].tokens == cpu[i].tokens);
    CHECK(relative_error(gpu[i], cpu[i]) < 1e-4);
  }
}

TEST_CASE("in bf16 the GPU logits stay within bf16 rounding of the f32 CPU logits", "[cuda]") {
  if (!test::cuda_device_or_skip()) return;
  const auto cpu = run(random_model("cpu", dtype::f32), false);
  const auto gpu = run(random_model("cuda:0", dtype::bf16), false);
  for (size_t i = 0; i < cpu.size(); ++i) {
    CAPTURE(i);
    REQUIRE(gpu[i].logits.size() == cpu[i].logits.size());
    CHECK(relative_error(gpu[i], cpu[i]) < 3e-2);
  }
}

TEST_CASE("a lone bf16 sequence, its norms, RoPE and residual adds inside the projections, stays near the f32 CPU logits",
          "[cuda]") {
  if (!test::cuda_device_or_skip()) return;
  // One sequence: every decode step has one row, which takes run_layer_fused on the GPU.
  auto lone = [](std::shared_ptr<const model> m, bool* fused, uint64_t* launched = nullptr) {
    engine_config ec;
    ec.kv_tokens = 4096;
    ec.record_logits = true;
    ec.cuda_graphs = false;
    engine e(std::move(m), ec);
    if (fused) *fused = e.context() && e.context()->fuses_norms();
    sampling_params p;
    p.temperature = 0;
    p.max_tokens = 24;
    p.ignore_eos = true;
    const uint64_t before = kernels::cuda::norm_fusion_launches();
    auto out = e.generate({{5, 17, 300, 2, 999, 41, 8}}, p);
    if (launched) *launched = kernels::cuda::norm_fusion_launches() - before;
    return out;
  };
  bool fused = false;
  const bool was = kernels::cuda::norm_fusion_enabled();
  kernels::cuda::set_norm_fusion(true);  // off by default until measured on a GPU
  struct restore {
    bool was;
    ~restore() { kernels::cuda::set_norm_fusion(was); }
  } restored{was};
  const auto cpu = lone(random_model("cpu", dtype::f32), nullptr);
  const auto gm = random_model("cuda:0", dtype::bf16);
  uint64_t launched = 0;
  const auto gpu = lone(gm, &fused, &launched);
  CHECK(fused);
  // 23 one-row decode steps (the 7-token prompt's step is not one row): four fused kernels a
  // layer and the output projection, none of them falling back to the plain ops; and the
  // prompt step's output projection, which has one row (its last).
  CHECK(launched == 23 * (4 * static_cast<uint64_t>(gm->config().n_layers) + 1) + 1);
  CHECK(kernels::norm_fusion_applies(test::cuda_ctx(), 1, 256, dtype::bf16));
  REQUIRE(gpu.size() == 1);
  REQUIRE(gpu[0].logits.size() == cpu[0].logits.size());
  CHECK(relative_error(gpu[0], cpu[0]) < 3e-2);  // the batched bf16 run's bound above
}

TEST_CASE("the decode attention workspace covers the widest block table a warmed graph has, not only the context",
          "[cuda]") {
  if (!test::cuda_device_or_skip()) return;
  context_params p;
  p.n_blocks = 100000;
  p.block_size = 16;
  p.max_batch_tokens = 512;
  p.max_logit_rows = 512;
  p.graph_warmup_context = 6000;  // its widest graph has 512 blocks: 8192 positions
  const auto ops = test::cuda_ctx();
  const int64_t rows = 512;  // the largest graph's rows
  CHECK(attention_workspace_floats(ops, p, 32, 8, 128) ==
        kernels::decode_workspace_floats(ops, rows, 32, 8, 128, 8192));
  CHECK(attention_workspace_floats(ops, p, 32, 8, 128) > kernels::decode_workspace_floats(ops, rows, 32, 8, 128, 6000));
  p.n_blocks = 300;  // a cache of 4800 positions: its widest graph has 512 blocks too
  CHECK(attention_workspace_floats(ops, p, 32, 8, 128) ==
        kernels::decode_workspace_floats(ops, rows, 32, 8, 128, 8192));
}

TEST_CASE("decode steps that merge each row's attention splits in its last split give the merge kernel's logits, "
          "bitwise",
          "[cuda]") {
  if (!test::cuda_device_or_skip()) return;
  const auto m = random_model("cuda:0", dtype::bf16);
  const bool was = kernels::cuda::fused_merge_enabled();
  struct restore {
    bool was;
    ~restore() { kernels::cuda::set_fused_merge(was); }
  } restored{was};
  kernels::cuda::set_fused_merge(false);
  const auto by_kernel = run(m, false);
  kernels::cuda::set_fused_merge(true);  // read as the steps are enqueued (and graphs captured)
  const auto in_split = run(m, false);
  const auto in_split_graphs = run(m, true);
  REQUIRE(in_split.size() == by_kernel.size());
  for (size_t i = 0; i < by_kernel.size(); ++i) {
    CAPTURE(i);
    CHECK(in_split[i].tokens == by_kernel[i].tokens);
    CHECK(in_split[i].logits == by_kernel[i].logits);
    CHECK(in_split_graphs[i].tokens == by_kernel[i].tokens);
  }
}

TEST_CASE("decode steps replayed from CUDA graphs give the eager steps' tokens", "[cuda]") {
  if (!test::cuda_device_or_skip()) return;
  const auto m = random_model("cuda:0", dtype::bf16);
  int64_t replays = 0;
  const auto graphed = run(m, true, &replays);
  const auto eager = run(m, false);
  CHECK(replays > 0);
  for (size_t i = 0; i < eager.size(); ++i) CHECK(graphed[i].tokens == eager[i].tokens);
}

TEST_CASE("the warm-up captures a graph for every batch and context bucket and runs every matmul plan row count, "
          "so serving captures nothing and queries no matmul heuristic",
          "[cuda]") {
  if (!test::cuda_device_or_skip()) return;
  const auto m = random_model("cuda:0", dtype::bf16);
  engine_config ec;
  ec.kv_tokens = 4096;
  ec.max_seqs = 6;
  ec.graph_warmup_context = 1024;
  engine e(m, ec);
  REQUIRE(e.context());
  // Rows 1, 2, 4 and 6 (max_seqs caps the bucket of 8) x contexts of 8, 16, 32 and 64 blocks.
  CHECK(e.context()->graph_count() == 4 * 4);
  sampling_params p;
  p.temperature = 0;
  p.max_tokens = 24;
  p.ignore_eos = true;
  const std::vector<std::vector<int32_t>> prompts{{5, 17, 300, 2, 999, 41, 8}, {7}, std::vector<int32_t>(70, 3),
                                                  std::vector<int32_t>(300, 9), {1, 2}};
  const size_t queries = kernels::cuda::heuristic_queries();
  const auto warm = e.generate(prompts, p);
  CHECK(e.context()->graph_count() == 4 * 4);  // nothing captured while serving
  // Prefill and mixed steps at row counts not seen before take warmed matmul algorithms.
  CHECK(kernels::cuda::heuristic_queries() == queries);
  CHECK(e.context()->graph_replays() >= 23);
  engine_config lazy = ec;
  lazy.graph_warmup_context = 0;
  engine l(m, lazy);
  CHECK(l.context()->graph_count() == 0);
  const auto plain = l.generate(prompts, p);
  for (size_t i = 0; i < plain.size(); ++i) CHECK(warm[i].tokens == plain[i].tokens);
}
#endif
