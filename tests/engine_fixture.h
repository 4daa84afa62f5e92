#pragma once
/// Shared pieces of the engine tests: the default model loaded once per process, the
/// llama.cpp goldens, and small engine helpers.
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "runtime/engine/engine.h"
#include "test_support.h"

namespace troupe::test {

/// The default model, loaded once and shared (it is immutable).
inline std::shared_ptr<const model> shared_default_model() {
  static std::shared_ptr<const model> m = model::load(default_model());
  return m;
}

/// One golden prompt as llama.cpp saw it.
struct golden_prompt {
  std::string name;
  bool chat = false;
  std::string text;
  std::vector<int32_t> prompt_tokens;
  std::vector<int32_t> greedy_tokens;
  std::vector<std::vector<std::pair<int32_t, float>>> top_logits;  ///< [position][rank]
};

/// Reads tests/goldens/<file>; fails the test when the file is missing.
inline std::vector<golden_prompt> read_goldens(const std::string& file) {
  auto path = goldens_dir() / file;
  std::ifstream in(path);
  if (!in) throw std::runtime_error("goldens missing: " + path.string() + " (tools/make_goldens.py)");
  auto j = nlohmann::json::parse(in);
  std::vector<golden_prompt> out;
  for (const auto& p : j.at("prompts")) {
    golden_prompt g;
    g.name = p.at("name").get<std::string>();
    g.chat = p.at("chat").get<bool>();
    g.text = p.at("text").get<std::string>();
    g.prompt_tokens = p.at("prompt_tokens").get<std::vector<int32_t>>();
    g.greedy_tokens = p.at("greedy_tokens").get<std::vector<int32_t>>();
    for (const auto& pos : p.at("top_logits")) {
      std::vector<std::pair<int32_t, float>> row;
      for (const auto& e : pos) row.emplace_back(e.at(0).get<int32_t>(), e.at(1).get<float>());
      g.top_logits.push_back(std::move(row));
    }
    out.push_back(std::move(g));
  }
  return out;
}

/// Greedy decoding of exactly `n` tokens (EOS ignored), logits recorded.
inline sampling_params greedy(int n) {
  sampling_params p;
  p.temperature = 0.0f;
  p.max_tokens = n;
  p.ignore_eos = true;
  return p;
}

/// An engine over the shared default model with logits recorded.
inline std::unique_ptr<engine> make_engine(engine_config cfg = {}) {
  cfg.record_logits = true;
  if (cfg.n_threads == 0) cfg.n_threads = 2;
  if (cfg.kv_tokens == engine_config{}.kv_tokens) cfg.kv_tokens = 8192;  // smaller than the default
  return std::make_unique<engine>(shared_default_model(), cfg);
}

/// The shard context of a replica whose scheduling engine has `cfg` (its KV blocks,
/// batch rows and logit rows).
inline context_params shard_context_for(const engine_config& cfg) {
  context_params ctx;
  ctx.n_blocks = cfg.kv_tokens / cfg.block_size;
  ctx.block_size = cfg.block_size;
  ctx.max_batch_tokens = cfg.max_batch_tokens;
  ctx.max_logit_rows = cfg.max_seqs;
  return ctx;
}

/// Step `id` of one sequence whose rows are `tokens` at positions `start`.. (KV slots the
/// same, all in block 0: at most one block of tokens), sampling greedily after the last
/// row when `sample` is set.
inline step_request one_sequence_step(uint64_t id, std::vector<int32_t> tokens, int start, bool sample) {
  step_request r;
  r.step_id = id;
  const int n = static_cast<int>(tokens.size());
  r.batch.tokens = std::move(tokens);
  for (int i = 0; i < n; ++i) {
    r.batch.positions.push_back(start + i);
    r.batch.slots.push_back(start + i);
  }
  r.batch.query_start = {0, n};
  r.batch.context_len = {start + n};
  r.batch.max_blocks = 1;
  r.batch.block_tables = {0};
  if (sample) {
    r.batch.logit_rows = {n - 1};
    r.samples.resize(1);
    r.samples[0].params.temperature = 0.0f;
  }
  return r;
}

}  // namespace troupe::test
