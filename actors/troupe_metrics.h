#pragma once
/// The named set of metrics troupe's head process exports on /metrics (docs/metrics.md).
#include "actors/metrics.h"

namespace troupe {

/// Every metric troupe exports (docs/metrics.md), registered on one registry.
struct troupe_metrics {
  /// Registers every family on `r` (which must outlive this object).
  explicit troupe_metrics(metrics::registry& r);

  /// troupe_requests_total{endpoint,status} (status = HTTP code as text); gateway.
  metrics::family<metrics::counter>& requests;
  /// troupe_queue_requests: requests admitted and not finished; gateway.
  metrics::gauge& queue_requests;
  /// troupe_queue_tokens: prompt + max_tokens of admitted requests; gateway.
  metrics::gauge& queue_tokens;
  /// troupe_client_disconnects_total: clients that went away before the end; gateway.
  metrics::counter& client_disconnects;
  /// troupe_time_to_first_token_seconds; gateway (per choice that ends in stop or length).
  metrics::histogram& time_to_first_token;
  /// troupe_inter_token_latency_seconds; gateway (per choice that ends in stop or length).
  metrics::histogram& inter_token_latency;
  /// troupe_e2e_request_latency_seconds; gateway (per choice that ends in stop or length).
  metrics::histogram& e2e_latency;
  /// troupe_request_prompt_tokens; gateway (per choice that ends in stop or length).
  metrics::histogram& prompt_tokens;
  /// troupe_request_generation_tokens; gateway (per choice that ends in stop or length).
  metrics::histogram& generation_tokens;
  /// troupe_prompt_tokens_total; gateway (per choice that ends in stop or length).
  metrics::counter& prompt_tokens_total;
  /// troupe_generation_tokens_total; gateway (per choice that ends in stop or length).
  metrics::counter& generation_tokens_total;
  /// troupe_running_sequences{replica}; replica.
  metrics::family<metrics::gauge>& running_sequences;
  /// troupe_waiting_sequences{replica}; replica.
  metrics::family<metrics::gauge>& waiting_sequences;
  /// troupe_step_duration_seconds{replica,kind}: wall time of a scheduler step from its
  /// dispatch to the last shard's answer, by kind (decode, mixed, prefill); replica.
  metrics::family<metrics::histogram>& step_duration;
  /// troupe_kv_cache_usage_ratio{replica}: blocks held by live sequences / total; replica.
  metrics::family<metrics::gauge>& kv_cache_usage;
  /// troupe_prefix_cache_queries_total{replica}: prompt tokens looked up; replica.
  metrics::family<metrics::counter>& prefix_cache_queries;
  /// troupe_prefix_cache_hits_total{replica}: prompt tokens found cached; replica.
  metrics::family<metrics::counter>& prefix_cache_hits;
  /// troupe_ahead_decodes_total{replica}: decode rows sent before the token they decode was
  /// sampled (scheduler.overlap); replica.
  metrics::family<metrics::counter>& ahead_decodes;
  /// troupe_router_routed_total{replica,reason}: requests the router sent to a replica, by
  /// why: "cache" (it held the longest prefix), "least_loaded" (no replica held a prefix, or
  /// the policy is least_loaded), "balance" (the replica with the longest prefix lost its
  /// claim: far busier than the least loaded); router.
  metrics::family<metrics::counter>& router_routed;
  /// troupe_router_matched_prefix_tokens_total{replica}: prompt tokens the router's index
  /// expected the chosen replica to have cached (claims kept only); router.
  metrics::family<metrics::counter>& router_matched_tokens;
  /// troupe_router_index_keys: prefix-block keys in the router's index; router.
  metrics::gauge& router_index_keys;
  /// troupe_replica_ready{replica}: 1/0; supervisor.
  metrics::family<metrics::gauge>& replica_ready;
  /// troupe_shard_up{replica,stage,rank}: 1/0; supervisor.
  metrics::family<metrics::gauge>& shard_up;
  /// troupe_shard_failures_total{replica}; supervisor.
  metrics::family<metrics::counter>& shard_failures;
  /// troupe_replica_recoveries_total{replica}; supervisor.
  metrics::family<metrics::counter>& replica_recoveries;
  /// troupe_stage_recoveries_total{replica}: stage-local recoveries (only restarted stages rebuilt).
  metrics::family<metrics::counter>& stage_recoveries;
  /// troupe_stage_replay_tokens_total{replica}: KV rows replayed into restarted stages.
  metrics::family<metrics::counter>& stage_replay_tokens;
  /// troupe_stage_kept_kv_tokens_total{replica}: KV rows surviving stages kept through recoveries.
  metrics::family<metrics::counter>& stage_kept_kv_tokens;
  /// troupe_stage_survivor_kv_writes_total{replica}: KV rows surviving shards wrote during
  /// recoveries (0 when their cache was left untouched).
  metrics::family<metrics::counter>& stage_survivor_kv_writes;
  /// troupe_node_up{node}: 1/0; supervisor.
  metrics::family<metrics::gauge>& node_up;
  /// troupe_node_restarts_total{node}; supervisor.
  metrics::family<metrics::counter>& node_restarts;
  /// troupe_capacity_replicas{state}: replicas "planned" (cluster file), "ready", and
  /// "full" (ready with the file's tensor x pipeline plan); replica manager.
  metrics::family<metrics::gauge>& capacity_replicas;
  /// troupe_capacity_devices{state}: devices "planned" (shards of the file's plan) and
  /// "in_use" (shards of the current plans, re-planned or retired replicas included); replica manager.
  metrics::family<metrics::gauge>& capacity_devices;
  /// troupe_nodes{state}: nodes per state (starting, ready, draining, drained, lost, stopped); supervisor.
  metrics::family<metrics::gauge>& nodes;
  /// troupe_autoscale_target_replicas: the active replicas the autoscaler wants; autoscaler.
  metrics::gauge& autoscale_target;
  /// troupe_autoscale_decisions_total{direction}: scaling decisions, "up" or "down"; autoscaler.
  metrics::family<metrics::counter>& autoscale_decisions;
  /// troupe_head_is_leader: 1 while this head holds the lease of a majority of voters, else 0;
  /// head election (actors/leadership).
  metrics::gauge& head_is_leader;
  /// troupe_head_term: the highest lease term this head has seen (its own while it leads).
  metrics::gauge& head_term;
  /// troupe_head_takeovers_total: times this head took the lease after another head had led
  /// (a majority of voters named it as the holder, again after a renewal) or after its own
  /// earlier term.
  metrics::counter& head_takeovers;
  /// troupe_head_takeover_seconds: per takeover, from the end of the previous leader's lease
  /// (as the voters last reported it, or this head's own stepping down) to holding the lease.
  metrics::histogram& head_takeover_seconds;
  /// troupe_head_state_sequence: the sequence of the latest replicated head state this leader
  /// recorded (actors/leadership/head_state_recorder.h); 0 before the first.
  metrics::gauge& head_state_sequence;
  /// troupe_head_state_replication_errors_total{target}: failed saves of the leader's state
  /// ("disk") and failed sends to a standby's state replica (the standby's "heads[I]").
  metrics::family<metrics::counter>& head_state_replication_errors;
};

}  // namespace troupe
