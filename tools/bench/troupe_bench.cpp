/// troupe_bench: prefill and decode throughput of the CPU engine, printed as one JSON
/// line in the same shape as tools/bench_llamacpp.py, so tools/bench.sh can compare.
#include <boost/program_options.hpp>
#include <chrono>
#include <iostream>
#include <nlohmann/json.hpp>

#include "runtime/engine/engine.h"

namespace po = boost::program_options;
using namespace troupe;
using clock_type = std::chrono::steady_clock;

namespace {

double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

std::vector<int32_t> synthetic_prompt(const model& m, int n, int salt) {
  std::string text;
  while (static_cast<int>(m.tokenizer().encode(text, true, false).size()) < n)
    text += "Benchmark sentence number " + std::to_string(salt++) + " talks about inference speed. ";
  auto ids = m.tokenizer().encode(text, true, false);
  ids.resize(static_cast<size_t>(n));
  return ids;
}

/// Time to prefill one prompt of `n` tokens (one request, max_tokens 1).
double prefill_tok_s(engine& e, const model& m, int n) {
  sampling_params p;
  p.temperature = 0;
  p.max_tokens = 1;
  auto prompt = synthetic_prompt(m, n, 1000);
  auto t0 = clock_type::now();
  e.generate({prompt}, p);
  return n / seconds_since(t0);
}

/// Decode tokens/s with `batch` sequences generating `gen` tokens each, prefill excluded.
double decode_tok_s(engine& e, const model& m, int batch, int prompt_len, int gen) {
  sampling_params p;
  p.temperature = 0;
  p.max_tokens = gen + 1;
  p.ignore_eos = true;
  for (int b = 0; b < batch; ++b) e.submit(synthetic_prompt(m, prompt_len, 100 * b), p);
  int prefilled = 0;  // prompts are short: all of them prefill in the first step
  while (prefilled < batch) prefilled += static_cast<int>(e.step().size());
  int tokens = 0;
  auto t0 = clock_type::now();
  while (e.has_work()) tokens += static_cast<int>(e.step().size());
  return tokens / seconds_since(t0);
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_path = "default";
  int threads = 0, prompt_tokens = 256, gen_tokens = 64, batch = 8;
  po::options_description d("troupe_bench: CPU engine throughput\n\noptions");
  d.add_options()("help,h", "show this help")("model,m", po::value(&model_path)->default_value(model_path), "model")(
      "threads", po::value(&threads)->default_value(threads), "CPU threads; 0 = all cores")(
      "prompt-tokens", po::value(&prompt_tokens)->default_value(prompt_tokens), "prefill length")(
      "gen-tokens", po::value(&gen_tokens)->default_value(gen_tokens), "decode steps measured")(
      "batch", po::value(&batch)->default_value(batch), "sequences for the batched decode run");
  try {
    po::variables_map vm;
    po::store(po::parse_command_line(argc, argv, d), vm);
    if (vm.count("help")) {
      std::cout << d;
      return 0;
    }
    po::notify(vm);
    auto m = model::load(model_path);
    engine_config cfg;
    cfg.n_threads = threads;
    cfg.kv_tokens = 8192;
    cfg.prefix_caching = false;
    engine e(m, cfg);
    decode_tok_s(e, *m, 1, 16, 4);  // warm-up: pages weights in, spins up threads
    nlohmann::json j = {{"engine", "troupe"},
                        {"model", model_path},
                        {"threads", e.config().n_threads},
                        {"prompt_tokens", prompt_tokens},
                        {"prefill_tok_s", prefill_tok_s(e, *m, prompt_tokens)},
                        {"decode_b1_tok_s", decode_tok_s(e, *m, 1, 32, gen_tokens)},
                        {"decode_bB_tok_s", decode_tok_s(e, *m, batch, 32, gen_tokens)},
                        {"batch", batch}};
    std::cout << j.dump() << std::endl;
    return 0;
  } catch (const std::exception& ex) {
    std::cerr << "troupe_bench: error: " << ex.what() << "\n";
    return 1;
  }
}
