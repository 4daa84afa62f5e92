#pragma once
/// troupe's CAF configuration and its logging: every troupe process (head, node, test
/// client) builds its actor_system from `system_config` so that application ids, message
/// types and the middleman heartbeat agree across the cluster.
#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <memory>
#include <spdlog/spdlog.h>
#include <string>

#include "cluster-config/cluster_config.h"

namespace troupe {

/// CAF configuration shared by all troupe processes: loads io::middleman, sets the
/// application identifier "troupe", registers every message type (actors/messages.h) and
/// turns on the middleman heartbeat from `fault_tolerance`:
/// `middleman.heartbeat-interval = heartbeat_interval` and
/// `middleman.connection-timeout = connection_timeout`. Every process sets both (a peer
/// that times out an idle peer without heartbeats drops it as dead). The connection
/// timeout is long (a process starved of CPU must not drop its healthy peers); nodes are
/// judged by the supervisor's application heartbeats within heartbeat_timeout instead.
class system_config : public caf::actor_system_config {
 public:
  /// Settings from `ft`; `worker_threads` = 0 keeps CAF's default (max(cores, 4)).
  explicit system_config(const fault_tolerance_section& ft, size_t worker_threads = 0);
};

/// The CAF application identifier every troupe process presents.
inline constexpr const char* app_identifier = "troupe";

/// The process's logger ("troupe", stderr, pattern "HH:MM:SS.mmm [role] level: text").
/// `init_logging` sets the role; before that the role is "troupe".
std::shared_ptr<spdlog::logger> logger();

/// Names this process in every log line ("head", "node n0", ...). Idempotent.
void init_logging(const std::string& role);

/// "127.0.0.1:7100".
inline std::string endpoint(const std::string& host, uint16_t port) {
  return host + ":" + std::to_string(port);
}

}  // namespace troupe
