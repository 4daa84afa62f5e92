#pragma once
/// One replica's data path in one process, without actors: shard workers of a tensor x
/// pipeline group on threads, joined by real UCX links, driven by a scheduling-only engine.
/// Shared by the stage-local recovery test (tests/runtime/engine/test_stage_recovery.cpp) and its
/// benchmark (tools/bench/troupe_recovery_bench.cpp).
#include <chrono>
#include <future>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "runtime/engine/engine.h"
#include "runtime/model/model_loader.h"
#include "runtime/engine/shard_worker.h"

namespace troupe::bench {

/// The shard workers of one replica (index = stage * tp + rank).
class local_replica {
 public:
  /// Loads every shard of `tp` x `pp` over `model_path`, each with context `ctx`.
  local_replica(std::string model_path, int tp, int pp, context_params ctx, int threads = 1)
      : model_path_(std::move(model_path)), tp_(tp), pp_(pp), ctx_(ctx), threads_(threads) {
    stages_ = parallel::plan_pipeline(load_model_metadata(model_path_).config, pp);
    for (int s = 0; s < pp; ++s)
      for (int r = 0; r < tp; ++r) shards_.push_back(std::make_unique<shard_worker>(spec(s, r)));
  }

  /// Connects every shard; `keep_kv`: the shards that already have a context keep it.
  void connect(bool keep_kv = false) {
    std::vector<shard_addresses> a;
    for (auto& w : shards_) a.push_back(w->addresses());
    connect_with(a, keep_kv);
  }

  /// Replaces the shards of `stage` with freshly loaded ones (a restarted stage) and
  /// relinks the others, keeping their KV cache (`keep_kv`; false: every shard gets a fresh
  /// context). Returns the KV row count each shard's relink reported (index = shard).
  std::vector<int64_t> restart_stage(int stage, bool keep_kv = true) {
    std::vector<shard_addresses> a(shards_.size());
    std::vector<int64_t> rows(shards_.size(), 0);
    for (int r = 0; r < tp_; ++r) shards_[index(stage, r)].reset();
    for (int r = 0; r < tp_; ++r) shards_[index(stage, r)] = std::make_unique<shard_worker>(spec(stage, r));
    for (size_t i = 0; i < shards_.size(); ++i) {
      const bool survivor = static_cast<int>(i) / tp_ != stage;
      a[i] = survivor ? shards_[i]->relink() : shards_[i]->addresses();
      rows[i] = a[i].kv_rows;
    }
    connect_with(a, keep_kv);
    return rows;
  }

  /// Runs `r` on every shard at once; returns each shard's output.
  std::vector<step_output> run(const step_request& r) {
    std::vector<std::future<step_output>> fs;
    for (auto& w : shards_) fs.push_back(std::async(std::launch::async, [&w, &r] { return w->run(r); }));
    std::vector<step_output> out;
    for (auto& f : fs) out.push_back(f.get());
    return out;
  }

  /// Runs one scheduled step of `e` and completes it; false when nothing was scheduled.
  bool step(engine& e, std::vector<token_event>* events = nullptr) {
    auto p = e.begin_step();
    if (!p) return false;
    auto outs = run(p->request);
    std::vector<sample_result> samples;
    for (size_t i = 0; i < outs.size(); ++i)
      if (shards_[i]->samples()) samples = std::move(outs[i].samples);
    auto ev = e.end_step(*p, samples);
    if (events) events->insert(events->end(), ev.begin(), ev.end());
    return true;
  }

  shard_worker& shard(int stage, int rank) { return *shards_[index(stage, rank)]; }
  int tp() const { return tp_; }
  int pp() const { return pp_; }

 private:
  size_t index(int s, int r) const { return static_cast<size_t>(s * tp_ + r); }

  shard_spec spec(int s, int r) const {
    shard_spec sp;
    sp.model_path = model_path_;
    sp.stage = s;
    sp.n_stages = pp_;
    sp.layers = stages_[static_cast<size_t>(s)];
    sp.tp_rank = r;
    sp.tp_size = tp_;
    sp.allow_uneven_heads = true;
    sp.context = ctx_;
    sp.threads = threads_;
    return sp;
  }

  void connect_with(const std::vector<shard_addresses>& a, bool keep_kv) {
    std::vector<std::future<void>> fs;
    for (int s = 0; s < pp_; ++s)
      for (int r = 0; r < tp_; ++r) {
        std::vector<std::vector<char>> group;
        for (int q = 0; q < tp_; ++q) group.push_back(a[index(s, q)].tensor);
        std::vector<char> prev, next;
        if (s > 0) prev = a[index(s - 1, r)].next;
        if (s + 1 < pp_) next = a[index(s + 1, r)].prev;
        auto* w = shards_[index(s, r)].get();
        fs.push_back(std::async(std::launch::async, [w, group, prev, next, keep_kv] {
          w->connect(group, prev, next, std::chrono::steady_clock::now() + std::chrono::seconds(20), keep_kv);
        }));
      }
    for (auto& f : fs) f.get();
  }

  std::string model_path_;
  int tp_, pp_;
  context_params ctx_;
  int threads_;
  std::vector<parallel::layer_range> stages_;
  std::vector<std::unique_ptr<shard_worker>> shards_;
};

/// Every slot of the KV rows `steps` write (the replay's rows: every computed token).
inline std::vector<int32_t> slots_of(const std::vector<step_request>& steps) {
  std::vector<int32_t> slots;
  for (const auto& s : steps) slots.insert(slots.end(), s.batch.slots.begin(), s.batch.slots.end());
  return slots;
}

}  // namespace troupe::bench
