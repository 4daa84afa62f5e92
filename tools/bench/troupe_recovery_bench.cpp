/// troupe_recovery_bench: time to resume after a pipeline stage restarts, stage-local
/// recovery (replay only the restarted stage's KV cache) against a full re-prefill (every
/// stage recomputes every token), on one replica of shard workers in one process (CPU,
/// real UCX links). One JSON line per restarted stage, then a table.
#include <boost/program_options.hpp>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <set>

#include "tools/bench/replica_harness.h"

namespace po = boost::program_options;
using namespace troupe;
using clock_type = std::chrono::steady_clock;

namespace {

double ms_since(clock_type::time_point t0) {
  return std::chrono::duration<double, std::milli>(clock_type::now() - t0).count();
}

std::vector<int32_t> synthetic_prompt(const model& m, int n, int salt) {
  std::string text;
  while (static_cast<int>(m.tokenizer().encode(text, true, false).size()) < n)
    text += "Recovery sentence number " + std::to_string(salt++) + " is about keeping a service up. ";
  auto ids = m.tokenizer().encode(text, true, false);
  ids.resize(static_cast<size_t>(n));
  return ids;
}

/// Steps until every one of `n` running sequences emitted a token.
void step_until_each_emits(bench::local_replica& rep, engine& e, size_t n) {
  std::set<seq_id> emitted;
  std::vector<token_event> events;
  while (emitted.size() < n && rep.step(e, &events)) {
    for (const auto& ev : events) emitted.insert(ev.id);
    events.clear();
  }
}

struct measurement {
  int stage = 0;
  int64_t tokens = 0;
  double load_ms = 0, local_ms = 0, replay_ms = 0, full_ms = 0;
};

/// Restarts `stage` twice: stage-local recovery, then a full re-prefill; times both.
measurement measure(bench::local_replica& rep, engine& e, int stage, size_t n_seqs) {
  measurement m;
  m.stage = stage;
  auto t0 = clock_type::now();
  rep.restart_stage(stage);  // loads the new stage, relinks the survivors
  m.load_ms = ms_since(t0);
  t0 = clock_type::now();
  auto replay = e.replay_steps(m.tokens);
  for (auto& r : replay) {
    r.replay_stage = stage;
    rep.run(r);
  }
  m.replay_ms = ms_since(t0);
  step_until_each_emits(rep, e, n_seqs);
  m.local_ms = ms_since(t0);

  rep.restart_stage(stage, false);  // every stage gets a fresh, empty KV cache
  t0 = clock_type::now();
  e.kv_lost();
  step_until_each_emits(rep, e, n_seqs);
  m.full_ms = ms_since(t0);
  return m;
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_path = "default";
  int pipeline = 3, tensor = 1, seqs = 8, prompt_tokens = 256, threads = 1;
  po::options_description d("troupe_recovery_bench: stage-local recovery against a full re-prefill\n\noptions");
  d.add_options()("help,h", "show this help")("model,m", po::value(&model_path)->default_value(model_path), "model")(
      "pipeline", po::value(&pipeline)->default_value(pipeline), "pipeline stages (>= 2)")(
      "tensor", po::value(&tensor)->default_value(tensor), "tensor-parallel ranks per stage")(
      "seqs", po::value(&seqs)->default_value(seqs), "running sequences")(
      "prompt-tokens", po::value(&prompt_tokens)->default_value(prompt_tokens), "prompt length of each")(
      "threads", po::value(&threads)->default_value(threads), "CPU threads per shard");
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, d), vm);
    po::notify(vm);
    if (vm.count("help")) {
      std::cout << d << "\n";
      return 0;
    }
    if (pipeline < 2 || tensor < 1 || seqs < 1 || prompt_tokens < 1 || threads < 1)
      throw std::invalid_argument("--pipeline must be >= 2 and --tensor, --seqs, --prompt-tokens, --threads >= 1");
    engine_config cfg;
    cfg.local_execution = false;
    cfg.max_seqs = seqs;
    cfg.kv_tokens = seqs * (prompt_tokens + 256);
    context_params ctx;
    ctx.block_size = cfg.block_size;
    ctx.n_blocks = (cfg.kv_tokens + cfg.block_size - 1) / cfg.block_size;
    ctx.max_batch_tokens = cfg.max_batch_tokens;
    ctx.max_logit_rows = seqs;
    ctx.keep_stage_inputs = true;
    model_path = resolve_model_path(model_path);
    bench::local_replica rep(model_path, tensor, pipeline, ctx, threads);
    rep.connect();
    auto meta = model::load_metadata(model_path);
    engine e(meta, cfg);
    sampling_params p;
    p.temperature = 0;
    p.ignore_eos = true;
    p.max_tokens = 200;
    for (int i = 0; i < seqs; ++i) e.submit(synthetic_prompt(*meta, prompt_tokens, 100 * i), p);
    step_until_each_emits(rep, e, static_cast<size_t>(seqs));
    std::vector<measurement> all;
    for (int s = 0; s < pipeline; ++s) {
      all.push_back(measure(rep, e, s, static_cast<size_t>(seqs)));
      const auto& m = all.back();
      std::cout << nlohmann::json{{"pipeline", pipeline}, {"tensor", tensor},      {"seqs", seqs},
                                  {"stage", m.stage},     {"tokens", m.tokens},    {"load_ms", m.load_ms},
                                  {"replay_ms", m.replay_ms}, {"stage_local_resume_ms", m.local_ms},
                                  {"full_reprefill_resume_ms", m.full_ms}}
                       .dump()
                << std::endl;
    }
    std::printf("\n| restarted stage | KV rows replayed | stage-local: replay | stage-local: resume | full re-prefill: resume | ratio |\n|---|---|---|---|---|---|\n");
    for (const auto& m : all)
      std::printf("| %d of %d | %lld | %.0f ms | %.0f ms | %.0f ms | %.2f |\n", m.stage, pipeline,
                  static_cast<long long>(m.tokens), m.replay_ms, m.local_ms, m.full_ms, m.local_ms / m.full_ms);
    return 0;
  } catch (const std::exception& ex) {
    std::cerr << "troupe_recovery_bench: " << ex.what() << "\n";
    return 2;
  }
}
