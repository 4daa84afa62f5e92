#pragma once
/// The cluster file: one YAML document that says which model to serve, how to split
/// it, where the nodes are, and how the server, scheduler and fault tolerance behave.
/// Every key has a default; docs/configuration.md is the reference.
#include <chrono>
#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "runtime/model/generation_defaults.h"

namespace troupe {

/// `model:` — what to serve.
struct model_section {
  std::string path = "default";  ///< .gguf, Hugging Face directory, or "default"
  std::string dtype = "bf16";    ///< weights and activations on GPUs: bf16 or f16 (the CPU computes in f32)
  std::string load_format = "auto";  ///< auto (by path) or random (config.json only; weights made on the devices)
  /// Sampling defaults for requests that leave a field out; over the model file's own
  /// (generation_config.json, GGUF general.sampling.*), under the request's.
  troupe::generation_defaults generation_defaults;
};

/// `parallel:` — how one replica is split, and how many replicas run.
struct parallel_section {
  int tensor = 1;                    ///< tensor-parallel ranks per stage
  int pipeline = 1;                  ///< pipeline stages per replica
  int replicas = 1;                  ///< model instances
  std::vector<int> layers_per_stage; ///< optional override; must sum to the layer count
  bool allow_uneven_heads = false;   ///< split heads 5/4 etc. when `tensor` does not divide them
};

/// One entry of `nodes:` — a process (usually one per host) and its devices.
struct node_section {
  std::string name;                  ///< unique
  std::string host = "127.0.0.1";
  uint16_t port = 0;                 ///< CAF port the node agent publishes on; 0 = any free port
  std::vector<std::string> devices;  ///< "cpu" (one CPU shard each) or "cuda:N"; the file's default is ["cpu"]
  int threads = 0;                   ///< CPU threads per shard; 0 = cores / shards
  /// false: the head never starts this node's process, even on its own host (it is started
  /// by `troupe node`, systemd or Slurm), so it outlives its head (fault_tolerance.head_grace).
  bool launch = true;
  /// With security.tls: required, this node's own certificate and key (PEM); "" = the
  /// security section's (both or neither).
  std::string certificate;
  std::string key;
  /// With several heads (`heads:`): the port of this node's lease voter (on its host), so
  /// that the node votes in the heads' election; 0 = it does not vote.
  uint16_t voter_port = 0;
};

/// `head:` (or one entry of `heads:`) — where the supervisor and router listen.
struct head_section {
  std::string host = "127.0.0.1";
  uint16_t port = 7100;
  /// `heads:` entries only (required with more than one head): the port of this head's
  /// lease voter on its host (docs/reliability.md, "Leadership").
  uint16_t voter_port = 0;
  /// `heads:` entries only, optional: the port on its host where this head, while it
  /// stands by, takes the leader's replicated state (its state replica); 0 = the leader
  /// sends it nothing, and when this head leads it places from the cluster file.
  uint16_t state_port = 0;
};

/// One entry of `gateways:` — a `troupe gateway` process: an HTTP front door of its own,
/// apart from the head, that reaches the head's router over the cluster's links and keeps
/// its clients' streams across a loss of the head (docs/reliability.md, "Gateways").
struct gateway_section {
  std::string host = "127.0.0.1";  ///< where its HTTP listener binds (server.host's rules)
  uint16_t port = 8000;            ///< its HTTP port; 0 = any free port (it logs the one it got)
};

/// `server:` — the HTTP front door.
struct server_section {
  std::string host = "127.0.0.1";
  uint16_t port = 8000;               ///< 0 = any free port (the head logs the one it got)
  std::string model_name;             ///< the name clients use; "" = served_model_name's default
  std::vector<std::string> api_keys;
  std::vector<std::string> admin_keys;  ///< bearer keys of /admin/*; none: loopback clients only
  int max_queue_requests = 256;
  int64_t max_queue_tokens = 262144;
  int64_t max_body_bytes = 4 << 20;
  int max_n = 16;                     ///< most choices (`n`) one request may ask for
  /// Cap on max_tokens of a request that gives none (still bounded by the context).
  int max_tokens_default = 512;
  /// TLS of the HTTP port. cluster: as security.tls (required: HTTPS with the head's
  /// certificate that requires a client certificate of the cluster CA; off: plain HTTP);
  /// server: HTTPS with the head's certificate, no client certificate asked (API keys
  /// authenticate); off: plain HTTP (behind a TLS-terminating proxy on loopback).
  std::string tls = "cluster";
};

/// `scheduler:` — per replica.
struct scheduler_section {
  int max_batch_tokens = 512;
  /// Prefill tokens a step carries beside decodes (0: whatever the decodes leave of
  /// max_batch_tokens): bounds how much a prefill lengthens the decodes' step.
  int max_prefill_tokens = 0;
  /// With max_prefill_tokens: prefill tokens beside n decodes at most
  /// max(max_prefill_tokens / 4, prefill_per_decode x n); 0 = off.
  int prefill_per_decode = 0;
  int max_seqs = 32;
  int kv_tokens = 16384;
  double kv_fraction = 0.9;          ///< GPU shards: share of the free memory after loading that KV may take
  int block_size = 16;
  int max_context = 0;               ///< 0 = the model's
  bool prefix_caching = true;
  int micro_batches = 2;             ///< pipeline micro-batches in flight
  /// GPU kernels compute every row independently of the batch (one GEMM algorithm for
  /// any row count, one attention kernel): bitwise-reproducible logits, and a request
  /// resumed after a failure repeats the fault-free tokens. Costs speed (docs/gpu-notes.md).
  bool batch_invariant = false;
  /// GPU shards with CUDA graphs (one stage, one rank): capture the decode graph of every
  /// batch-size bucket for contexts up to this many tokens at start, so no serving step
  /// runs eagerly or captures (0: capture each bucket on its second use instead).
  int graph_warmup_context = 8192;
  /// Overlapped steps (replicas of one stage): the head plans and sends the next step
  /// while the shard runs the current one, its decodes taking the tokens the shard samples,
  /// so the device does not wait for the head between steps (vLLM's async scheduling).
  bool overlap = false;
};

/// `fault_tolerance:` — detection and recovery bounds.
struct fault_tolerance_section {
  std::chrono::milliseconds heartbeat_interval{100};
  std::chrono::milliseconds heartbeat_timeout{1000};   ///< a silent peer is dead after this
  std::chrono::milliseconds collective_timeout{5000};  ///< deadline of one communicator call
  /// Deadline of one scheduler step at a shard (and of a pipeline stage's wait for the
  /// stage before it, which includes that stage's compute). Dead shards are found by
  /// monitors and heartbeats long before; this only bounds a shard that hangs.
  std::chrono::milliseconds step_timeout{120000};
  /// A shard whose worker makes no progress (no layer computed, no transfer polled) for
  /// this long in a step is stalled: it fails the step and stops, and the replica recovers
  /// as from a failed shard. 0 = off (only step_timeout bounds a hung shard).
  std::chrono::milliseconds stall_timeout{5000};
  /// How long a new shard waits for the worker of a stopped shard on the same device to
  /// release it (its memory) before it refuses to load.
  std::chrono::milliseconds release_wait{30000};
  /// How long a CAF connection may stay silent before it is dropped, in every process (the
  /// head's clients and nodes, a node's link to its head, clients): long enough to outlast a
  /// process starved of CPU. The head judges nodes by their heartbeats (heartbeat_timeout).
  std::chrono::milliseconds connection_timeout{30000};
  std::chrono::milliseconds request_wait{30000};       ///< how long a request waits for a replica
  int max_restarts = 5;                                ///< per node, before it is given up
  int request_retries = 3;
  /// How long a drained node's in-flight requests may run before they migrate to another
  /// replica (graceful drain).
  std::chrono::milliseconds drain_timeout{30000};
  /// Stage-local recovery (pipeline > 1): when shards of some stages fail, the replica keeps
  /// its requests and the other stages' KV cache, waits for new shards of the failed stages
  /// and rebuilds only their KV by replaying the inputs the stage before kept.
  bool stage_recovery = true;
  /// How long a replica holds its requests for stage-local recovery before it gives them to
  /// the router to move (as on any failure) and recomputes everything.
  std::chrono::milliseconds stage_recovery_timeout{10000};
  /// How long a node keeps its loaded shards after it lost its head, for a new head (another
  /// head process, not the one that lost it) to adopt them without loading weights again.
  /// 0 = stop them at once (fencing, as before).
  std::chrono::milliseconds head_grace{0};
  /// The nice value (0..19) of a node's compute threads on the CPU backend (a shard's worker
  /// thread and the OpenMP threads it starts): on a host whose cores are all busy, the
  /// control plane (leases, heartbeats, heads, gateways) then runs first and keeps its
  /// deadlines. 0 = as started. GPU shards are never reniced.
  int compute_nice = 0;
};

/// `autoscale:` — replicas scale up and down with load, within parallel.replicas.
/// Replicas above the target are parked (drained, shards stopped, devices freed) and
/// restored when the load rises again.
struct autoscale_section {
  bool enabled = false;
  int min_replicas = 1;               ///< fewest active replicas
  int max_replicas = 0;               ///< most active replicas; 0 = parallel.replicas
  std::chrono::milliseconds interval{1000};  ///< how often the load is sampled
  /// Waiting requests per serving replica above which one more replica is wanted.
  double scale_up_queue = 4;
  /// Mean KV-cache usage (0..1) of the serving replicas above which one more replica is wanted.
  double scale_up_kv = 0.9;
  /// Running + waiting requests per serving replica below which the load is low.
  double scale_down_load = 0.25;
  /// How long the load must stay low before one replica is parked.
  std::chrono::milliseconds scale_down_after{60000};
  std::chrono::milliseconds cooldown{30000};  ///< least time between two scaling decisions
};

/// `cache:` — the response cache: finished answers of requests whose output is a pure
/// function of their input (temperature 0, or a given seed), replayed byte for byte.
struct cache_section {
  std::string backend = "off";                 ///< off, memory (in-process LRU) or redis
  std::string url = "redis://127.0.0.1:6379";  ///< redis: redis://[:password@]host[:port][/db]
  std::chrono::milliseconds ttl{300000};       ///< how long an entry lives
  /// memory: the LRU's bound; redis: `maxmemory` set at start (0 = leave Redis's as is).
  /// An answer larger than this is not cached.
  int64_t max_bytes = 64 << 20;
};

/// `router:` — how the router picks a replica for each request.
struct router_section {
  /// cache_aware: the replica whose prefix cache holds the longest prefix of the prompt
  /// (ties and unknown prefixes: the least loaded), unless it is far busier than the least
  /// loaded one; least_loaded: the ready replica with the fewest requests in flight.
  std::string policy = "cache_aware";
  /// cache_aware: the replica with the longest prefix loses its claim to the least loaded
  /// one when it holds more than this many requests beyond the least loaded's ...
  int balance_abs_threshold = 2;
  /// ... and more than this many times the least loaded's requests (both must hold).
  double balance_rel_threshold = 1.5;
  /// cache_aware: the most prefix-block keys the router's index holds (least recently
  /// used ones go first); 8 bytes a key plus bookkeeping.
  int index_capacity = 65536;
};

/// `security:` — TLS on the cluster's CAF links (head, nodes, clients such as
/// `troupe generate --head` and `troupe drain`). docs/security.md explains the model.
struct security_section {
  /// off: plaintext links (fine on one host's loopback); required: mutual TLS, every peer
  /// shows a certificate signed by `ca`, plaintext and uncertified peers are refused.
  std::string tls = "off";
  std::string ca;           ///< the cluster CA's certificate (PEM)
  std::string certificate;  ///< this process's certificate (PEM), signed by the CA
  std::string key;          ///< its private key (PEM, unencrypted)
};

/// `leadership:` — the heads' election (docs/reliability.md, "Leadership"): a head leads
/// while a majority of voters grants it a lease with a term.
struct leadership_section {
  /// How long a voter holds the lease for its holder after the last grant: a dead leader's
  /// lease runs out within this, so a standby takes over after about this long.
  std::chrono::milliseconds lease_duration{2000};
  /// The leader stops counting a grant this much before lease_duration (from when it sent
  /// the request): the bound on how much the hosts' steady clocks may drift apart over one
  /// lease. Below lease_duration / 3.
  std::chrono::milliseconds drift_margin{200};
  /// Directory of the head's replicated state (a path relative to the working directory, or
  /// absolute): with several heads, head I keeps it in `<state_dir>/head-I`; a single head
  /// in `<state_dir>` itself, and only with single_head_state.
  std::string state_dir = "troupe-state";
  /// A single head (no `heads:`) also saves its state in state_dir and starts from it, so a
  /// cold restart keeps the placement. Off by default: a plain `troupe serve` writes nothing
  /// into its working directory.
  bool single_head_state = false;
};

/// Where a Redis cache lives, from redis://[:password@]host[:port][/db].
struct redis_address {
  std::string host = "127.0.0.1";
  int port = 6379;
  std::string password;  ///< "" = no AUTH
  int db = 0;
};

/// Parses cache.url; std::invalid_argument naming what is wrong.
redis_address parse_redis_url(const std::string& url);

/// The whole cluster file.
struct cluster_config {
  model_section model;
  parallel_section parallel;
  head_section head;                ///< the single head, or heads[0]
  /// `heads:` — every head (one leader, the others standbys; docs/reliability.md,
  /// "Leadership"); empty when the file names one `head:`.
  std::vector<head_section> heads;
  std::vector<node_section> nodes;
  std::vector<gateway_section> gateways;  ///< `gateways:` (optional): HTTP gateways apart from the head
  server_section server;
  scheduler_section scheduler;
  fault_tolerance_section fault_tolerance;
  autoscale_section autoscale;
  cache_section cache;
  router_section router;
  security_section security;
  leadership_section leadership;
  std::string source;  ///< file it was read from ("" when built in code)
};

/// A bad key or value: `path` is the key path ("parallel.tensor", "nodes[1].port").
/// what() reads "<source>: <path>: <what>" ("<source>: <what>" when the path is empty,
/// as for a YAML syntax error, whose text names the line and column).
struct config_error : std::runtime_error {
  /// Builds the message from its three parts.
  config_error(const std::string& source, const std::string& path, const std::string& what);
  std::string path;  ///< key path of the bad value; "" for a syntax error
};

/// Parses YAML text. `source` names the file in errors. Unknown keys are errors.
cluster_config parse_cluster_config(const std::string& yaml_text, const std::string& source = "<string>");
/// Reads and parses a file (errors name the file).
cluster_config load_cluster_config(const std::string& path);
/// Applies "key.path=value" overrides (command-line --set), then re-validates.
void apply_overrides(cluster_config& c, const std::vector<std::string>& overrides);
/// Checks values and their consistency (ports, unique names, shards vs devices, ...).
void validate(const cluster_config& c);
/// The one-process default: one node "local" on 127.0.0.1 with one CPU device, the default model.
cluster_config default_cluster_config();
/// The model name the HTTP API serves: server.model_name, or else the model file's (or
/// directory's) name without .gguf ("SmolLM2-135M-Instruct.Q4_1" for "default").
std::string served_model_name(const cluster_config& c);
/// Whether `host` is a loopback name or address: localhost, ::1 or 127.x.y.z.
bool is_loopback_host(const std::string& host);
/// Every head of the cluster: `heads`, or the single `head`.
std::vector<head_section> head_list(const cluster_config& c);
/// The lease voters of the heads' election ("host:port"): every head's, then every voting
/// node's, in file order; empty with a single head (no election).
std::vector<std::string> election_voters(const cluster_config& c);
/// Writes the config as YAML that parse_cluster_config reads back to an equal config.
std::string to_yaml(const cluster_config& c);

}  // namespace troupe
