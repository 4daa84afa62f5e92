#include "actors/serving/router.h"

#include <algorithm>
#include <deque>
#include <set>
#include <unordered_map>

#include "actors/actor_system_config.h"
#include "actors/link_security.h"
#include "actors/serving/prefix_index.h"
#include "runtime/engine/prefix_hash.h"

namespace troupe {

namespace {

using clock_type = std::chrono::steady_clock;

/// A request as the router tracks it.
struct route {
  caf::actor client;
  uint64_t client_id = 0;
  int replica = -1;               ///< -1 while waiting for a ready replica
  generate_request request;       ///< kept until it finishes (for resumption)
  std::vector<int32_t> emitted;   ///< tokens the client has received
  clock_type::time_point since;   ///< when it last started waiting for a replica
  int retries = 0;                ///< times it moved off a failed replica
  int drain_moves = 0;            ///< times it moved off a draining replica (not retries)
  int64_t tokens = 0;             ///< prompt + max_tokens: its share of the token limit
  bool admitted = true;           ///< counts against the limits (until it ends or is cancelled)
  bool cancelled = false;         ///< given up: it ends at its replica and never moves
};

/// A graceful drain waiting for its replicas to hold no request.
struct drain_wait {
  std::vector<int32_t> replicas;
  clock_type::time_point deadline;  ///< requests still running then move elsewhere
  caf::typed_response_promise<int32_t> promise;  ///< answered with `moved`
  int32_t moved = 0;
  bool deadline_passed = false;
};

struct router_state {
  std::vector<replica_actor> replicas;
  std::vector<bool> ready;
  std::vector<bool> draining;     ///< no new requests (graceful drain)
  std::vector<drain_wait> drains; ///< drains not answered yet
  std::vector<int> load;          ///< requests in flight per replica
  std::unordered_map<uint64_t, route> routes;  ///< by router id
  /// Router ids without a replica: requests moved off a replica first, then new ones in
  /// arrival order (each expires request_wait after its own `since`).
  std::deque<uint64_t> waiting;
  std::chrono::milliseconds request_wait{30000};
  int request_retries = 3;        ///< moves allowed per request
  router_limits limits;           ///< admission: requests and tokens held at once
  int admitted_requests = 0;      ///< routes that count against the limits
  int64_t admitted_tokens = 0;    ///< their prompt + max_tokens
  std::set<caf::actor_addr> watched;  ///< client actors this router monitors
  uint64_t next_id = 1;
  router_routing routing;         ///< policy, thresholds, block size, metrics
  bool cache_aware = false;       ///< routing.policy.policy == "cache_aware"
  prefix_index index;             ///< cache_aware: key -> replicas believed to cache it
  static inline const char* name = "troupe.router";
};

using router_ptr = router_actor::stateful_pointer<router_state>;

/// The most prompt blocks the router hashes for one request (32k tokens at block size 16):
/// bounds the work per request; longer prompts are matched on this prefix.
constexpr size_t max_route_blocks = 2048;

bool eligible(const router_state& st, size_t i) { return st.ready[i] && !st.draining[i]; }

/// The ready, not draining replica with the fewest requests in flight (the lowest index of
/// equals), or -1.
int least_loaded(const router_state& st) {
  int best = -1;
  for (size_t i = 0; i < st.replicas.size(); ++i)
    if (eligible(st, i) && (best < 0 || st.load[i] < st.load[static_cast<size_t>(best)])) best = static_cast<int>(i);
  return best;
}

/// Where a request goes and why (the reason label of troupe_router_routed_total).
struct choice {
  int replica = -1;
  const char* reason = "least_loaded";
  int matched_tokens = 0;  ///< prompt tokens the index expects cached there (reason "cache")
};

/// The prefix keys of a request's tokens as its replica will hold them: the prompt, then
/// the tokens already emitted (a resumed request).
std::vector<uint64_t> keys_of(const router_state& st, const generate_request& req) {
  if (req.emitted.empty()) return prefix_block_hashes(req.prompt, st.routing.block_size, max_route_blocks);
  std::vector<int32_t> all = req.prompt;
  all.insert(all.end(), req.emitted.begin(), req.emitted.end());
  return prefix_block_hashes(all, st.routing.block_size, max_route_blocks);
}

/// cache_aware: the eligible replica holding the longest prefix of `keys` (ties: the less
/// loaded), unless it is far busier than the least loaded replica (then that one: reason
/// "balance"); no prefix held anywhere: the least loaded. least_loaded: the least loaded.
choice choose(router_state& st, const std::vector<uint64_t>& keys) {
  choice c;
  c.replica = least_loaded(st);
  if (c.replica < 0 || !st.cache_aware || keys.empty()) return c;
  const auto depth = st.index.match(keys, st.replicas.size());
  int best = -1;
  for (size_t i = 0; i < st.replicas.size(); ++i) {
    if (!eligible(st, i) || depth[i] == 0) continue;
    const auto b = static_cast<size_t>(best);
    if (best < 0 || depth[i] > depth[b] || (depth[i] == depth[b] && st.load[i] < st.load[b])) best = static_cast<int>(i);
  }
  if (best < 0) return c;
  const int min_load = st.load[static_cast<size_t>(c.replica)];
  const int load = st.load[static_cast<size_t>(best)];
  const auto& p = st.routing.policy;
  if (load > min_load + p.balance_abs_threshold && load > min_load * p.balance_rel_threshold) {
    c.reason = "balance";
    return c;
  }
  c.replica = best;
  c.reason = "cache";
  c.matched_tokens = depth[static_cast<size_t>(best)] * st.routing.block_size;
  return c;
}

/// Counts a routing decision and, cache_aware, records that `c.replica` will cache `keys`.
void record_choice(router_state& st, const choice& c, const std::vector<uint64_t>& keys) {
  if (st.cache_aware)
    for (uint64_t k : keys) st.index.add(k, c.replica);
  if (!st.routing.metrics) return;
  auto& m = *st.routing.metrics;
  const std::string r = std::to_string(c.replica);
  m.router_routed.with({r, c.reason}).inc();
  if (c.matched_tokens > 0) m.router_matched_tokens.with({r}).inc(double(c.matched_tokens));
  m.router_index_keys.set(double(st.index.size()));
}

/// Applies a replica's prefix-cache changes to the index (cache_aware only).
void on_prefixes(router_state& st, const prefix_summary& s) {
  if (!st.cache_aware || s.replica < 0 || static_cast<size_t>(s.replica) >= st.replicas.size()) return;
  if (s.reset) st.index.forget(s.replica);
  for (uint64_t k : s.removed) st.index.remove(k, s.replica);
  for (uint64_t k : s.added) st.index.add(k, s.replica);
  if (st.routing.metrics) st.routing.metrics->router_index_keys.set(double(st.index.size()));
}

/// `r` no longer counts against the admission limits (it ended or was cancelled).
void release(router_state& st, route& r) {
  if (!r.admitted) return;
  r.admitted = false;
  st.admitted_requests--;
  st.admitted_tokens -= r.tokens;
}

/// Sends `client` the last event of its request `client_id`.
void send_end(const caf::actor& client, uint64_t client_id, const std::string& reason, const std::string& why = "") {
  token_msg m;
  m.request = client_id;
  m.finished = true;
  m.finish_reason = reason;
  m.error = why;
  caf::anon_send(client, token_atom::value, std::move(m));
}

void fail_request(router_ptr self, uint64_t id, const std::string& why) {
  auto it = self->state.routes.find(id);
  if (it == self->state.routes.end()) return;
  release(self->state, it->second);
  send_end(it->second.client, it->second.client_id, "error", why);
  self->state.routes.erase(it);
}

void dispatch_waiting(router_ptr self) {
  auto& st = self->state;
  while (!st.waiting.empty()) {
    if (least_loaded(st) < 0) return;
    const uint64_t id = st.waiting.front();
    st.waiting.pop_front();
    auto it = st.routes.find(id);
    if (it == st.routes.end()) continue;
    const auto keys = st.cache_aware ? keys_of(st, it->second.request) : std::vector<uint64_t>{};
    const choice c = choose(st, keys);
    record_choice(st, c, keys);
    const int r = c.replica;
    it->second.replica = r;
    st.load[static_cast<size_t>(r)]++;
    if (it->second.retries > 0 || it->second.drain_moves > 0)
      logger()->info("router: request {} resumes on replica {} after {} tokens", it->second.client_id, r,
                     it->second.emitted.size());
    self->send(st.replicas[static_cast<size_t>(r)], generate_atom::value, id, it->second.request,
               caf::actor_cast<caf::actor>(self));
  }
}

void check_drains(router_ptr self);

void on_token(router_ptr self, token_msg& m) {
  auto& st = self->state;
  auto it = st.routes.find(m.request);
  if (it == st.routes.end()) return;
  auto& r = it->second;
  if (m.token >= 0) r.emitted.push_back(m.token);
  const bool finished = m.finished;
  m.request = r.client_id;
  caf::anon_send(r.client, token_atom::value, std::move(m));
  if (finished) {
    if (r.replica >= 0) st.load[static_cast<size_t>(r.replica)]--;
    release(st, r);
    st.routes.erase(it);
    if (!st.drains.empty()) check_drains(self);
  }
}

/// Replica `index` failed (or `drain`: its drain deadline passed): each of its requests
/// gets a new router id (so late events of the old one are dropped), is cancelled there (a
/// rebuilt replica does not continue it) and waits, ahead of new requests, for a ready
/// replica to resume it after the tokens its client already has. Its wait for that
/// replica starts now (request_wait bounds the wait, not the time it ran). A request that
/// ran out of retries ends with an error (a drain move is not a retry); a cancelled one
/// ends here. Returns the requests moved.
int migrate(router_ptr self, int index, bool drain = false) {
  auto& st = self->state;
  std::vector<uint64_t> moved;
  for (const auto& [id, r] : st.routes)
    if (r.replica == index) moved.push_back(id);
  std::sort(moved.begin(), moved.end());
  std::vector<uint64_t> requeue;
  for (uint64_t old_id : moved) {
    auto node = st.routes.extract(old_id);
    route& r = node.mapped();
    self->send(st.replicas[static_cast<size_t>(index)], cancel_atom::value, old_id);
    st.load[static_cast<size_t>(index)]--;
    if (r.cancelled) {  // its client gave it up (or went away) before the replica confirmed
      release(st, r);
      send_end(r.client, r.client_id, "cancelled");
      continue;
    }
    const uint64_t id = st.next_id++;
    r.replica = -1;
    (drain ? r.drain_moves : r.retries)++;
    r.since = clock_type::now();
    r.request.emitted = r.emitted;
    if (drain)
      logger()->info("router: request {} moves off draining replica {} after {} tokens", r.client_id, index,
                     r.emitted.size());
    else
      logger()->info("router: request {} moves off failed replica {} after {} tokens (retry {} of {})",
                     r.client_id, index, r.emitted.size(), r.retries, st.request_retries);
    const bool give_up = !drain && r.retries > st.request_retries;
    const int retries = r.retries;
    st.routes.emplace(id, std::move(r));
    if (give_up)
      fail_request(self, id, "replica " + std::to_string(index) + " failed and the request already moved " +
                                 std::to_string(retries - 1) + " times (fault_tolerance.request_retries = " +
                                 std::to_string(st.request_retries) + ")");
    else
      requeue.push_back(id);
  }
  st.waiting.insert(st.waiting.begin(), requeue.begin(), requeue.end());
  return static_cast<int>(moved.size());
}

/// Answers the drains whose replicas hold no request; first moves the requests of those
/// whose deadline passed.
void check_drains(router_ptr self) {
  auto& st = self->state;
  const auto now = clock_type::now();
  for (auto& d : st.drains)
    if (!d.deadline_passed && now >= d.deadline) {
      d.deadline_passed = true;
      for (int32_t r : d.replicas) {
        if (st.load[static_cast<size_t>(r)] == 0) continue;
        logger()->info("router: drain deadline of replica {} passed with {} request(s) running", r,
                       st.load[static_cast<size_t>(r)]);
        d.moved += migrate(self, r, true);
      }
      dispatch_waiting(self);
    }
  for (auto it = st.drains.begin(); it != st.drains.end();) {
    const bool idle = std::all_of(it->replicas.begin(), it->replicas.end(),
                                  [&](int32_t r) { return st.load[static_cast<size_t>(r)] == 0; });
    if (!idle) {
      ++it;
      continue;
    }
    logger()->info("router: drained replica(s) hold no request ({} moved)", it->moved);
    it->promise.deliver(it->moved);
    it = st.drains.erase(it);
  }
}

/// Whether the current message comes from the head's own actors (replicas, the replica
/// manager); logs the refusal of `what` otherwise. Token events, prefix summaries and replica
/// states from anyone else would reach clients or move their requests.
bool from_head(router_ptr self, const char* what) {
  if (sent_from(self->current_sender(), self->node())) return true;
  logger()->warn("router: refused {} from {}: only the head's own actors may send it", what,
                 describe_sender(self->current_sender()));
  return false;
}

/// Starts draining `replicas` (answered by check_drains once they hold no request).
caf::result<int32_t> start_drain(router_ptr self, const std::vector<int32_t>& replicas, caf::timespan deadline) {
  auto& st = self->state;
  if (!sent_from(self->current_sender(), self->node())) {
    const auto who = describe_sender(self->current_sender());
    logger()->warn("router: refused a drain from {}: only the head's own actors may drain replicas", who);
    return caf::make_error(caf::sec::invalid_argument,
                           "not allowed: only the head's own actors may drain replicas (the sender is " + who + ")");
  }
  for (int32_t r : replicas)
    if (r < 0 || static_cast<size_t>(r) >= st.replicas.size())
      return caf::make_error(caf::sec::invalid_argument, "drain: no replica " + std::to_string(r) + " (the router has " +
                                                             std::to_string(st.replicas.size()) + ")");
  for (int32_t r : replicas) {
    st.draining[static_cast<size_t>(r)] = true;
    logger()->info("router: replica {} draining: no new requests, {} running", r, st.load[static_cast<size_t>(r)]);
  }
  auto rp = self->make_response_promise<int32_t>();
  st.drains.push_back(drain_wait{replicas, clock_type::now() + deadline, rp, 0, false});
  check_drains(self);
  return rp;
}

/// Gives request `id` up: a waiting one ends here (its client gets "cancelled" when
/// `notify`), a running one at its replica (which answers with a "cancelled" event that
/// on_token relays). Either way it stops counting against the limits now, as the HTTP
/// gateway's admission does when its client goes away.
void cancel_route(router_ptr self, uint64_t id, bool notify) {
  auto& st = self->state;
  auto it = st.routes.find(id);
  if (it == st.routes.end()) return;
  route& r = it->second;
  release(st, r);
  if (r.replica >= 0) {
    if (!r.cancelled) self->send(st.replicas[static_cast<size_t>(r.replica)], cancel_atom::value, id);
    r.cancelled = true;
    return;
  }
  if (notify) send_end(r.client, r.client_id, "cancelled");
  st.waiting.erase(std::remove(st.waiting.begin(), st.waiting.end(), id), st.waiting.end());
  st.routes.erase(it);
}

/// The client's request `client_id` (see cancel_route).
void cancel(router_ptr self, uint64_t client_id, const caf::actor& client) {
  for (const auto& [id, r] : self->state.routes)
    if (r.client_id == client_id && r.client == client) return cancel_route(self, id, true);
}

/// A client actor went away (it died, or its node was lost): its requests are cancelled,
/// waiting or running, so the replicas stop decoding them and free their KV blocks.
void on_client_down(router_ptr self, const caf::down_msg& dm) {
  auto& st = self->state;
  st.watched.erase(dm.source);
  std::vector<uint64_t> ids;
  for (const auto& [id, r] : st.routes)
    if (r.client.address() == dm.source) ids.push_back(id);
  if (ids.empty()) return;
  logger()->info("router: a client went away ({}): cancelling its {} request(s)", self->system().render(dm.reason),
                 ids.size());
  for (uint64_t id : ids) cancel_route(self, id, false);
}

/// Admits a client's request within the limits (and watches its client) or ends it at
/// once with an error naming them.
void on_generate(router_ptr self, uint64_t client_id, generate_request& req, const caf::actor& client) {
  auto& st = self->state;
  const int64_t tokens = static_cast<int64_t>(req.prompt.size()) + std::max(0, req.params.max_tokens);
  const auto& lim = st.limits;
  if (tokens > lim.max_tokens)
    return send_end(client, client_id, "error",
                    "the request needs " + std::to_string(tokens) +
                        " tokens (prompt + max_tokens), more than the cluster admits (server.max_queue_tokens " +
                        std::to_string(lim.max_tokens) + ")");
  if (st.admitted_requests + 1 > lim.max_requests || st.admitted_tokens + tokens > lim.max_tokens)
    return send_end(client, client_id, "error",
                    "the cluster is at capacity (server.max_queue_requests " + std::to_string(lim.max_requests) +
                        ", server.max_queue_tokens " + std::to_string(lim.max_tokens) + "; " +
                        std::to_string(st.admitted_requests) + " requests and " +
                        std::to_string(st.admitted_tokens) + " tokens admitted): retry later");
  if (client && st.watched.insert(client.address()).second) self->monitor(client);
  const uint64_t id = st.next_id++;
  route r{client, client_id, -1, std::move(req), {}, clock_type::now(), 0};
  r.tokens = tokens;
  st.admitted_requests++;
  st.admitted_tokens += tokens;
  st.routes.emplace(id, std::move(r));
  st.waiting.push_back(id);
  dispatch_waiting(self);
}

/// Ends every waiting request whose wait reached request_wait, wherever it is in the
/// queue (a request moved off a failed replica waits ahead of older ones).
void expire_waiting(router_ptr self) {
  auto& st = self->state;
  const auto now = clock_type::now();
  std::deque<uint64_t> kept;
  std::vector<uint64_t> expired;
  for (uint64_t id : st.waiting) {
    auto it = st.routes.find(id);
    if (it == st.routes.end()) continue;
    if (now - it->second.since >= st.request_wait)
      expired.push_back(id);
    else
      kept.push_back(id);
  }
  st.waiting.swap(kept);
  for (uint64_t id : expired)
    fail_request(self, id, "no replica became ready within " + std::to_string(st.request_wait.count()) +
                               " ms (fault_tolerance.request_wait)");
}

router_actor::behavior_type router_impl(router_ptr self, std::vector<replica_actor> replicas,
                                        std::chrono::milliseconds request_wait, int request_retries,
                                        router_limits limits, router_routing routing) {
  auto& st = self->state;
  st.routing = std::move(routing);
  st.cache_aware = st.routing.policy.policy == "cache_aware";
  st.index = prefix_index(static_cast<size_t>(std::max(1, st.routing.policy.index_capacity)));
  st.replicas = std::move(replicas);
  st.ready.assign(st.replicas.size(), false);
  st.draining.assign(st.replicas.size(), false);
  st.load.assign(st.replicas.size(), 0);
  st.request_wait = request_wait;
  st.request_retries = request_retries;
  st.limits = limits;
  self->set_down_handler([self](caf::down_msg& dm) { on_client_down(self, dm); });
  self->send(self, sweep_atom::value);
  // cache_aware: every replica sends this router its prefix-cache summaries.
  if (st.cache_aware)
    for (auto& r : st.replicas) self->send(r, subscribe_atom::value, caf::actor_cast<caf::actor>(self));
  // Replicas that became ready before anyone told this router: ask them.
  for (size_t i = 0; i < st.replicas.size(); ++i)
    self->request(st.replicas[i], std::chrono::seconds(5), status_atom::value)
        .then([self, i](const replica_status& s) {
          if (!s.ready) return;
          self->state.ready[i] = true;
          dispatch_waiting(self);
        }, [](caf::error&) {});
  return {
      [self](generate_atom, uint64_t client_id, generate_request& req, const caf::actor& client) {
        on_generate(self, client_id, req, client);
      },
      [self](token_atom, token_msg& m) {
        if (from_head(self, "a token event")) on_token(self, m);
      },
      [self](prefixes_atom, const prefix_summary& s) {
        if (from_head(self, "a prefix-cache summary")) on_prefixes(self->state, s);
      },
      [self](cancel_atom, uint64_t client_id, const caf::actor& client) { cancel(self, client_id, client); },
      [self](status_atom) {
        const auto& st = self->state;
        router_status s;
        s.replicas = static_cast<int32_t>(st.replicas.size());
        for (size_t i = 0; i < st.ready.size(); ++i) s.ready += st.ready[i] && !st.draining[i] ? 1 : 0;
        s.waiting = static_cast<int32_t>(st.waiting.size());
        s.running = static_cast<int32_t>(st.routes.size()) - s.waiting;
        return s;
      },
      [self](ready_atom, int32_t index, bool ok) {
        auto& st = self->state;
        if (!from_head(self, "a replica state")) return;
        if (index < 0 || static_cast<size_t>(index) >= st.ready.size()) return;
        st.ready[static_cast<size_t>(index)] = ok;
        st.draining[static_cast<size_t>(index)] = false;  // failed, or rebuilt: a drain ends here
        if (!ok) st.index.forget(index);  // its KV cache is gone with its shards
        if (!ok) migrate(self, index);
        dispatch_waiting(self);
        if (!st.drains.empty()) check_drains(self);
      },
      [self](hold_atom, int32_t index) {
        auto& st = self->state;
        if (!from_head(self, "a replica hold")) return;
        if (index < 0 || static_cast<size_t>(index) >= st.ready.size()) return;
        st.ready[static_cast<size_t>(index)] = false;
        logger()->info("router: replica {} recovers stage-locally; its requests stay there", index);
      },
      [self](sweep_atom) {
        expire_waiting(self);
        if (!self->state.drains.empty()) check_drains(self);
        self->delayed_send(self, std::chrono::milliseconds(100), sweep_atom::value);
      },
      [self](drain_atom, const std::vector<int32_t>& replicas, caf::timespan deadline) {
        return start_drain(self, replicas, deadline);
      },
  };
}

}  // namespace

router_routing routing_of(const cluster_config& c, std::shared_ptr<troupe_metrics> metrics) {
  router_routing r;
  r.policy = c.router;
  r.block_size = c.scheduler.block_size;
  r.metrics = std::move(metrics);
  if (r.policy.policy == "cache_aware" && !c.scheduler.prefix_caching) {
    logger()->info("router: scheduler.prefix_caching is off: routing least_loaded (router.policy cache_aware "
                   "needs the replicas' prefix caches)");
    r.policy.policy = "least_loaded";
  }
  return r;
}

router_actor spawn_router(caf::actor_system& sys, std::vector<replica_actor> replicas,
                          std::chrono::milliseconds request_wait, int request_retries, router_limits limits,
                          router_routing routing) {
  return sys.spawn(router_impl, std::move(replicas), request_wait, request_retries, limits, std::move(routing));
}

}  // namespace troupe
