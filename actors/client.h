#pragma once
/// troupe's embedded client API: a C++ program with its own CAF actor system connects to
/// a local or remote troupe cluster (the head that `troupe serve` runs), submits
/// requests and receives each request's tokens as messages. `blocking_client` wraps it
/// for programs that do not use actors.
///
/// Actor API: `connect_to_cluster` finds the cluster's router; `spawn_client` puts a
/// client actor in front of it. Send the client actor
/// `(generate_atom, uint64_t id, generate_request, caf::actor receiver)`; the receiver
/// gets `(token_atom, token_msg)` events with `request == id`, the last one with
/// `finished == true`. `(cancel_atom, id, receiver)` gives a request up. When a receiver
/// terminates, its unfinished requests are cancelled (their KV blocks are freed).
#include <caf/all.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "actors/messages.h"
#include "actors/serving/router.h"
#include "runtime/model/model.h"

namespace troupe {

/// Where the cluster is and how long to wait for it.
struct client_options {
  std::string host = "127.0.0.1";  ///< the head's host (head.host of the cluster file)
  uint16_t port = 7100;            ///< the head's port (head.port)
  /// How long to retry reaching the head (it may be starting).
  std::chrono::milliseconds connect_timeout{std::chrono::seconds(5)};
  /// How long to wait, once connected, for the cluster to serve (its replicas loading).
  std::chrono::milliseconds serve_timeout{std::chrono::seconds(60)};
  /// Longest silence from the cluster while a request runs before giving up.
  std::chrono::milliseconds idle_timeout{std::chrono::seconds(60)};
  /// The cluster's model (path or "default"), for the tokenizer and chat template.
  std::string model = "default";
  /// Following the head: when the cluster's router goes down (its head process died), a
  /// client actor spawned with these options reconnects to host:port for up to this long
  /// (a restarted or standby head) and re-submits every unfinished request with the tokens
  /// its receiver already has, so the stream goes on with no gap or duplicate. 0 = off:
  /// every unfinished request ends with an error.
  std::chrono::milliseconds failover{std::chrono::seconds(30)};
  /// The cluster's other heads (several heads, `heads:`): connecting and following try
  /// host:port and these in turn, each attempt bounded, until the head that leads gives a
  /// router. Empty: host:port only.
  std::vector<std::pair<std::string, uint16_t>> other_heads;
  /// A `troupe gateway` (its index in the file's `gateways:`): a following client actor
  /// tells the head it serves through every second (GET /admin/nodes shows when each
  /// gateway was last heard). -1: not a gateway.
  int32_t gateway_index = -1;
};

/// Connects to the head at `o.host:o.port` (retrying up to `o.connect_timeout`) and
/// returns the cluster's router once it serves (waiting up to `o.serve_timeout`); with
/// `o.other_heads`, to whichever head leads, for up to both timeouts together; over mutual
/// TLS when `sys` was configured with use_tls (actors/link_security.h). Throws
/// std::runtime_error naming the address and the reason.
caf::actor connect_to_cluster(caf::actor_system& sys, const client_options& o);

/// A router and the term of the head that gave it (0: a single head).
struct leader_router {
  caf::actor router;
  head_term term;
  std::string head;       ///< "host:port" of the head that gave it (the leader)
  caf::actor supervisor;  ///< that head's supervisor (supervisor_actor)
};

/// connect_to_cluster that also asks each head its term (`lease_atom`) and refuses a head
/// whose term is older than `at_least` (a deposed leader that woke up: "client: refused the
/// router of HOST:PORT: its term 1 is older than term 2 this client has used"), going on
/// with the other heads until the timeouts end.
leader_router connect_to_leader(caf::actor_system& sys, const client_options& o, head_term at_least = {});

/// The client actor's typed interface.
using client_actor = caf::typed_actor<
    /// Submit request `id`; its events go to the receiver.
    caf::reacts_to<generate_atom, uint64_t, generate_request, caf::actor>,
    /// Give request `id` of the receiver up.
    caf::reacts_to<cancel_atom, uint64_t, caf::actor>,
    /// Events from the router (internal: relayed to the receivers).
    caf::reacts_to<token_atom, token_msg>,
    /// Internal (failover): the new router, its head's term and supervisor, or null and why
    /// no head could be reached. A router of an older term than one the client used is refused.
    caf::reacts_to<router_atom, caf::actor, head_term, std::string, caf::actor>,
    /// Internal timer of a gateway's client (client_options::gateway_index): tells the head
    /// that gave the router that this gateway serves through it.
    caf::reacts_to<sweep_atom>,
    /// The current router's readiness and load (an error while it follows the head to a
    /// new router): what an HTTP gateway apart from the head shows on /ready.
    caf::replies_to<status_atom>::with<router_status>>;

/// Spawns a client actor in front of `router` (from connect_to_cluster, or
/// connect_to_leader with its `term`); with `follow`, it follows the head across a loss of
/// its router (client_options::failover). Term fencing: it keeps the highest term of the
/// routers it used and never follows a head of an older term (a woken deposed leader
/// cannot take its requests back); it waits for the current leader instead. `supervisor`:
/// the head that gave the router, which a gateway's client tells it is alive.
client_actor spawn_client(caf::actor_system& sys, caf::actor router,
                          std::optional<client_options> follow = std::nullopt, head_term term = {},
                          caf::actor supervisor = {});

/// One finished request.
struct client_result {
  std::vector<int32_t> prompt_tokens;  ///< the prompt as the model saw it
  std::vector<int32_t> tokens;         ///< generated token ids
  std::string text;                    ///< generated text
  std::string finish_reason;           ///< "stop", "length", "cancelled"
};

/// A blocking client with an actor system of its own. Thread-compatible: one call at a
/// time per object. Errors (cluster unreachable, request refused, cluster silent past
/// the idle timeout) are thrown as std::runtime_error.
class blocking_client {
 public:
  /// Connects to the cluster (see connect_to_cluster) and loads the model's tokenizer.
  explicit blocking_client(client_options o);
  ~blocking_client();
  blocking_client(const blocking_client&) = delete;
  blocking_client& operator=(const blocking_client&) = delete;

  /// Generates for `prompt` (wrapped in the model's chat template when `chat`);
  /// `on_token` sees every event as it arrives.
  client_result generate(const std::string& prompt, const sampling_params& p, bool chat = false,
                         const std::function<void(const token_msg&)>& on_token = {});
  /// Generates for every prompt at once (the cluster batches them); results in order.
  std::vector<client_result> generate_all(const std::vector<std::vector<int32_t>>& prompts,
                                          const sampling_params& p);
  /// The tokenizer's encoding of `prompt` (chat template applied when `chat`).
  std::vector<int32_t> encode(const std::string& prompt, bool chat) const;

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace troupe
