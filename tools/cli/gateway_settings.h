#pragma once
/// The HTTP gateway's settings from a cluster file, shared by `troupe serve` (the head's
/// in-process gateway) and `troupe gateway` (a gateway apart from the head).
#include <memory>

#include "actors/gateway/http_gateway.h"
#include "cluster-config/cluster_config.h"

namespace troupe::cli {

/// The gateway's settings for the cluster `c` serving `meta`: c.server (listener, keys,
/// limits, TLS), the model's name, context and sampling defaults, and c.cache; metrics
/// on `registry`/`metrics`.
gateway_options gateway_settings(const cluster_config& c, std::shared_ptr<const model> meta,
                                 std::shared_ptr<metrics::registry> registry,
                                 std::shared_ptr<troupe_metrics> metrics);

}  // namespace troupe::cli
