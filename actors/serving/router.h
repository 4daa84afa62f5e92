#pragma once
/// The router: the single front of a cluster's replicas. It picks a replica for each
/// request (the ready one with the fewest requests in flight), relays the replica's
/// token events to the request's client, and records each request's progress (tokens
/// already sent). When a replica fails, its requests move at once to another ready
/// replica (or wait for the first one ready, the rebuilt one included) and resume after
/// the tokens already sent, at most fault_tolerance.request_retries times each.
/// Requests that wait for a ready replica longer than fault_tolerance.request_wait get a
/// clean error, each after its own wait (the oldest first, whatever waits ahead of it).
/// A draining replica (graceful drain) gets no new request and does not count as ready.
///
/// Routing (router.policy): least_loaded sends a request to the ready replica with the
/// fewest requests in flight. cache_aware (SGLang's cache-aware router, Dynamo's KV
/// router) sends it to the ready replica whose prefix cache holds the longest prefix of
/// its tokens, as far as the router's approximate index knows (prefix_index.h: fed by the
/// replicas' prefix_summary deltas and by the router's own decisions); ties and unknown
/// prefixes go to the least loaded. A replica far busier than the least loaded one (more
/// than router.balance_abs_threshold requests beyond it and more than
/// router.balance_rel_threshold times its requests) loses its claim to the least loaded.
///
/// Admission: the router holds at most router_limits' requests and tokens (the HTTP
/// gateway's server.max_queue_requests and max_queue_tokens) from all its clients
/// together; a request beyond them ends at once with an error naming the limits. The
/// router monitors every client actor: when one goes away (its process died, its node was
/// lost) its requests are cancelled, waiting or running, so the replicas free their KV.
#include <caf/all.hpp>

#include "actors/messages.h"
#include "actors/serving/replica.h"

namespace troupe {

/// The router's typed interface.
using router_actor = caf::typed_actor<
    /// A client's request `id` (the client's own numbering); events go to `client`.
    caf::reacts_to<generate_atom, uint64_t, generate_request, caf::actor>,
    /// The client `client` gives up its request `id` (it went away): the replica frees
    /// its KV blocks; the client gets a last event "cancelled" unless it had finished.
    caf::reacts_to<cancel_atom, uint64_t, caf::actor>,
    /// Readiness and load, for /ready and admission control.
    caf::replies_to<status_atom>::with<router_status>,
    /// Token events from a replica (addressed with the router's request id).
    caf::reacts_to<token_atom, token_msg>,
    /// A replica's prefix-cache changes (cache_aware routing).
    caf::reacts_to<prefixes_atom, prefix_summary>,
    /// A replica became ready (true) or failed (false).
    caf::reacts_to<ready_atom, int32_t, bool>,
    /// A replica recovers stage-locally: no new request goes there, its requests stay
    /// (they move only if it reports failed later).
    caf::reacts_to<hold_atom, int32_t>,
    /// Internal timer: fail requests that waited too long for a replica.
    caf::reacts_to<sweep_atom>,
    /// Graceful drain: the replicas get no new request from now on (until their next
    /// ready/failed transition); the answer (the number of requests moved) comes once they
    /// hold none. Requests still running at the deadline (a duration) move to other
    /// replicas like a failure's, without counting against request_retries.
    caf::replies_to<drain_atom, std::vector<int32_t>, caf::timespan>::with<int32_t>>;

/// What the router admits at once over all its clients (unfinished requests and their
/// prompt + max_tokens); the defaults are server_section's.
struct router_limits {
  int max_requests = server_section{}.max_queue_requests;    ///< server.max_queue_requests
  int64_t max_tokens = server_section{}.max_queue_tokens;    ///< server.max_queue_tokens
};

/// The router's limits from the cluster file's `server:` section.
inline router_limits limits_of(const server_section& s) { return {s.max_queue_requests, s.max_queue_tokens}; }

/// How the router picks a replica (the cluster file's `router:` section and the replicas'
/// scheduler.block_size, which the router's prefix keys must use).
struct router_routing {
  router_section policy;      ///< policy, balance thresholds, index capacity
  int block_size = scheduler_section{}.block_size;  ///< tokens per prefix-cache block
  /// Where to count routing decisions (troupe_router_*; null = nowhere).
  std::shared_ptr<troupe_metrics> metrics;
};

/// The routing of a cluster file: its router section and scheduler.block_size. A cluster
/// without prefix caching (scheduler.prefix_caching false) routes least_loaded.
router_routing routing_of(const cluster_config& c, std::shared_ptr<troupe_metrics> metrics = nullptr);

/// Spawns a router over `replicas` (index i = replica i), none ready yet; a request moves
/// off a failed replica at most `request_retries` times; `limits` bound what it admits;
/// `routing` says how it picks a replica (cache_aware: it subscribes to the replicas'
/// prefix summaries).
router_actor spawn_router(caf::actor_system& sys, std::vector<replica_actor> replicas,
                          std::chrono::milliseconds request_wait, int request_retries = 3,
                          router_limits limits = {}, router_routing routing = {});

}  // namespace troupe
