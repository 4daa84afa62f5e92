#include "actors/serving/replica.h"

#include <map>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>

#include "actors/serving/replica_state.h"

#include "actors/actor_system_config.h"

namespace troupe {

engine_config replica_engine_config(const scheduler_section& s) {
  engine_config e;
  e.block_size = s.block_size;
  e.kv_tokens = s.kv_tokens;
  e.max_batch_tokens = s.max_batch_tokens;
  e.max_seqs = s.max_seqs;
  e.max_prefill_tokens = s.max_prefill_tokens;
  e.prefill_per_decode = s.prefill_per_decode;
  e.max_context = s.max_context;
  e.prefix_caching = s.prefix_caching;
  e.overlap = s.overlap;
  e.local_execution = false;
  return e;
}

context_params replica_context_params(const scheduler_section& s) {
  context_params p;
  p.block_size = s.block_size;
  p.n_blocks = (s.kv_tokens + s.block_size - 1) / s.block_size;
  p.max_batch_tokens = s.max_batch_tokens;
  p.max_logit_rows = s.max_seqs;
  p.batch_invariant = s.batch_invariant;
  p.graph_warmup_context = s.graph_warmup_context;
  return p;
}

namespace {

using namespace replica_detail;

caf::timespan step_timeout(const replica_state& st) {
  return caf::timespan{st.opts.config.fault_tolerance.step_timeout + std::chrono::seconds(1)};
}

size_t sampling_shard(const replica_state& st) {
  const auto& par = st.opts.config.parallel;
  return static_cast<size_t>((par.pipeline - 1) * par.tensor);
}

void fail(replica_ptr self, const std::string& why, int shard = -1);

void dispatch(replica_ptr self, std::vector<token_event>& events) {
  auto& st = self->state;
  for (auto& ev : events) {
    auto it = st.clients.find(ev.id);
    if (it == st.clients.end()) continue;
    token_msg m;
    m.request = it->second.request;
    m.token = ev.token;
    m.text = std::move(ev.text);
    m.logprob = ev.logprob;
    m.top = std::move(ev.top);
    m.finished = ev.finished;
    m.finish_reason = finish_reason_name(ev.reason);
    // Sent as this replica: the router takes token events from the head's own actors only.
    caf::unsafe_send_as(self, it->second.client, token_atom::value, std::move(m));
    if (ev.finished) {
      st.by_request.erase(it->second.request);
      st.clients.erase(it);
    }
  }
}

void kick(replica_ptr self);

/// Overlapped steps with several tensor ranks: each rank fills the next step's ahead rows
/// with the tokens it sampled itself, so they must all have sampled rank 0's. Says where
/// they differ (logits not bitwise equal across ranks), or nothing.
std::optional<std::string> ranks_disagree(const replica_state& st, const flight& f) {
  for (size_t i = 0; i < f.outputs.size(); ++i) {
    if (i == sampling_shard(st)) continue;
    const auto& mine = f.outputs[i].samples;
    for (size_t j = 0; j < f.samples.size(); ++j)
      if (j >= mine.size() || mine[j].token != f.samples[j].token)
        return "overlapped steps: shard " + std::to_string(i) + " sampled " +
               (j < mine.size() ? "token " + std::to_string(mine[j].token) : std::string("nothing")) + " at row " +
               std::to_string(j) + " of step " + std::to_string(f.step.request.step_id) + " where shard " +
               std::to_string(sampling_shard(st)) + " sampled " + std::to_string(f.samples[j].token) +
               ": its ahead rows took other tokens; the steps are recomputed";
  }
  return std::nullopt;
}

void on_step_output(replica_ptr self, uint64_t gen, uint64_t step_id, size_t shard, step_output& out) {
  auto& st = self->state;
  if (gen != st.generation) return;
  auto it = st.flights.find(step_id);
  if (it == st.flights.end()) return;
  if (overlaps(st))
    for (auto older = st.flights.begin(); older != it; ++older)
      if (older->second.outputs[shard].step_id == 0) {
        // An overlapped step takes the tokens of the one before it; a shard runs its steps
        // in order, so an answer out of order is a broken promise: recover as from a failed step.
        fail(self, "shard " + std::to_string(shard) + " answered step " + std::to_string(step_id) + " before step " +
                       std::to_string(older->first), static_cast<int>(shard));
        return;
      }
  if (shard < st.kv_rows.size()) st.kv_rows[shard] = out.kv_rows;
  if (shard == sampling_shard(st)) it->second.samples = std::move(out.samples);
  it->second.outputs[shard] = std::move(out);
  if (--it->second.waiting > 0) return;
  if (overlaps(st))
    if (auto why = ranks_disagree(st, it->second)) {
      st.ranks_diverged = true;  // never again on this replica: its ranks' logits differ
      st.eng->set_overlap(false);
      fail(self, *why + "; this replica no longer overlaps its steps", -1);
      return;
    }
  account_step(st, it->second);
  auto events = st.eng->end_step(it->second.step, it->second.samples);
  st.flights.erase(it);
  st.status.steps++;
  dispatch(self, events);
  kick(self);
  report(st);
}

/// Sends the subscriber `changes` of this replica's prefix cache.
void send_prefixes(replica_ptr self, prefix_changes changes) {
  auto& st = self->state;
  prefix_summary s;
  s.replica = st.opts.index;
  s.reset = changes.reset;
  s.added = std::move(changes.added);
  s.removed = std::move(changes.removed);
  caf::unsafe_send_as(self, st.subscriber, prefixes_atom::value, std::move(s));
}

/// Arms the timer that sends the prefix-cache changes (one summary per interval at most).
void schedule_prefixes(replica_ptr self) {
  auto& st = self->state;
  if (!st.subscriber || st.flush_pending || !st.eng->blocks().has_prefix_changes()) return;
  st.flush_pending = true;
  self->delayed_send(self, prefix_flush_interval, prefixes_atom::value);
}

void kick(replica_ptr self) {
  auto& st = self->state;
  // Micro-batches overlap pipeline stages; with one stage a second flight only halves the
  // batch and runs after the first on the same devices (every token then took two steps).
  // Overlapped steps (one shard): the second flight is the first one's next decodes, queued
  // at the shard behind it.
  const auto& sc = st.opts.config.scheduler;
  const size_t max_flights = overlaps(st)                        ? 2
                             : st.opts.config.parallel.pipeline > 1 ? static_cast<size_t>(std::max(1, sc.micro_batches))
                                                                    : 1;
  while (st.ready && st.flights.size() < max_flights) {
    auto p = st.eng->begin_step();
    if (!p) break;
    const uint64_t id = p->request.step_id, gen = st.generation;
    auto& f = st.flights[id];
    f.step = std::move(*p);
    f.waiting = st.shards.size();
    f.outputs.resize(st.shards.size());
    f.sent = std::chrono::steady_clock::now();
    if (st.opts.metrics && !f.step.request.ahead_rows.empty())
      st.opts.metrics->ahead_decodes.with({std::to_string(st.opts.index)})
          .inc(static_cast<double>(f.step.request.ahead_rows.size()));
    for (size_t i = 0; i < st.shards.size(); ++i)
      self->request(st.shards[i], step_timeout(st), step_atom::value, st.opts.term, f.step.request)
          .then([self, gen, id, i](step_output& out) { on_step_output(self, gen, id, i, out); },
                [self, gen, i](caf::error& e) {
                  if (gen == self->state.generation)
                    fail(self, "shard " + std::to_string(i) + ": " + self->system().render(e), static_cast<int>(i));
                });
  }
  auto ended = st.eng->take_ended();
  dispatch(self, ended);
  schedule_prefixes(self);
}

/// Whether a failure of `shard` may be repaired stage-locally: a pipeline whose KV cache
/// the other stages still hold (the replica was serving, or is recovering already).
bool stage_local(const replica_state& st, int shard) {
  const auto& c = st.opts.config;
  return c.fault_tolerance.stage_recovery && c.parallel.pipeline > 1 && shard >= 0 && (st.ready || st.recovering);
}

/// Ends a stage-local recovery that cannot finish: the KV cache counts as lost and the
/// requests go back to the router to move (as on any failure).
void give_up_recovery(replica_ptr self, const std::string& why) {
  auto& st = self->state;
  if (!st.recovering) return;
  st.recovering = false;
  st.generation++;
  st.eng->kv_lost();
  logger()->warn("replica {}: stage-local recovery given up: {}", st.opts.index, why);
  if (st.opts.on_state) st.opts.on_state(st.opts.index, false, why);
}

void fail(replica_ptr self, const std::string& why, int shard) {
  auto& st = self->state;
  const bool local = stage_local(st, shard);
  st.generation++;
  st.status.failures++;
  for (auto& s : st.shards) self->send(s, abort_atom::value);
  for (auto& [id, f] : st.flights) local ? st.eng->hold_step(f.step) : st.eng->abandon_step(f.step);
  st.flights.clear();
  const bool was_ready = st.ready;
  st.ready = false;
  st.failed_before = true;
  if (st.opts.metrics) st.opts.metrics->shard_failures.with({std::to_string(st.opts.index)}).inc();
  report_shards(st, false, shard);
  if (!local) {
    st.recovering = false;
    st.eng->kv_lost();  // the shards that held the KV cache are being replaced
    logger()->warn("replica {}: {}{}", st.opts.index, why, was_ready ? "; waiting for new shards" : "");
    if (st.opts.on_state) st.opts.on_state(st.opts.index, false, why);
    return;
  }
  const int stage = shard / st.opts.config.parallel.tensor;
  st.failed_stages.insert(stage);
  logger()->warn("replica {}: {}; stage-local recovery of stage {}: requests and the other stages' KV cache "
                 "stay, waiting for new shards", st.opts.index, why, stage);
  if (st.recovering) return;
  st.recovering = true;
  const uint64_t id = ++st.recovery;
  self->delayed_send(self, st.opts.config.fault_tolerance.stage_recovery_timeout, hold_atom::value, id);
  if (st.opts.on_recovering) st.opts.on_recovering(st.opts.index);
}

/// The KV blocks every shard allocates: the configured count, or fewer when some GPU shard's
/// memory holds fewer (then the scheduler is limited to them too); 0 = the configured count.
int fit_kv_cache(replica_state& st, const std::vector<shard_addresses>& addrs) {
  const int configured = replica_context_params(st.opts.config.scheduler).n_blocks;
  int fits = configured;
  for (const auto& a : addrs)
    if (a.kv_blocks > 0) fits = std::min(fits, a.kv_blocks);
  if (fits == configured && fits <= st.eng->blocks().n_blocks()) return 0;
  if (fits < st.eng->blocks().n_blocks()) {
    logger()->info("replica {}: the GPUs hold {} KV blocks of the {} configured (scheduler.kv_fraction)",
                   st.opts.index, fits, configured);
    st.eng->limit_kv_blocks(fits);
  }
  return st.eng->blocks().n_blocks();
}

/// Every shard is connected (and restarted stages replayed): the replica serves again.
void become_ready(replica_ptr self) {
  auto& st = self->state;
  st.ready = true;
  st.recovering = false;
  st.failed_stages.clear();
  logger()->info("replica {}: ready ({} shards)", st.opts.index, st.shards.size());
  if (st.failed_before && st.opts.metrics) st.opts.metrics->replica_recoveries.with({std::to_string(st.opts.index)}).inc();
  st.failed_before = false;
  report_shards(st, true, -1);
  if (st.opts.on_state) st.opts.on_state(st.opts.index, true, "");
  kick(self);
}

/// The stages a stage-local recovery rebuilds: those that failed or got a new shard.
std::set<int> replay_stages(const replica_state& st) {
  std::set<int> stages = st.failed_stages;
  const int tp = st.opts.config.parallel.tensor;
  for (size_t i = 0; i < st.reused.size(); ++i)
    if (!st.reused[i]) stages.insert(static_cast<int>(i) / tp);
  return stages;
}

/// Rebuilds the KV cache of the restarted `stages` (in order) from the running sequences'
/// computed tokens, then serves again. Every shard gets every replay step (those not
/// involved answer at once, with their KV row count).
void start_replay(replica_ptr self, uint64_t gen, std::set<int> stages, std::vector<int64_t> relinked) {
  auto& st = self->state;
  int64_t tokens = 0;
  const auto steps = st.eng->replay_steps(tokens);
  const auto t0 = std::chrono::steady_clock::now();
  auto left = std::make_shared<size_t>(steps.size() * stages.size() * st.shards.size());
  if (*left == 0) {
    account_replay(self, stages, 0, relinked, t0);
    become_ready(self);
    return;
  }
  for (int stage : stages)
    for (auto r : steps) {
      r.replay_stage = stage;
      for (size_t i = 0; i < st.shards.size(); ++i)
        self->request(st.shards[i], step_timeout(st), step_atom::value, st.opts.term, r)
            .then(
                [self, gen, i, left, stages, tokens, relinked, t0](step_output& out) {
                  auto& st = self->state;
                  if (gen != st.generation) return;
                  st.kv_rows[i] = out.kv_rows;
                  if (--*left > 0) return;
                  account_replay(self, stages, tokens, relinked, t0);
                  become_ready(self);
                },
                [self, gen, i](caf::error& e) {
                  if (gen == self->state.generation)
                    fail(self, "shard " + std::to_string(i) + " replay: " + self->system().render(e),
                         static_cast<int>(i));
                });
    }
}

/// Sends every shard its peers; `local`: a stage-local recovery (reused shards keep their
/// KV cache, then the restarted stages replay).
void connect_peers(replica_ptr self, uint64_t gen, const std::vector<shard_addresses>& addrs, int kv_blocks,
                   bool local) {
  auto& st = self->state;
  const int tp = st.opts.config.parallel.tensor, pp = st.opts.config.parallel.pipeline;
  auto connected = std::make_shared<size_t>(st.shards.size());
  std::vector<int64_t> relinked(addrs.size());
  for (size_t i = 0; i < addrs.size(); ++i) relinked[i] = addrs[i].kv_rows;
  for (int s = 0; s < pp; ++s)
    for (int r = 0; r < tp; ++r) {
      shard_peers peers;
      for (int q = 0; q < tp; ++q) peers.tensor_group.push_back(addrs[static_cast<size_t>(s * tp + q)].tensor);
      if (s > 0) peers.prev = addrs[static_cast<size_t>((s - 1) * tp + r)].next;
      if (s + 1 < pp) peers.next = addrs[static_cast<size_t>((s + 1) * tp + r)].prev;
      const size_t idx = static_cast<size_t>(s * tp + r);
      peers.kv_blocks = kv_blocks;
      peers.keep_kv = local && st.reused[idx];
      self->request(st.shards[idx], caf::timespan{std::chrono::seconds(60)}, connect_atom::value, st.opts.term, peers)
          .then(
              [self, gen, connected, local, relinked](caf::ok_atom) {
                auto& st = self->state;
                if (gen != st.generation || --*connected > 0) return;
                if (local)
                  start_replay(self, gen, replay_stages(st), relinked);
                else
                  become_ready(self);
              },
              [self, gen, idx](caf::error& e) {
                if (gen == self->state.generation)
                  fail(self, "shard " + std::to_string(idx) + " connect: " + self->system().render(e),
                       static_cast<int>(idx));
              });
    }
}

/// All addresses are in: sizes the KV cache and connects (see connect_peers).
void on_addresses(replica_ptr self, uint64_t gen, const std::vector<shard_addresses>& addrs) {
  auto& st = self->state;
  const bool local = st.recovering;
  if (local) {
    for (size_t i = 0; i < addrs.size(); ++i)
      if (!st.reused[i] && addrs[i].kv_blocks > 0 && addrs[i].kv_blocks < st.eng->blocks().n_blocks()) {
        give_up_recovery(self, "a new shard holds fewer KV blocks than the cache it rejoins");
        return;  // generation moved on: the manager's next rebuild starts over
      }
    connect_peers(self, gen, addrs, st.eng->blocks().n_blocks(), true);
    return;
  }
  int kv_blocks = 0;
  try {
    kv_blocks = fit_kv_cache(st, addrs);
  } catch (const std::exception& e) {
    fail(self, std::string("KV cache: ") + e.what(), -1);
    return;
  }
  connect_peers(self, gen, addrs, kv_blocks, false);
}

/// Connects the communicators of every shard: gathers addresses (new shards once loaded,
/// reused ones from fresh endpoints: relink_atom), then sends peers.
void connect_shards(replica_ptr self) {
  auto& st = self->state;
  const uint64_t gen = ++st.generation;
  const auto n = st.shards.size();
  auto addrs = std::make_shared<std::vector<shard_addresses>>(n);
  auto left = std::make_shared<size_t>(n);
  const caf::timespan load_timeout = std::chrono::minutes(10);
  for (size_t i = 0; i < n; ++i) {
    auto on_address = [self, gen, i, addrs, left](shard_addresses& a) {
      auto& st = self->state;
      if (gen != st.generation) return;
      (*addrs)[i] = std::move(a);
      if (--*left == 0) on_addresses(self, gen, *addrs);
    };
    auto on_error = [self, gen, i](caf::error& e) {
      if (gen == self->state.generation)
        fail(self, "shard " + std::to_string(i) + " load: " + self->system().render(e), static_cast<int>(i));
    };
    if (st.reused[i])
      self->request(st.shards[i], caf::timespan{std::chrono::seconds(60)}, relink_atom::value, st.opts.term)
          .then(on_address, on_error);
    else
      self->request(st.shards[i], load_timeout, addresses_atom::value).then(on_address, on_error);
  }
}

void adopt_shards(replica_ptr self, std::vector<shard_actor> shards) {
  auto& st = self->state;
  st.reused.assign(shards.size(), false);
  if (shards.size() == st.shards.size())
    for (size_t i = 0; i < shards.size(); ++i) st.reused[i] = shards[i].address() == st.shards[i].address();
  for (auto& s : st.shards) self->demonitor(s.address());
  st.shards = std::move(shards);
  st.kv_rows.assign(st.shards.size(), 0);
  for (auto& s : st.shards) self->monitor(s);
  if (st.recovering && static_cast<int>(replay_stages(st).size()) >= st.opts.config.parallel.pipeline)
    give_up_recovery(self, "every stage has a new shard");
  connect_shards(self);
}

void on_generate(replica_ptr self, uint64_t id, generate_request& req, const caf::actor& client) {
  auto& st = self->state;
  try {
    const seq_id seq = st.eng->submit(std::move(req.prompt), req.params, resume_point{std::move(req.emitted)});
    st.clients[seq] = {id, client};
    st.by_request[id] = seq;
    kick(self);
    report(st);
  } catch (const std::exception& e) {
    token_msg m;
    m.request = id;
    m.finished = true;
    m.finish_reason = "error";
    m.error = e.what();
    caf::unsafe_send_as(self, client, token_atom::value, std::move(m));
  }
}

replica_actor::behavior_type replica_impl(replica_ptr self, replica_options opts) {
  auto& st = self->state;
  st.opts = std::move(opts);
  st.status.index = st.opts.index;
  st.eng = std::make_unique<engine>(st.opts.meta, replica_engine_config(st.opts.config.scheduler));
  self->set_down_handler([self](caf::down_msg& dm) {
    for (size_t i = 0; i < self->state.shards.size(); ++i)
      if (self->state.shards[i].address() == dm.source) {
        fail(self, "shard " + std::to_string(i) + " is down: " + self->system().render(dm.reason),
             static_cast<int>(i));
        return;
      }
  });
  adopt_shards(self, std::move(st.opts.shards));
  return {
      [self](generate_atom, uint64_t id, generate_request& req, const caf::actor& client) {
        on_generate(self, id, req, client);
      },
      [self](cancel_atom, uint64_t id) {
        auto it = self->state.by_request.find(id);
        if (it != self->state.by_request.end()) self->state.eng->cancel(it->second);
        kick(self);
        report(self->state);
      },
      [self](status_atom) {
        auto s = self->state.status;
        s.ready = self->state.ready;
        s.requests = static_cast<int32_t>(self->state.clients.size());
        return s;
      },
      [self](rebuild_atom, std::vector<shard_actor>& shards) { adopt_shards(self, std::move(shards)); },
      [self](subscribe_atom, const caf::actor& router) {
        auto& st = self->state;
        st.subscriber = router;
        st.eng->track_prefix_changes(prefix_journal_keys);
        send_prefixes(self, st.eng->prefix_snapshot(prefix_snapshot_keys));
      },
      [self](prefixes_atom) {
        auto& st = self->state;
        st.flush_pending = false;
        if (st.subscriber && st.eng->blocks().has_prefix_changes())
          send_prefixes(self, st.eng->take_prefix_changes(prefix_snapshot_keys));
      },
      [self](hold_atom, uint64_t recovery) {
        auto& st = self->state;
        if (st.recovering && recovery == st.recovery)
          give_up_recovery(self, "not done within fault_tolerance.stage_recovery_timeout (" +
                                     std::to_string(st.opts.config.fault_tolerance.stage_recovery_timeout.count()) +
                                     " ms)");
      },
      [self](stop_atom) {
        auto& st = self->state;
        st.generation++;  // answers of the old shards are stale
        st.recovering = false;
        for (auto& s : st.shards) self->demonitor(s.address());
        for (auto& [id, f] : st.flights) st.eng->abandon_step(f.step);
        st.flights.clear();
        st.eng->kv_lost();
        st.shards.clear();
        st.ready = false;
        report_shards(st, false, all_shards);
        logger()->info("replica {}: its shards are stopped on purpose (parked); waiting for new ones", st.opts.index);
      },
      [self](replan_atom, std::vector<shard_actor>& shards, int32_t tensor, int32_t pipeline) {
        auto& st = self->state;
        give_up_recovery(self, "the replica is re-planned");
        if (st.ready || !st.flights.empty())
          fail(self, "re-planned to tensor " + std::to_string(tensor) + " x pipeline " + std::to_string(pipeline));
        st.opts.config.parallel.tensor = tensor;
        st.opts.config.parallel.pipeline = pipeline;
        adopt_shards(self, std::move(shards));
      },
  };
}

}  // namespace

replica_actor spawn_replica(caf::actor_system& sys, replica_options opts) {
  return sys.spawn(replica_impl, std::move(opts));
}

}  // namespace troupe
