#include "tools/cli/gateway_settings.h"

#include "actors/actor_system_config.h"
#include "runtime/model/model.h"

namespace troupe::cli {

/// The gateway's settings for the cluster `c` serving `meta` (gateway_settings.h).
gateway_options gateway_settings(const cluster_config& c, std::shared_ptr<const model> meta,
                                 std::shared_ptr<metrics::registry> registry,
                                 std::shared_ptr<troupe_metrics> metrics) {
  gateway_options g;
  g.server = c.server;
  g.model_name = served_model_name(c);
  const auto& s = c.scheduler;
  const int capacity = ((s.kv_tokens + s.block_size - 1) / s.block_size) * s.block_size;
  g.max_context = std::min(s.max_context > 0 ? s.max_context : meta->config().max_context, capacity);
  // Request > cluster file > model file > OpenAI defaults (as vLLM).
  g.generation = read_generation_defaults(c.model.path).overlaid_with(c.model.generation_defaults);
  logger()->info("sampling defaults for requests that leave them out: {}; max_tokens at most {}",
                 describe_generation(g.generation), c.server.max_tokens_default);
  g.cache = c.cache;
  if (c.cache.backend != "off")
    logger()->info("response cache: {} (ttl {} ms, max_bytes {})",
                   c.cache.backend == "redis" ? "redis at " + c.cache.url : c.cache.backend, c.cache.ttl.count(),
                   c.cache.max_bytes);
  g.tls = http_tls_of(c);
  g.served = std::move(meta);
  g.registry = std::move(registry);
  g.metrics = std::move(metrics);
  return g;
}

}  // namespace troupe::cli
