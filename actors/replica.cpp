#include "actors/replica.h"

#include <map>
#include <unordered_map>

#include "actors/actor_system_config.h"

namespace troupe {

engine_config replica_engine_config(const scheduler_section& s) {
  engine_config e;
  e.block_size = s.block_size;
  e.kv_tokens = s.kv_tokens;
  e.max_batch_tokens = s.max_batch_tokens;
  e.max_seqs = s.max_seqs;
  e.max_context = s.max_context;
  e.prefix_caching = s.prefix_caching;
  e.local_execution = false;
  return e;
}

context_params replica_context_params(const scheduler_section& s) {
  context_params p;
  p.block_size = s.block_size;
  p.n_blocks = (s.kv_tokens + s.block_size - 1) / s.block_size;
  p.max_batch_tokens = s.max_batch_tokens;
  p.max_logit_rows = s.max_seqs;
  return p;
}

namespace {

/// A step sent to the shards and not answered by all of them yet.
struct flight {
  pending_step step;
  size_t waiting = 0;
  std::vector<sample_result> samples;
  std::chrono::steady_clock::time_point sent;  ///< when the step went to the shards
  std::vector<step_output> outputs;            ///< per shard: its timings (samples moved out)
};

/// Who asked for a sequence.
struct client_ref {
  uint64_t request = 0;
  caf::actor client;
};

struct replica_state {
  replica_options opts;
  std::unique_ptr<engine> eng;
  std::vector<shard_actor> shards;       // index = stage * tensor + rank
  bool ready = false;
  uint64_t generation = 0;               // bumps on every (re)connect and failure
  std::map<uint64_t, flight> flights;    // by step id
  std::unordered_map<seq_id, client_ref> clients;
  std::unordered_map<uint64_t, seq_id> by_request;
  replica_status status;
  block_stats reported;                  // prefix-cache counters already added to metrics
  bool failed_before = false;            // a failure happened since the last ready
  static inline const char* name = "troupe.replica";
};

using replica_ptr = replica_actor::stateful_pointer<replica_state>;

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
    caf::anon_send(it->second.client, token_atom::value, std::move(m));
    if (ev.finished) {
      st.by_request.erase(it->second.request);
      st.clients.erase(it);
    }
  }
}

void kick(replica_ptr self);

/// Adds a finished decode step (every row one new token) to the overhead counters: the
/// kernel time of a step is the sum over stages of the slowest rank's time outside the
/// communicators; the rest of the replica's wall time is the runtime's: communicator
/// transfers and waits (inside the shards' busy time) and actor messaging and scheduling
/// (the wall time beyond the longest busy shard).
void account_step(replica_state& st, const flight& f) {
  const auto& b = f.step.request.batch;
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
  t.decode_wall_us += std::chrono::duration_cast<std::chrono::microseconds>(
                          std::chrono::steady_clock::now() - f.sent).count();
  t.decode_kernel_us += kernel;
  t.decode_busy_us += busy;
  t.step_messages += 2 * static_cast<int64_t>(f.outputs.size());
}

/// Publishes the scheduler's and the KV cache's state (after every step and request change).
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

/// Publishes readiness and every shard's up/down state; `down` = the failed shard or -1.
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
      else if (i == down) g.set(0);
    }
}

void on_step_output(replica_ptr self, uint64_t gen, uint64_t step_id, size_t shard, step_output& out) {
  auto& st = self->state;
  if (gen != st.generation) return;
  auto it = st.flights.find(step_id);
  if (it == st.flights.end()) return;
  if (shard == sampling_shard(st)) it->second.samples = std::move(out.samples);
  it->second.outputs[shard] = std::move(out);
  if (--it->second.waiting > 0) return;
  account_step(st, it->second);
  auto events = st.eng->end_step(it->second.step, it->second.samples);
  st.flights.erase(it);
  st.status.steps++;
  dispatch(self, events);
  kick(self);
  report(st);
}

void kick(replica_ptr self) {
  auto& st = self->state;
  const size_t max_flights = static_cast<size_t>(std::max(1, st.opts.config.scheduler.micro_batches));
  while (st.ready && st.flights.size() < max_flights) {
    auto p = st.eng->begin_step();
    if (!p) break;
    const uint64_t id = p->request.step_id, gen = st.generation;
    auto& f = st.flights[id];
    f.step = std::move(*p);
    f.waiting = st.shards.size();
    f.outputs.resize(st.shards.size());
    f.sent = std::chrono::steady_clock::now();
    for (size_t i = 0; i < st.shards.size(); ++i)
      self->request(st.shards[i], step_timeout(st), step_atom::value, f.step.request)
          .then([self, gen, id, i](step_output& out) { on_step_output(self, gen, id, i, out); },
                [self, gen, i](caf::error& e) {
                  if (gen == self->state.generation)
                    fail(self, "shard " + std::to_string(i) + ": " + self->system().render(e), static_cast<int>(i));
                });
  }
  auto ended = st.eng->take_ended();
  dispatch(self, ended);
}

void fail(replica_ptr self, const std::string& why, int shard) {
  auto& st = self->state;
  st.generation++;
  st.status.failures++;
  for (auto& s : st.shards) self->send(s, abort_atom::value);
  for (auto& [id, f] : st.flights) st.eng->abandon_step(f.step);
  st.flights.clear();
  st.eng->kv_lost();  // the shards that held the KV cache are being replaced
  const bool was_ready = st.ready;
  st.ready = false;
  logger()->warn("replica {}: {}{}", st.opts.index, why, was_ready ? "; waiting for new shards" : "");
  st.failed_before = true;
  if (st.opts.metrics) st.opts.metrics->shard_failures.with({std::to_string(st.opts.index)}).inc();
  report_shards(st, false, shard);
  if (st.opts.on_state) st.opts.on_state(st.opts.index, false, why);
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

/// Connects the communicators of every shard: gathers addresses, then sends peers.
void connect_shards(replica_ptr self) {
  auto& st = self->state;
  const uint64_t gen = ++st.generation;
  const auto n = st.shards.size();
  auto addrs = std::make_shared<std::vector<shard_addresses>>(n);
  auto left = std::make_shared<size_t>(n);
  const caf::timespan load_timeout = std::chrono::minutes(10);
  for (size_t i = 0; i < n; ++i)
    self->request(st.shards[i], load_timeout, addresses_atom::value)
        .then(
            [self, gen, i, addrs, left](shard_addresses& a) {
              auto& st = self->state;
              if (gen != st.generation) return;
              (*addrs)[i] = std::move(a);
              if (--*left > 0) return;
              const int tp = st.opts.config.parallel.tensor, pp = st.opts.config.parallel.pipeline;
              int kv_blocks = 0;
              try {
                kv_blocks = fit_kv_cache(st, *addrs);
              } catch (const std::exception& e) {
                fail(self, std::string("KV cache: ") + e.what(), -1);
                return;
              }
              auto connected = std::make_shared<size_t>(st.shards.size());
              for (int s = 0; s < pp; ++s)
                for (int r = 0; r < tp; ++r) {
                  shard_peers peers;
                  for (int q = 0; q < tp; ++q) peers.tensor_group.push_back((*addrs)[static_cast<size_t>(s * tp + q)].tensor);
                  if (s > 0) peers.prev = (*addrs)[static_cast<size_t>((s - 1) * tp + r)].next;
                  if (s + 1 < pp) peers.next = (*addrs)[static_cast<size_t>((s + 1) * tp + r)].prev;
                  peers.kv_blocks = kv_blocks;
                  const size_t idx = static_cast<size_t>(s * tp + r);
                  self->request(st.shards[idx], caf::timespan{std::chrono::seconds(60)}, connect_atom::value, peers)
                      .then(
                          [self, gen, connected](caf::ok_atom) {
                            auto& st = self->state;
                            if (gen != st.generation || --*connected > 0) return;
                            st.ready = true;
                            logger()->info("replica {}: ready ({} shards)", st.opts.index, st.shards.size());
                            if (st.failed_before && st.opts.metrics)
                              st.opts.metrics->replica_recoveries.with({std::to_string(st.opts.index)}).inc();
                            st.failed_before = false;
                            report_shards(st, true, -1);
                            if (st.opts.on_state) st.opts.on_state(st.opts.index, true, "");
                            kick(self);
                          },
                          [self, gen, idx](caf::error& e) {
                            if (gen == self->state.generation)
                              fail(self, "shard " + std::to_string(idx) + " connect: " + self->system().render(e),
                                   static_cast<int>(idx));
                          });
                }
            },
            [self, gen, i](caf::error& e) {
              if (gen == self->state.generation)
                fail(self, "shard " + std::to_string(i) + " load: " + self->system().render(e), static_cast<int>(i));
            });
}

void adopt_shards(replica_ptr self, std::vector<shard_actor> shards) {
  auto& st = self->state;
  for (auto& s : st.shards) self->demonitor(s.address());
  st.shards = std::move(shards);
  for (auto& s : st.shards) self->monitor(s);
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
    caf::anon_send(client, token_atom::value, std::move(m));
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
      [self](replan_atom, std::vector<shard_actor>& shards, int32_t tensor, int32_t pipeline) {
        auto& st = self->state;
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
