#include "actors/troupe_metrics.h"

namespace troupe {

troupe_metrics::troupe_metrics(metrics::registry& r)
    : requests(r.counter_family("troupe_requests_total",
                                "HTTP requests answered, by endpoint and HTTP status code.",
                                {"endpoint", "status"})),
      queue_requests(r.gauge_family("troupe_queue_requests",
                                    "Requests admitted by the gateway and not finished yet.")
                         .with()),
      queue_tokens(r.gauge_family("troupe_queue_tokens",
                                  "Prompt tokens plus max_tokens of the requests admitted and not finished.")
                       .with()),
      client_disconnects(r.counter_family("troupe_client_disconnects_total",
                                          "Clients that disconnected before their request finished.")
                             .with()),
      time_to_first_token(r.histogram_family("troupe_time_to_first_token_seconds",
                                             "Time from admission to the first generated token.",
                                             metrics::latency_buckets())
                              .with()),
      inter_token_latency(r.histogram_family("troupe_inter_token_latency_seconds",
                                             "Time between two consecutive generated tokens of a request.",
                                             metrics::latency_buckets())
                              .with()),
      e2e_latency(r.histogram_family("troupe_e2e_request_latency_seconds",
                                     "Time from admission to the last token of a request.",
                                     metrics::latency_buckets())
                      .with()),
      prompt_tokens(r.histogram_family("troupe_request_prompt_tokens", "Prompt tokens per finished request.",
                                       metrics::token_buckets())
                        .with()),
      generation_tokens(r.histogram_family("troupe_request_generation_tokens",
                                           "Generated tokens per finished request.", metrics::token_buckets())
                            .with()),
      prompt_tokens_total(
          r.counter_family("troupe_prompt_tokens_total", "Prompt tokens of every finished request.").with()),
      generation_tokens_total(
          r.counter_family("troupe_generation_tokens_total", "Tokens generated for every request.").with()),
      running_sequences(r.gauge_family("troupe_running_sequences",
                                       "Sequences in the running batch of a replica.", {"replica"})),
      waiting_sequences(r.gauge_family("troupe_waiting_sequences",
                                       "Sequences waiting for KV-cache space or a batch slot in a replica.",
                                       {"replica"})),
      step_duration(r.histogram_family("troupe_step_duration_seconds",
                                       "Wall time of a replica's scheduler step, dispatch to the last shard's "
                                       "answer, by kind: decode (one token per sequence), mixed (decodes and "
                                       "prefill chunks), prefill.",
                                       metrics::latency_buckets(), {"replica", "kind"})),
      kv_cache_usage(r.gauge_family("troupe_kv_cache_usage_ratio",
                                    "KV-cache blocks held by live sequences divided by all blocks (0..1).",
                                    {"replica"})),
      prefix_cache_queries(r.counter_family("troupe_prefix_cache_queries_total",
                                            "Prompt tokens looked up in the prefix cache.", {"replica"})),
      prefix_cache_hits(r.counter_family("troupe_prefix_cache_hits_total",
                                         "Prompt tokens found in the prefix cache.", {"replica"})),
      ahead_decodes(r.counter_family("troupe_ahead_decodes_total",
                                     "Decode rows sent to the shard before the token they decode was sampled "
                                     "(scheduler.overlap).",
                                     {"replica"})),
      router_routed(r.counter_family("troupe_router_routed_total",
                                     "Requests routed to a replica, by reason: cache (longest cached prefix), "
                                     "least_loaded (no prefix claim), balance (the claim lost to load).",
                                     {"replica", "reason"})),
      router_matched_tokens(r.counter_family("troupe_router_matched_prefix_tokens_total",
                                             "Prompt tokens the router expected the chosen replica to have cached.",
                                             {"replica"})),
      router_index_keys(r.gauge_family("troupe_router_index_keys",
                                       "Prefix-block keys in the router's approximate index of the replicas' caches.")
                            .with()),
      replica_ready(r.gauge_family("troupe_replica_ready",
                                   "1 when every shard of the replica is up and it takes requests, else 0.",
                                   {"replica"})),
      shard_up(r.gauge_family("troupe_shard_up", "1 when the shard is alive, else 0.",
                              {"replica", "stage", "rank"})),
      shard_failures(r.counter_family("troupe_shard_failures_total", "Shard failures detected, per replica.",
                                      {"replica"})),
      replica_recoveries(r.counter_family("troupe_replica_recoveries_total",
                                          "Replica recoveries completed (restart, move or re-plan).",
                                          {"replica"})),
      stage_recoveries(r.counter_family("troupe_stage_recoveries_total",
                                        "Stage-local recoveries: only the restarted stages rebuilt their KV cache.",
                                        {"replica"})),
      stage_replay_tokens(r.counter_family("troupe_stage_replay_tokens_total",
                                           "KV rows replayed into restarted pipeline stages.", {"replica"})),
      stage_kept_kv_tokens(r.counter_family("troupe_stage_kept_kv_tokens_total",
                                            "KV rows the surviving stages kept through stage-local recoveries.",
                                            {"replica"})),
      stage_survivor_kv_writes(r.counter_family(
          "troupe_stage_survivor_kv_writes_total",
          "KV rows surviving shards wrote during stage-local recoveries (0: their cache was untouched).", {"replica"})),
      node_up(r.gauge_family("troupe_node_up", "1 when the node agent is registered and alive, else 0.",
                             {"node"})),
      node_restarts(r.counter_family("troupe_node_restarts_total",
                                     "Times a node re-registered after being lost.", {"node"})),
      capacity_replicas(r.gauge_family("troupe_capacity_replicas",
                                       "Replicas planned by the cluster file, ready, and ready with the file's full plan.",
                                       {"state"})),
      capacity_devices(r.gauge_family("troupe_capacity_devices",
                                      "Devices (shards) the cluster file plans, and those the current placement uses.",
                                      {"state"})),
      nodes(r.gauge_family("troupe_nodes",
                           "Nodes per state: starting, ready, draining, drained, lost (or restarting), stopped.",
                           {"state"})),
      autoscale_target(r.gauge_family("troupe_autoscale_target_replicas",
                                      "Active replicas the autoscaler wants (the others are parked).")
                           .with()),
      autoscale_decisions(r.counter_family("troupe_autoscale_decisions_total",
                                           "Autoscaling decisions: one more replica (up) or one fewer (down).",
                                           {"direction"})),
      head_is_leader(r.gauge_family("troupe_head_is_leader",
                                    "1 while this head holds the lease of a majority of voters (it leads), else 0.")
                         .with()),
      head_term(r.gauge_family("troupe_head_term",
                               "Highest lease term this head has seen (its own term while it leads).")
                    .with()),
      head_takeovers(r.counter_family("troupe_head_takeovers_total",
                                      "Times this head took the lease after another leader (or its own earlier "
                                      "term) had held it.")
                         .with()),
      head_takeover_seconds(r.histogram_family("troupe_head_takeover_seconds",
                                               "Per takeover: from the end of the previous leader's lease to this "
                                               "head holding the lease.",
                                               metrics::latency_buckets())
                                .with()),
      head_state_sequence(r.gauge_family("troupe_head_state_sequence",
                                         "Sequence of the latest head state this leader recorded (grows by one "
                                         "with every change of membership, placement or targets).")
                              .with()),
      head_state_replication_errors(r.counter_family("troupe_head_state_replication_errors_total",
                                                     "Failed saves of the leader's head state (target=\"disk\") "
                                                     "and failed sends of it to a standby (target=\"heads[I]\").",
                                                     {"target"})) {}

}  // namespace troupe
