/// troupe_gpu: one tensor × pipeline replica on the local GPUs, in one process (a thread per
/// shard: the same shard_worker, engine and scheduler the actors drive), for the
/// transformers agreement check and the GPU benchmark (tools/gpu/check.sh).
///
///   troupe_gpu logits   --model DIR --tokens FILE --out DIR     teacher-forced logits
///   troupe_gpu generate --model DIR --tokens FILE --out FILE    greedy tokens
///   troupe_gpu bench    --model DIR [--random]                  decode / prefill table (JSON)
///   troupe_gpu kernels  --model DIR [--random]                  per-op decode timings (JSON lines)
///   troupe_gpu chain    --model DIR [--random]                  one row's layers as a kernel chain (JSON lines)
#include <algorithm>
#include <boost/program_options.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <exception>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "runtime/engine/engine.h"
#include "runtime/engine/shard_worker.h"
#include "tools/bench/engine_loop.h"
#include "tools/bench/gpu_timing.h"

namespace po = boost::program_options;
using json = nlohmann::json;
using namespace troupe;
using clock_type = std::chrono::steady_clock;
using bench::copy_rate;
using bench::gemm_rate;
using bench::median;
using bench::run_kernel_timings;
using bench::run_layer_chain;
using bench::run_times;
using bench::step_recorder;

namespace {

struct options {
  std::string mode, model, tokens, out, weight_type = "bf16";
  bool random = false, graphs = true, batch_invariant = false, overlap = false, pipeline = false;
  int tp = 1, pp = 1, first_device = 0, max_tokens = 64, max_batch_tokens = 2048, max_seqs = 256;
  double kv_fraction = 0.85;
  std::vector<int> batches{1, 16, 64, 256}, prompt_lens{1024, 2048};
  int gen = 64, decode_prompt = 128;
  int graph_warmup_context = 8192;  ///< as scheduler.graph_warmup_context: what a server warms at start
};

double ms_since(clock_type::time_point t0) {
  return std::chrono::duration<double, std::milli>(clock_type::now() - t0).count();
}

/// A thread that runs one shard's steps when told to.
class shard_thread {
 public:
  explicit shard_thread(shard_worker& w) : worker_(w), thread_([this] { loop(); }) {}
  ~shard_thread() {
    {
      std::lock_guard<std::mutex> l(mu_);
      quit_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  /// Starts `f` on this shard's thread.
  void post(std::function<void(shard_worker&)> f) {
    {
      std::lock_guard<std::mutex> l(mu_);
      task_ = std::move(f);
      done_ = false;
      error_ = nullptr;
    }
    cv_.notify_all();
  }
  /// Waits for the posted task; rethrows its exception.
  void wait() {
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait(l, [this] { return done_; });
    if (error_) std::rethrow_exception(error_);
  }

 private:
  void loop() {
    std::unique_lock<std::mutex> l(mu_);
    while (true) {
      cv_.wait(l, [this] { return quit_ || task_; });
      if (quit_) return;
      auto f = std::move(task_);
      task_ = nullptr;
      l.unlock();
      std::exception_ptr err;
      try {
        f(worker_);
      } catch (...) {
        err = std::current_exception();
      }
      l.lock();
      error_ = err;
      done_ = true;
      cv_.notify_all();
    }
  }
  shard_worker& worker_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::function<void(shard_worker&)> task_;
  bool done_ = true, quit_ = false;
  std::exception_ptr error_;
  std::thread thread_;
};

/// The config and tokenizer of `o.model` without weights (either load format).
std::shared_ptr<const model> metadata_model(const options& o) {
  if (!o.random) return model::load_metadata(o.model);
  load_options none;
  none.random_weights = true;
  none.layer_end = 0;
  none.load_embeddings = false;
  none.load_head = false;
  return model::load(o.model, none);
}

/// The shards of one replica on GPUs first_device .. first_device + tp * pp - 1.
class gpu_replica {
 public:
  explicit gpu_replica(const options& o) {
    auto meta = metadata_model(o);
    const auto ranges = parallel::plan_pipeline(meta->config(), o.pp);
    for (int s = 0; s < o.pp; ++s)
      for (int r = 0; r < o.tp; ++r) {
        shard_spec sp;
        sp.model_path = o.model;
        sp.stage = s;
        sp.n_stages = o.pp;
        sp.layers = ranges[static_cast<size_t>(s)];
        sp.tp_rank = r;
        sp.tp_size = o.tp;
        sp.device = "cuda:" + std::to_string(o.first_device + s * o.tp + r);
        sp.weight_type = o.weight_type;
        sp.random_weights = o.random;
        sp.context.block_size = 16;
        sp.context.max_batch_tokens = o.max_batch_tokens;
        sp.context.max_logit_rows = std::max(o.max_seqs, 512);
        sp.context.cuda_graphs = o.graphs;
        sp.context.graph_warmup_context = o.graph_warmup_context;
        sp.context.time_steps = true;
        sp.context.batch_invariant = o.batch_invariant;
        sp.timeout_ms = 60000;
        sp.stage_timeout_ms = 120000;
        specs_.push_back(sp);
      }
    meta_ = std::move(meta);
    workers_.resize(specs_.size());
    const auto t0 = clock_type::now();
    parallel_each([&](size_t i) {
      workers_[i] = std::make_unique<shard_worker>(specs_[i], [i](const std::string& m) {
        std::fprintf(stderr, "shard %zu: %s\n", i, m.c_str());
      });
    });
    load_ms_ = ms_since(t0);
    int blocks = 1 << 30;
    for (auto& w : workers_) blocks = std::min(blocks, w->kv_capacity_blocks(o.kv_fraction));
    n_blocks_ = blocks;
    for (auto& w : workers_) w->set_kv_blocks(blocks);
    std::vector<shard_addresses> addr;
    for (auto& w : workers_) addr.push_back(w->addresses());
    const auto deadline = clock_type::now() + std::chrono::seconds(120);
    for (size_t i = 0; i < workers_.size(); ++i) threads_.push_back(std::make_unique<shard_thread>(*workers_[i]));
    for (size_t i = 0; i < workers_.size(); ++i) {
      const int s = static_cast<int>(i) / o.tp;
      std::vector<std::vector<char>> group;
      for (int r = 0; r < o.tp; ++r) group.push_back(addr[static_cast<size_t>(s * o.tp + r)].tensor);
      const std::vector<char> prev = s > 0 ? addr[i - static_cast<size_t>(o.tp)].next : std::vector<char>{};
      threads_[i]->post([group, prev, deadline](shard_worker& w) { w.connect(group, prev, {}, deadline); });
    }
    for (auto& t : threads_) t->wait();
    sampler_ = workers_.size() - static_cast<size_t>(o.tp);  // last stage, rank 0
  }

  /// Runs one step on every shard; returns the sampling shard's output.
  step_output run(step_request& r) {
    if (threads_.size() == 1) return workers_[0]->run(r);
    start(r);
    return finish();
  }
  /// Starts `r` on every shard's thread (`r` must live until finish(); a shard fills its
  /// ahead rows in place).
  void start(step_request& r) {
    for (size_t i = 0; i < threads_.size(); ++i)
      threads_[i]->post([&r, i, this](shard_worker& w) {
        auto o = w.run(r);
        if (i == sampler_) out_ = std::move(o);
      });
  }
  /// Waits for the started step; returns the sampling shard's output.
  step_output finish() {
    for (auto& t : threads_) t->wait();
    return std::move(out_);
  }

  const model& meta() const { return *meta_; }
  const shard_worker& sampling_worker() const { return *workers_[sampler_]; }
  /// The replica's only shard (null with several): pipelined steps run on it directly.
  shard_worker* sole_worker() { return workers_.size() == 1 ? workers_[0].get() : nullptr; }
  int n_blocks() const { return n_blocks_; }
  double load_ms() const { return load_ms_; }
  /// Bytes of weights on the most loaded GPU.
  size_t max_weight_bytes() const {
    size_t m = 0;
    for (auto& w : workers_) m = std::max(m, w->weight_bytes());
    return m;
  }

 private:
  template <class F>
  void parallel_each(F f) {
    std::vector<std::thread> ts;
    std::vector<std::exception_ptr> errs(specs_.size());
    for (size_t i = 0; i < specs_.size(); ++i)
      ts.emplace_back([&, i] {
        try {
          f(i);
        } catch (...) {
          errs[i] = std::current_exception();
        }
      });
    for (auto& t : ts) t.join();
    for (auto& e : errs)
      if (e) std::rethrow_exception(e);
  }

  std::shared_ptr<const model> meta_;
  std::vector<shard_spec> specs_;
  std::vector<std::unique_ptr<shard_worker>> workers_;
  std::vector<std::unique_ptr<shard_thread>> threads_;
  step_output out_;  ///< the sampling shard's output of the started step
  size_t sampler_ = 0;
  int n_blocks_ = 0;
  double load_ms_ = 0;
};

}  // namespace

namespace {

/// Prompts from a JSON file: {"prompts": [[ids...], ...]}.
std::vector<std::vector<int32_t>> read_prompts(const std::string& file) {
  std::ifstream in(file);
  if (!in) throw std::runtime_error(file + ": cannot open");
  json j;
  try {
    j = json::parse(in);
  } catch (const json::exception& e) {
    throw std::runtime_error(file + ": not valid JSON: " + e.what());
  }
  if (!j.contains("prompts") || !j["prompts"].is_array()) throw std::runtime_error(file + ": needs a \"prompts\" array");
  return j["prompts"].get<std::vector<std::vector<int32_t>>>();
}

/// Teacher-forced logits: each prompt in one prefill step with a logit row per position,
/// written as raw f32 [n, vocab] to OUT/logits_<i>.bin, plus OUT/argmax.json.
void run_logits(gpu_replica& r, const options& o) {
  const auto prompts = read_prompts(o.tokens);
  const int vocab = r.meta().config().vocab;
  json argmax = json::array();
  for (size_t i = 0; i < prompts.size(); ++i) {
    const auto& p = prompts[i];
    const int n = static_cast<int>(p.size());
    if (n > o.max_batch_tokens || n > 512) throw std::runtime_error("prompt " + std::to_string(i) + " is too long");
    step_request req;
    req.step_id = i + 1;
    auto& b = req.batch;
    b.tokens = p;
    const int bs = 16, nb = (n + bs - 1) / bs;
    for (int t = 0; t < n; ++t) {
      b.positions.push_back(t);
      b.slots.push_back(t);  // blocks 0.. in order
      b.logit_rows.push_back(t);
      sample_request s;
      s.params.temperature = 0;
      s.params.logprobs = 1;  // makes the sampling shard bring the logits to the host
      req.samples.push_back(s);
    }
    b.query_start = {0, n};
    b.context_len = {n};
    b.max_blocks = nb;
    for (int k = 0; k < nb; ++k) b.block_tables.push_back(k);
    r.run(req);
    const float* logits = r.sampling_worker().host_logits();
    if (!logits) throw std::runtime_error("the sampling shard kept no host logits");
    std::ofstream f(o.out + "/logits_" + std::to_string(i) + ".bin", std::ios::binary);
    f.write(reinterpret_cast<const char*>(logits), static_cast<std::streamsize>(sizeof(float) * n * vocab));
    json am = json::array();
    for (int t = 0; t < n; ++t) {
      const float* row = logits + static_cast<size_t>(t) * vocab;
      am.push_back(std::max_element(row, row + vocab) - row);
    }
    argmax.push_back(am);
  }
  std::ofstream(o.out + "/argmax.json") << json{{"argmax", argmax}, {"vocab", vocab}}.dump() << "\n";
}

run_times run_engine(gpu_replica& r, const options& o, const std::vector<std::vector<int32_t>>& prompts,
                     int max_tokens) {
  engine_config ec;
  ec.block_size = 16;
  ec.kv_tokens = r.n_blocks() * 16;
  ec.max_batch_tokens = o.max_batch_tokens;
  ec.max_seqs = std::max<int>(static_cast<int>(prompts.size()), 1);
  ec.prefix_caching = false;
  ec.local_execution = false;
  ec.overlap = o.overlap || o.pipeline;
  engine e(std::shared_ptr<const model>(&r.meta(), [](const model*) {}), ec);
  sampling_params p;
  p.temperature = 0;
  p.max_tokens = max_tokens;
  p.ignore_eos = true;
  std::map<seq_id, size_t> index;
  run_times out;
  out.tokens.resize(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) index[e.submit(prompts[i], p)] = i;
  if (o.pipeline) {
    bench::pipelined_steps(e, *r.sole_worker(), out, index);
    return out;
  }
  // A step's wall time runs from the end of the step before it to its events. With
  // --overlap the next step is planned while this one runs and starts as soon as it ends
  // (scheduler.overlap), so the GPU idles only for the hand-over between the threads.
  std::deque<pending_step> flight;
  step_recorder rec(e, out, index);
  while (e.has_work() || !flight.empty()) {
    if (flight.empty()) {
      auto ps = e.begin_step();
      if (!ps) {
        e.take_ended();
        continue;
      }
      flight.push_back(std::move(*ps));
      r.start(flight.back().request);
    }
    auto next = o.overlap ? e.begin_step() : std::nullopt;
    auto so = r.finish();
    const auto* ctx = r.sampling_worker().context();
    const double dev = ctx ? ctx->last_step_device_ms() : 0.0;  // before the next step may change it
    if (next) {
      flight.push_back(std::move(*next));
      r.start(flight.back().request);
    }
    rec.landed(flight.front(), so.samples, dev);
    flight.pop_front();
  }
  return out;
}

void run_generate(gpu_replica& r, const options& o) {
  const auto prompts = read_prompts(o.tokens);
  auto t = run_engine(r, o, prompts, o.max_tokens);
  std::ofstream(o.out) << json{{"tokens", t.tokens}}.dump() << "\n";
}

std::vector<int32_t> random_prompt(int n, int vocab, uint32_t salt) {
  std::vector<int32_t> p(static_cast<size_t>(n));
  uint32_t x = 2463534242u + salt * 7919u;
  for (auto& t : p) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    t = static_cast<int32_t>(x % static_cast<uint32_t>(std::min(vocab, 32000)));
  }
  return p;
}


void run_bench(gpu_replica& r, const options& o) {
  const auto& c = r.meta().config();
  const device_ref d{backend_kind::cuda, o.first_device};
  json j;
  j["tp"] = o.tp;
  j["pp"] = o.pp;
  j["model"] = c.name;
  j["layers"] = c.n_layers;
  j["weight_type"] = o.weight_type;
  j["load_ms"] = r.load_ms();
  j["kv_blocks"] = r.n_blocks();
  j["cuda_graphs"] = o.graphs;
  j["batch_invariant"] = o.batch_invariant;
  j["overlap"] = o.overlap;
  j["pipeline"] = o.pipeline;
  const double bw = copy_rate(d), flops = gemm_rate(d);
  j["copy_rate_GBps"] = bw / 1e9;
  j["gemm_TFLOPs"] = flops / 1e12;
  const double bytes = static_cast<double>(r.max_weight_bytes());
  j["weight_GB_per_gpu"] = bytes / 1e9;
  j["roofline_ms"] = bytes / bw * 1e3;
  json decode = json::array();
  for (int b : o.batches) {
    std::vector<std::vector<int32_t>> prompts;
    for (int i = 0; i < b; ++i) prompts.push_back(random_prompt(o.decode_prompt, c.vocab, static_cast<uint32_t>(i)));
    run_engine(r, o, prompts, 4);  // warm-up: plans, workspaces, graphs of this size
    auto t = run_engine(r, o, prompts, o.gen);
    const double ms = median(t.decode_ms), dev = median(t.decode_device_ms);
    // GPU idle per step: the wall step (scheduling, upload, launch, sampling, copy-back,
    // events) less the device time from the forward's start to the sampling's end.
    json row{{"batch", b},           {"ms_per_step", ms}, {"tokens_per_s", ms > 0 ? b * 1e3 / ms : 0.0},
             {"device_ms", dev},     {"gpu_idle_ms", ms - dev}};
    // The slowest step: outliers the median hides.
    if (!t.decode_ms.empty()) row["max_step_ms"] = *std::max_element(t.decode_ms.begin(), t.decode_ms.end());
    if (!t.decode_device_ms.empty())
      row["max_device_ms"] = *std::max_element(t.decode_device_ms.begin(), t.decode_device_ms.end());
    if (b == 1) row["roofline_fraction"] = ms > 0 ? (bytes / bw * 1e3) / ms : 0.0;
    decode.push_back(row);
    std::fprintf(stderr, "decode batch %d: %.3f ms/step\n", b, ms);
  }
  j["decode"] = decode;
  json prefill = json::array();
  const double params_per_token = 2.0 * static_cast<double>(r.max_weight_bytes()) / 2.0 * o.tp * o.pp;
  for (int n : o.prompt_lens) {
    if (n > o.max_batch_tokens) continue;
    const auto prompt = random_prompt(n, c.vocab, 99);
    run_times t;
    try {
      run_engine(r, o, {prompt}, 1);
      t = run_engine(r, o, {prompt}, 1);
    } catch (const std::exception& e) {  // one length that cannot run does not lose the table
      prefill.push_back({{"prompt", n}, {"error", e.what()}});
      std::fprintf(stderr, "prefill %d: %s\n", n, e.what());
      continue;
    }
    // 2 FLOPs per weight per token, plus causal attention: 2 * 2 * n^2/2 * heads * head_dim per layer.
    const double attn = 2.0 * n * n * c.n_heads * c.head_dim * c.n_layers;
    const double work = params_per_token * n + attn;
    const double ideal_ms = work / (flops * o.tp * o.pp) * 1e3;
    prefill.push_back({{"prompt", n}, {"ttft_ms", t.first_step_ms}, {"matrix_rate_fraction", ideal_ms / t.first_step_ms}});
    std::fprintf(stderr, "prefill %d: %.2f ms\n", n, t.first_step_ms);
  }
  j["prefill"] = prefill;
  std::cout << j.dump() << std::endl;
}

}  // namespace

int main(int argc, char** argv) {
  options o;
  po::options_description desc("troupe_gpu MODE [options]; MODE = logits | generate | bench | kernels | chain");
  std::string batches, prompt_lens;
  desc.add_options()("help,h", "this help")("mode", po::value(&o.mode)->required(), "logits, generate, bench, kernels or chain")(
      "model", po::value(&o.model)->required(), "Hugging Face model directory (config.json for --random)")(
      "random", po::bool_switch(&o.random), "the random load format: weights made on the GPUs")(
      "tp", po::value(&o.tp)->default_value(1), "tensor-parallel size")(
      "pp", po::value(&o.pp)->default_value(1), "pipeline stages")(
      "first-device", po::value(&o.first_device)->default_value(0), "first CUDA device")(
      "dtype", po::value(&o.weight_type)->default_value("bf16"), "bf16 or f16")(
      "tokens", po::value(&o.tokens), "JSON file {\"prompts\": [[ids]]} (logits, generate)")(
      "out", po::value(&o.out), "output directory (logits) or file (generate)")(
      "max-tokens", po::value(&o.max_tokens)->default_value(64), "tokens to generate (generate)")(
      "max-batch-tokens", po::value(&o.max_batch_tokens)->default_value(2048), "token budget per step")(
      "kv-fraction", po::value(&o.kv_fraction)->default_value(0.85), "share of free memory for the KV cache")(
      "no-graphs", "replay no CUDA graphs")("batch-invariant", "batch-invariant kernels (scheduler.batch_invariant)")(
      "overlap", "plan each step while the one before it runs (scheduler.overlap; one shard)")(
      "pipeline", "with --overlap's planning, enqueue each step on the device before the one before it ends (one shard)")("batches", po::value(&batches), "decode batch sizes, e.g. 1,16,64,256")(
      "prompt-lens", po::value(&prompt_lens), "prefill lengths, e.g. 1024,2048")(
      "gen", po::value(&o.gen)->default_value(64), "decode steps per batch (bench)")(
      "graph-warmup-context", po::value(&o.graph_warmup_context)->default_value(8192),
      "plan row counts and decode graphs warmed at start for contexts up to this many tokens, as a server "
      "does (scheduler.graph_warmup_context); 0: graphs captured on their second use");
  po::positional_options_description pos;
  pos.add("mode", 1);
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(argc, argv).options(desc).positional(pos).run(), vm);
    if (vm.count("help")) {
      std::cout << desc << "\n";
      return 0;
    }
    po::notify(vm);
    o.graphs = !vm.count("no-graphs");
    o.batch_invariant = vm.count("batch-invariant") > 0;
    o.overlap = vm.count("overlap") > 0;
    if (o.overlap && o.tp * o.pp != 1) throw std::invalid_argument("--overlap needs one shard (--tp 1 --pp 1)");
    o.pipeline = vm.count("pipeline") > 0;
    if (o.pipeline && o.tp * o.pp != 1) throw std::invalid_argument("--pipeline needs one shard (--tp 1 --pp 1)");
    auto list = [](const std::string& s) {
      std::vector<int> v;
      std::stringstream ss(s);
      for (std::string x; std::getline(ss, x, ',');) v.push_back(std::stoi(x));
      return v;
    };
    if (!batches.empty()) o.batches = list(batches);
    if (!prompt_lens.empty()) o.prompt_lens = list(prompt_lens);
    if (o.mode != "logits" && o.mode != "generate" && o.mode != "bench" && o.mode != "kernels" && o.mode != "chain")
      throw std::invalid_argument("mode must be logits, generate, bench, kernels or chain, not '" + o.mode + "'");
    if ((o.mode == "logits" || o.mode == "generate") && (o.tokens.empty() || o.out.empty()))
      throw std::invalid_argument(o.mode + " needs --tokens and --out");
    if (cuda_device_count() < o.first_device + o.tp * o.pp)
      throw std::invalid_argument("tp " + std::to_string(o.tp) + " x pp " + std::to_string(o.pp) + " needs " +
                                  std::to_string(o.first_device + o.tp * o.pp) + " GPUs; this machine has " +
                                  std::to_string(cuda_device_count()));
  } catch (const std::exception& e) {
    std::cerr << "troupe_gpu: " << e.what() << "\n";
    return 2;
  }
  try {
    if (o.mode == "kernels") {
      run_kernel_timings(metadata_model(o)->config(), device_ref{backend_kind::cuda, o.first_device},
                         o.weight_type == "f16" ? dtype::f16 : dtype::bf16);
      return 0;
    }
    if (o.mode == "chain") {
      run_layer_chain(metadata_model(o)->config(), device_ref{backend_kind::cuda, o.first_device},
                      o.weight_type == "f16" ? dtype::f16 : dtype::bf16);
      return 0;
    }
    gpu_replica r(o);
    if (o.mode == "logits") run_logits(r, o);
    if (o.mode == "generate") run_generate(r, o);
    if (o.mode == "bench") run_bench(r, o);
  } catch (const std::exception& e) {
    std::cerr << "troupe_gpu: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
