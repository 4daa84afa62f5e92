#pragma once
/// Every message type and atom of troupe's control plane, in one place. Each struct has
/// an `inspect` (CAF 0.17 serialization); `add_message_types` registers them all with an
/// actor_system_config so they can cross process boundaries.
#include <caf/all.hpp>
#include <cstdint>
#include <string>
#include <vector>

#include "actors/leadership/lease_reply.h"
#include "runtime/engine/shard_worker.h"

namespace troupe {

// -- atoms (at most 10 characters each) ---------------------------------------------------

/// A node agent announces itself to the supervisor.
using register_atom = caf::atom_constant<caf::atom("register")>;
/// A node agent leaves the cluster on purpose (SIGTERM, drain finished).
using unregister_atom = caf::atom_constant<caf::atom("unregister")>;
/// Liveness beacon: node agent -> supervisor, and the agent's own heartbeat timer.
using heartbeat_atom = caf::atom_constant<caf::atom("heartbeat")>;
/// Asks an actor for its state (supervisor: cluster_status, node agent: node_info).
using status_atom = caf::atom_constant<caf::atom("status")>;
/// Orderly shutdown: supervisor -> node agents, head main -> supervisor.
using stop_atom = caf::atom_constant<caf::atom("stop")>;
/// Head main -> supervisor: start the local node processes (after publishing).
using start_atom = caf::atom_constant<caf::atom("start")>;
/// Node main -> node agent: here is the (connected) supervisor, register with it.
using attach_atom = caf::atom_constant<caf::atom("attach")>;
/// The supervisor's periodic timer: reap children, check heartbeat deadlines.
using sweep_atom = caf::atom_constant<caf::atom("sweep")>;
/// A `troupe gateway`'s client -> the supervisor of its head: it serves through it.
using gateway_atom = caf::atom_constant<caf::atom("gateway")>;
/// Head -> supervisor: the registered node agents (for placing shards).
using agents_atom = caf::atom_constant<caf::atom("agents")>;
/// Head main -> supervisor: the router (once serving); client -> supervisor: ask for it.
using router_atom = caf::atom_constant<caf::atom("router")>;
/// Replica -> node agent: spawn a shard for this shard_spec.
using spawn_shard_atom = caf::atom_constant<caf::atom("spawnshard")>;
/// Replica -> shard: your communicators' addresses (answered once loaded).
using addresses_atom = caf::atom_constant<caf::atom("addresses")>;
/// Replica -> shard: connect to your peers.
using connect_atom = caf::atom_constant<caf::atom("connect")>;
/// Replica -> shard: run one step.
using step_atom = caf::atom_constant<caf::atom("step")>;
/// The node agent's timer: the grace for a lost head's shards ended.
using head_grace_atom = caf::atom_constant<caf::atom("headgrace")>;
/// Node agent -> shard: a new head adopts this loaded shard (fresh endpoints, no KV cache).
using adopt_atom = caf::atom_constant<caf::atom("adopt")>;
/// Replica -> shard: a peer is gone; fail blocked transfers now.
using abort_atom = caf::atom_constant<caf::atom("abort")>;
/// Client -> router / replica: generate for a request; router -> client: its events.
using generate_atom = caf::atom_constant<caf::atom("generate")>;
/// Replica -> router -> client: token events of one request.
using token_atom = caf::atom_constant<caf::atom("token")>;

// -- membership ---------------------------------------------------------------------------

/// Where a node is in its life as the supervisor sees it.
enum class node_state : uint8_t {
  starting,    ///< expected (or its process launched), not registered yet
  registered,  ///< registered and heartbeating
  lost,        ///< detected down and not being restarted (given up, or not ours to restart)
  restarting,  ///< detected down; a new process was launched and has not registered yet
  stopped,     ///< left on purpose (unregistered, or stopped by the head)
};

/// "starting", "registered", ...
inline std::string to_string(node_state s) {
  switch (s) {
    case node_state::starting: return "starting";
    case node_state::registered: return "registered";
    case node_state::lost: return "lost";
    case node_state::restarting: return "restarting";
    case node_state::stopped: return "stopped";
  }
  return "node_state(" + std::to_string(static_cast<int>(s)) + ")";
}

/// What a node agent tells the supervisor about itself when it registers.
struct node_info {
  std::string name;                  ///< the node's name in the cluster file
  int32_t pid = 0;                   ///< process id on its host
  std::string host;                  ///< host it is reachable at (advertised)
  uint16_t port = 0;                 ///< port its node agent is published on
  std::vector<std::string> devices;  ///< "cpu", "cuda:0", ...
};

/// `inspect` for node_info.
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, node_info& x) {
  return f(caf::meta::type_name("troupe::node_info"), x.name, x.pid, x.host, x.port, x.devices);
}

/// One row of the supervisor's membership table.
struct node_status {
  std::string name;               ///< the node's name in the cluster file
  node_state state = node_state::starting;  ///< see node_state
  int32_t pid = 0;                ///< current process id (0 = none known)
  bool launched = false;          ///< the head started (and may restart) this process
  int32_t restarts = 0;           ///< processes launched after the first
  int64_t detect_ms = -1;         ///< last loss: time from the last heartbeat to detection
  int64_t recover_ms = -1;        ///< last loss: time from detection to re-registration
  int64_t lost_at_unix_ms = -1;   ///< last loss: wall-clock detection time (ms since epoch)
  std::string last_error;         ///< why it was last lost ("" = never)
};

/// `inspect` for node_status.
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, node_status& x) {
  return f(caf::meta::type_name("troupe::node_status"), x.name, x.state, x.pid, x.launched,
           x.restarts, x.detect_ms, x.recover_ms, x.lost_at_unix_ms, x.last_error);
}

/// The answer to `status_atom` at the supervisor: every node, in cluster-file order.
struct cluster_status {
  std::vector<node_status> nodes;  ///< one per entry of `nodes:`
  bool stopping = false;           ///< the head is shutting down
};

/// `inspect` for cluster_status.
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, cluster_status& x) {
  return f(caf::meta::type_name("troupe::cluster_status"), x.nodes, x.stopping);
}

/// The row of node `name`, or nullptr.
inline const node_status* find_node(const cluster_status& s, const std::string& name) {
  for (const auto& n : s.nodes)
    if (n.name == name) return &n;
  return nullptr;
}

/// One line for logs: "n0=registered(pid 12) n1=restarting(pid 15, restarts 1)".
inline std::string format_status_line(const cluster_status& s) {
  std::string line = s.stopping ? "[stopping]" : "";
  for (const auto& n : s.nodes) {
    if (!line.empty()) line += ' ';
    line += n.name + '=' + to_string(n.state) + "(pid " + std::to_string(n.pid);
    if (n.restarts > 0) line += ", restarts " + std::to_string(n.restarts);
    line += ')';
  }
  return line;
}

// -- shards and steps (runtime types on the wire) ------------------------------------------

}  // namespace troupe

namespace troupe::parallel {

/// `inspect` for parallel::layer_range (beside the type, for argument-dependent lookup).
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, layer_range& x) {
  return f(caf::meta::type_name("troupe::layer_range"), x.begin, x.end);
}

}  // namespace troupe::parallel

namespace troupe {

/// `inspect` for context_params: every field (a field left out reaches a node process at
/// its default; tests/actors/test_messages.cpp round-trips each).
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, context_params& x) {
  return f(caf::meta::type_name("troupe::context_params"), x.n_blocks, x.block_size,
           x.max_batch_tokens, x.max_logit_rows, x.cuda_graphs, x.graph_warmup_context,
           x.keep_stage_inputs, x.time_steps, x.batch_invariant);
}

/// `inspect` for shard_spec.
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, shard_spec& x) {
  return f(caf::meta::type_name("troupe::shard_spec"), x.model_path, x.stage, x.n_stages, x.layers,
           x.tp_rank, x.tp_size, x.allow_uneven_heads, x.context, x.threads, x.timeout_ms, x.stage_timeout_ms,
           x.stall_timeout_ms, x.release_wait_ms, x.device, x.weight_type, x.random_weights, x.kv_fraction);
}

/// `inspect` for shard_addresses.
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, shard_addresses& x) {
  return f(caf::meta::type_name("troupe::shard_addresses"), x.tensor, x.prev, x.next, x.kv_blocks, x.kv_rows);
}

/// Where a shard's peers are: replica -> shard with connect_atom.
struct shard_peers {
  std::vector<std::vector<char>> tensor_group;  ///< every TP rank's address, by rank
  std::vector<char> prev;                       ///< the upstream link's other end
  std::vector<char> next;                       ///< the downstream link's other end
  int kv_blocks = 0;                            ///< KV blocks to allocate (0: the spec's count)
  /// Stage-local recovery: keep the KV cache of the context this shard already has (only the
  /// communicators are new); false: a fresh context.
  bool keep_kv = false;
};

/// `inspect` for shard_peers.
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, shard_peers& x) {
  return f(caf::meta::type_name("troupe::shard_peers"), x.tensor_group, x.prev, x.next, x.kv_blocks, x.keep_kv);
}

/// `inspect` for batch_input.
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, batch_input& x) {
  return f(caf::meta::type_name("troupe::batch_input"), x.tokens, x.positions, x.slots,
           x.query_start, x.context_len, x.block_tables, x.max_blocks, x.logit_rows);
}

/// `inspect` for sampling_params.
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, sampling_params& x) {
  return f(caf::meta::type_name("troupe::sampling_params"), x.temperature, x.top_p, x.top_k, x.min_p,
           x.repetition_penalty, x.frequency_penalty, x.presence_penalty, x.seed, x.logprobs,
           x.max_tokens, x.ignore_eos, x.stop, x.stop_token_ids);
}

/// `inspect` for sample_request.
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, sample_request& x) {
  return f(caf::meta::type_name("troupe::sample_request"), x.id, x.params, x.history, x.n_prompt,
           x.token_index);
}

/// `inspect` for step_request.
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, step_request& x) {
  return f(caf::meta::type_name("troupe::step_request"), x.step_id, x.batch, x.samples, x.replay_stage,
           x.ahead_of, x.ahead_rows, x.ahead_from, x.keep_tokens);
}

/// `inspect` for token_logprob.
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, token_logprob& x) {
  return f(caf::meta::type_name("troupe::token_logprob"), x.token, x.logprob);
}

/// `inspect` for sample_result.
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, sample_result& x) {
  return f(caf::meta::type_name("troupe::sample_result"), x.token, x.logprob, x.top);
}

/// `inspect` for step_output.
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, step_output& x) {
  return f(caf::meta::type_name("troupe::step_output"), x.step_id, x.samples, x.busy_us, x.comm_us,
           x.kv_rows);
}

/// A client's request: prompt token ids and how to sample.
struct generate_request {
  std::vector<int32_t> prompt;
  sampling_params params;
  /// [n] tokens the client already received (a migrated request resumes after them;
  /// empty for a new request). The replica replays them into its detokenizer and stop
  /// matcher, so the text already sent is not sent again.
  std::vector<int32_t> emitted{};
};

/// `inspect` for generate_request.
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, generate_request& x) {
  return f(caf::meta::type_name("troupe::generate_request"), x.prompt, x.params, x.emitted);
}

/// One token event of a request on the wire (token_event without recorded logits).
struct token_msg {
  uint64_t request = 0;          ///< the id the router gave the request
  int32_t token = -1;            ///< -1 when the event only reports the end
  std::string text;              ///< new text safe to show
  float logprob = 0.0f;
  std::vector<token_logprob> top;
  bool finished = false;
  std::string finish_reason;     ///< "stop", "length", "cancelled", "error" when finished
  std::string error;             ///< why, when finish_reason is "error"
};

/// `inspect` for token_msg.
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, token_msg& x) {
  return f(caf::meta::type_name("troupe::token_msg"), x.request, x.token, x.text, x.logprob, x.top,
           x.finished, x.finish_reason, x.error);
}

// -- replicas and the router -----------------------------------------------------------

/// The replica's state as the router and the supervisor see it.
struct replica_status {
  int32_t index = 0;
  bool ready = false;         ///< every shard loaded and connected
  int32_t requests = 0;       ///< running + waiting requests
  int64_t steps = 0;          ///< steps completed
  int32_t failures = 0;       ///< shard failures seen
  // Runtime overhead of decode steps (every row one new token), summed over those steps:
  int64_t decode_steps = 0;      ///< decode steps completed
  int64_t decode_wall_us = 0;    ///< step sent to the shards -> last shard's answer received
  int64_t decode_kernel_us = 0;  ///< per step: sum over stages of the slowest rank's compute
  int64_t decode_busy_us = 0;    ///< per step: the longest time any shard spent running it
  int64_t step_messages = 0;     ///< actor messages of those steps (a request and a reply per shard)
  // Stage-local recovery (fault_tolerance.stage_recovery), summed over recoveries:
  int32_t stage_recoveries = 0;  ///< recoveries that rebuilt only the failed stages' KV
  int64_t replayed_tokens = 0;   ///< KV rows replayed into restarted stages
  int64_t kept_kv_rows = 0;      ///< KV rows the surviving stages kept (not recomputed)
  /// KV rows the surviving shards wrote between their failure and the end of the replay:
  /// 0 when their KV was left untouched.
  int64_t survivor_kv_writes = 0;
  int64_t last_replay_us = 0;    ///< the last recovery's replay: first replay step sent -> last answered
};

/// `inspect` for replica_status.
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, replica_status& x) {
  return f(caf::meta::type_name("troupe::replica_status"), x.index, x.ready, x.requests, x.steps,
           x.failures, x.decode_steps, x.decode_wall_us, x.decode_kernel_us, x.decode_busy_us,
           x.step_messages, x.stage_recoveries, x.replayed_tokens, x.kept_kv_rows, x.survivor_kv_writes,
           x.last_replay_us);
}

/// Asks the replica to adopt a new set of shards (after a failure).
using rebuild_atom = caf::atom_constant<caf::atom("rebuild")>;
/// Cancels a request (the client went away).
using cancel_atom = caf::atom_constant<caf::atom("cancel")>;
/// The replica tells its owner it became ready or failed.
using ready_atom = caf::atom_constant<caf::atom("ready")>;

/// What the router knows of its replicas and requests (the answer to status_atom).
struct router_status {
  int32_t replicas = 0;  ///< replicas it routes to
  int32_t ready = 0;     ///< complete replicas ready to serve
  int32_t waiting = 0;   ///< requests waiting for a ready replica
  int32_t running = 0;   ///< requests handed to a replica and not finished
};

/// `inspect` for router_status.
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, router_status& x) {
  return f(caf::meta::type_name("troupe::router_status"), x.replicas, x.ready, x.waiting, x.running);
}

// -- graceful drain ------------------------------------------------------

/// Operator -> supervisor: drain a node; supervisor -> router: stop giving replicas new work.
using drain_atom = caf::atom_constant<caf::atom("drain")>;
/// Operator -> supervisor: every node with its operator-facing state.
using nodes_atom = caf::atom_constant<caf::atom("nodes")>;

/// One node as an operator sees it (GET /admin/nodes, troupe drain).
struct node_view {
  std::string name;               ///< the node's name in the cluster file
  std::string state;              ///< "starting", "ready", "draining", "drained", "lost", "stopped"
  int32_t pid = 0;                ///< current process id (0 = none known)
  std::vector<int32_t> replicas;  ///< replicas with a shard on this node (initial placement)
  bool replace = false;           ///< the drain asked to move its shards to free devices
  int32_t migrated = -1;          ///< drained: requests moved at the drain deadline (-1 = not drained)
  std::string detail;             ///< drain progress or why it was last lost ("" = nothing to say)
};

/// `inspect` for node_view.
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, node_view& x) {
  return f(caf::meta::type_name("troupe::node_view"), x.name, x.state, x.pid, x.replicas, x.replace,
           x.migrated, x.detail);
}

/// The supervisor's answer to `drain_atom, node, replace`.
struct drain_reply {
  int32_t code = 202;  ///< HTTP-style: 202 accepted, 400 unknown node, 403 no admin key, 409 already draining or not ready
  std::string error;   ///< why, when code != 202
  node_view node;      ///< the node after the request (empty name for an unknown node)
};

/// `inspect` for drain_reply.
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, drain_reply& x) {
  return f(caf::meta::type_name("troupe::drain_reply"), x.code, x.error, x.node);
}

// -- cache-aware routing (the router follows each replica's prefix cache) ---

/// Router -> replica, with the router: send me your prefix-cache summaries (a snapshot
/// now, then the changes).
using subscribe_atom = caf::atom_constant<caf::atom("subscribe")>;
/// Replica -> router with a prefix_summary; replica -> itself: time to send the changes.
using prefixes_atom = caf::atom_constant<caf::atom("prefixes")>;

/// Replica -> router: what changed in the replica's prefix cache, as the chained block
/// keys of runtime/engine/prefix_hash.h. Deltas, batched: at most one message per
/// replica every few milliseconds, with at most the replica's journal bound of keys
/// (replica.cpp: prefix_journal_keys); when more changed in between, or on subscribing,
/// a capped snapshot with `reset` instead. 8 bytes per key.
struct prefix_summary {
  int32_t replica = 0;            ///< the replica's index
  bool reset = false;             ///< forget this replica's keys first (`added` is a snapshot)
  std::vector<uint64_t> added;    ///< keys of blocks the replica now caches
  std::vector<uint64_t> removed;  ///< keys of blocks it no longer caches
};

/// `inspect` for prefix_summary.
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, prefix_summary& x) {
  return f(caf::meta::type_name("troupe::prefix_summary"), x.replica, x.reset, x.added, x.removed);
}

// -- term fencing (issue 15: every control message and step carries the head's term) ----

/// The lease term of the head that sends a control message (head -> node agent, node
/// agent -> shard) or a step (replica -> shard); 0 with a single head (no election). Its
/// receiver keeps the highest term it has seen and refuses an older one, so a deposed
/// leader that wakes up can do no harm. A struct, not a bare uint64_t, so that a handle's
/// typed interface tells it apart from sequence numbers and ids.
struct head_term {
  uint64_t value = 0;
};

/// `inspect` for head_term.
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, head_term& x) {
  return f(caf::meta::type_name("troupe::head_term"), x.value);
}

/// One head of the cluster file as the head that answers sees it (GET /admin/nodes).
struct head_view {
  std::string host;     ///< where its supervisor listens
  uint16_t port = 0;
  bool leader = false;  ///< this head: the one that answers (only a leader runs a supervisor)
  uint64_t term = 0;    ///< the term it leads by as the answering head knows it (0: unknown or single head)
};

/// `inspect` for head_view.
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, head_view& x) {
  return f(caf::meta::type_name("troupe::head_view"), x.host, x.port, x.leader, x.term);
}

/// One entry of the cluster file's `gateways:` (GET /admin/nodes).
struct gateway_view {
  std::string host;  ///< where its HTTP listener binds
  uint16_t port = 0;
  /// Milliseconds since the answering head last heard from it (a `troupe gateway` that
  /// serves through this head says so every second); -1: never, since this head leads.
  int64_t last_seen_ms = -1;
};

/// `inspect` for gateway_view.
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, gateway_view& x) {
  return f(caf::meta::type_name("troupe::gateway_view"), x.host, x.port, x.last_seen_ms);
}

/// The supervisor's answer to `roles_atom`: the heads and gateways of the cluster file.
struct cluster_roles {
  std::vector<head_view> heads;        ///< `heads:` (or the single `head:`), in file order
  std::vector<gateway_view> gateways;  ///< `gateways:`, in file order
};

/// `inspect` for cluster_roles.
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, cluster_roles& x) {
  return f(caf::meta::type_name("troupe::cluster_roles"), x.heads, x.gateways);
}

}  // namespace troupe

namespace troupe::leadership {

/// `inspect` for lease_reply (the leadership section at the end of this file; beside the
/// type, for argument-dependent lookup, and before add_message_types).
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, lease_reply& x) {
  return f(caf::meta::type_name("troupe::lease_reply"), x.verdict, x.term, x.holder, x.remaining_ms, x.reason);
}

}  // namespace troupe::leadership

namespace troupe {

/// Registers every type above with `cfg` (needed for remote sends).
inline void add_message_types(caf::actor_system_config& cfg) {
  cfg.add_message_type<node_info>("troupe::node_info");
  cfg.add_message_type<node_status>("troupe::node_status");  // also vector<node_status>
  cfg.add_message_type<cluster_status>("troupe::cluster_status");
  cfg.add_message_type<shard_spec>("troupe::shard_spec");
  cfg.add_message_type<shard_addresses>("troupe::shard_addresses");
  cfg.add_message_type<shard_peers>("troupe::shard_peers");
  cfg.add_message_type<step_request>("troupe::step_request");
  cfg.add_message_type<step_output>("troupe::step_output");
  cfg.add_message_type<generate_request>("troupe::generate_request");
  cfg.add_message_type<token_msg>("troupe::token_msg");
  cfg.add_message_type<replica_status>("troupe::replica_status");
  cfg.add_message_type<router_status>("troupe::router_status");
  cfg.add_message_type<node_view>("troupe::node_view");
  cfg.add_message_type<std::vector<node_view>>("std::vector<troupe::node_view>");
  cfg.add_message_type<drain_reply>("troupe::drain_reply");
  cfg.add_message_type<prefix_summary>("troupe::prefix_summary");
  cfg.add_message_type<leadership::lease_reply>("troupe::lease_reply");
  cfg.add_message_type<head_term>("troupe::head_term");
  cfg.add_message_type<cluster_roles>("troupe::cluster_roles");
}

}  // namespace troupe

// -- elastic capacity (re-planning a replica over the devices left) -------

namespace troupe {

/// The replica manager hands a replica shards of a new shape (tensor, pipeline): a
/// re-plan over fewer devices, or the file's plan again when capacity comes back.
using replan_atom = caf::atom_constant<caf::atom("replan")>;

}  // namespace troupe

// -- network chaos: fencing (no split brain after a partition) -----------

namespace troupe {

/// Supervisor -> node agent, with the sequence number of the heartbeat it answers and the
/// reason: the head no longer counts this agent as the registered incarnation of its node
/// (declared lost, or replaced): stop every shard and register again from scratch.
using fence_atom = caf::atom_constant<caf::atom("fence")>;

}  // namespace troupe

// -- stage-local recovery (a restarted stage rebuilds only its own KV) -------

namespace troupe {

/// Replica -> surviving shard: the peers are being replaced; make fresh communicator
/// endpoints, keep the weights and the KV cache, answer the new addresses.
using relink_atom = caf::atom_constant<caf::atom("relink")>;
/// Replica manager -> router, with the replica: it is recovering stage-locally; send it no
/// new request but leave its requests where they are (a later failure moves them).
using hold_atom = caf::atom_constant<caf::atom("hold")>;

}  // namespace troupe

// -- autoscaling (replicas scale up and down with load) -------------------

namespace troupe {

/// Autoscaler -> replica manager, with the target number of active replicas: replicas
/// above it are parked (drained, shards stopped, devices freed), parked ones restored
/// below it. The manager answers the replicas the devices allow (those not retired).
using scale_atom = caf::atom_constant<caf::atom("scale")>;

}  // namespace troupe


// -- replicated head state (issue 15: the leader's state reaches the standbys) -----

namespace troupe {

/// Leader -> state replica (actors/leadership/state_replica.h), with the leader's term,
/// the state's sequence number and the encoded head state: hold this state.
using replicate_atom = caf::atom_constant<caf::atom("replicate")>;
/// Anyone -> state replica: the latest state it holds (term, sequence, encoded bytes).
using latest_atom = caf::atom_constant<caf::atom("latest")>;

}  // namespace troupe

// -- leadership (issue 15: a head leads while a majority of voters grants it a lease) ----

namespace troupe {

/// Head election -> voter, with the candidate's id and the term: grant (or renew) the
/// lease of that term (answered with a leadership::lease_reply).
using lease_atom = caf::atom_constant<caf::atom("lease")>;
/// Head election -> voter, with the candidate's id and the term: a campaign that cannot
/// win, or a leader that lost its majority, gives the grant back.
using release_atom = caf::atom_constant<caf::atom("release")>;
/// Head election -> itself, with the timer's generation: the next round of requests
/// (campaign or renewal); a stale generation is ignored.
using elect_atom = caf::atom_constant<caf::atom("elect")>;
/// Head election -> itself: the lease may have ended; step down if it did.
using expire_atom = caf::atom_constant<caf::atom("expire")>;

}  // namespace troupe

// -- term fencing and roles (issue 15: every control message and step carries the term) ----

namespace troupe {

/// Head gateway -> supervisor: the heads and gateways of the cluster file (cluster_roles).
using roles_atom = caf::atom_constant<caf::atom("roles")>;

}  // namespace troupe
