// The replica's bookkeeping (replica_state.h): per-step and replay counters in its status,
// and the metrics it publishes.
#include "actors/serving/replica_state.h"

#include <algorithm>

#include "actors/actor_system_config.h"

namespace troupe::replica_detail {

void account_step(replica_state& st, const flight& f) {
  const auto& b = f.step.request.batch;
  const auto now = std::chrono::steady_clock::now();
  // Overlapped steps wait at the shard behind the step before them: that wait is not theirs.
  const auto start = overlaps(st) ? std::max(f.sent, st.last_landed) : f.sent;
  st.last_landed = now;
  const auto wall = now - start;
  if (st.opts.metrics)
    st.opts.metrics->step_duration.with({std::to_string(st.opts.index), b.kind()})
        .observe(std::chrono::duration<double>(wall).count());
  if (b.tokens.size() != b.logit_rows.size()) return;
  const int tp = st.opts.config.parallel.tensor, pp = st.opts.config.parallel.pipeline;
  int64_t kernel = 0, busy = 0;
  for (int s = 0; s < pp; ++s) {
    int64_t k = 0;
    for (int r = 0; r < tp; ++r) {
      const auto& o = f.outputs[static_cast<size_t>(s * tp + r)];
      k = std::max(k, o.busy_us - o.comm_us);
      busy = std::max(busy, o.busy_us);
    }
    kernel += k;
  }
  auto& t = st.status;
  t.decode_steps++;
  t.decode_wall_us += std::chrono::duration_cast<std::chrono::microseconds>(wall).count();
  t.decode_kernel_us += kernel;
  t.decode_busy_us += busy;
  t.step_messages += 2 * static_cast<int64_t>(f.outputs.size());
}

void report(replica_state& st) {
  if (!st.opts.metrics) return;
  auto& m = *st.opts.metrics;
  const metrics::label_values r{std::to_string(st.opts.index)};
  const auto& sched = st.eng->sched();
  const auto& blocks = st.eng->blocks();
  m.running_sequences.with(r).set(sched.n_running());
  m.waiting_sequences.with(r).set(sched.n_waiting());
  m.kv_cache_usage.with(r).set(blocks.n_blocks() > 0 ? double(blocks.n_used()) / blocks.n_blocks() : 0.0);
  const auto& now = blocks.stats();
  m.prefix_cache_queries.with(r).inc(double(now.queried_tokens - st.reported.queried_tokens));
  m.prefix_cache_hits.with(r).inc(double(now.reused_tokens - st.reported.reused_tokens));
  st.reported = now;
}

void report_shards(replica_state& st, bool ready, int down) {
  if (!st.opts.metrics) return;
  auto& m = *st.opts.metrics;
  const std::string r = std::to_string(st.opts.index);
  m.replica_ready.with({r}).set(ready ? 1 : 0);
  const int tp = st.opts.config.parallel.tensor, pp = st.opts.config.parallel.pipeline;
  for (int s = 0; s < pp; ++s)
    for (int k = 0; k < tp; ++k) {
      const int i = s * tp + k;
      auto& g = m.shard_up.with({r, std::to_string(s), std::to_string(k)});
      if (ready) g.set(1);
      else if (i == down || down == all_shards) g.set(0);
    }
}

void account_replay(replica_ptr self, const std::set<int>& stages, int64_t tokens, const std::vector<int64_t>& relinked,
                    std::chrono::steady_clock::time_point t0) {
  auto& st = self->state;
  const int tp = st.opts.config.parallel.tensor, pp = st.opts.config.parallel.pipeline;
  int64_t survivor_writes = 0;
  for (size_t i = 0; i < st.shards.size(); ++i)
    if (!stages.count(static_cast<int>(i) / tp) && st.reused[i]) survivor_writes += st.kv_rows[i] - relinked[i];
  const int64_t kept = tokens * (pp - static_cast<int>(stages.size()));
  auto& t = st.status;
  t.stage_recoveries++;
  t.replayed_tokens += tokens * static_cast<int64_t>(stages.size());
  t.kept_kv_rows += kept;
  t.survivor_kv_writes += survivor_writes;
  t.last_replay_us = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0).count();
  std::string list;
  for (int s : stages) list += (list.empty() ? "" : ",") + std::to_string(s);
  logger()->info("replica {}: stage-local recovery: stage(s) {} rebuilt from {} token(s) in {} ms; the other {} "
                 "stage(s) kept their KV cache ({} row(s) each, {} written during the recovery)",
                 st.opts.index, list, tokens, t.last_replay_us / 1000, pp - static_cast<int>(stages.size()), tokens,
                 survivor_writes);
  if (!st.opts.metrics) return;
  const metrics::label_values r{std::to_string(st.opts.index)};
  auto& m = *st.opts.metrics;
  m.stage_recoveries.with(r).inc();
  m.stage_replay_tokens.with(r).inc(double(tokens * static_cast<int64_t>(stages.size())));
  m.stage_kept_kv_tokens.with(r).inc(double(kept));
  m.stage_survivor_kv_writes.with(r).inc(double(survivor_writes));
}

}  // namespace troupe::replica_detail
