#include "actors/actor_system_config.h"

#include <mutex>
#include <spdlog/sinks/stdout_sinks.h>

#include "actors/messages.h"
#include "actors/serving/shard.h"

namespace troupe {

system_config::system_config(const fault_tolerance_section& ft, size_t worker_threads) {
  load<caf::io::middleman>();
  troupe::add_message_types(*this);
  troupe::add_shard_types(*this);
  set("middleman.app-identifiers", std::vector<std::string>{app_identifier});
  set("middleman.heartbeat-interval", caf::timespan{ft.heartbeat_interval});
  set("middleman.connection-timeout", caf::timespan{ft.connection_timeout});
  if (worker_threads > 0) set("scheduler.max-threads", worker_threads);
}

namespace {

std::mutex log_mutex;
std::shared_ptr<spdlog::logger> process_logger;

std::shared_ptr<spdlog::logger> make_logger(const std::string& role) {
  auto sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  auto logger = std::make_shared<spdlog::logger>("troupe", sink);
  logger->set_pattern("%H:%M:%S.%e [" + role + "] %l: %v");
  logger->flush_on(spdlog::level::trace);
  return logger;
}

}  // namespace

std::shared_ptr<spdlog::logger> logger() {
  std::lock_guard<std::mutex> lock(log_mutex);
  if (!process_logger) process_logger = make_logger("troupe");
  return process_logger;
}

void init_logging(const std::string& role) {
  std::lock_guard<std::mutex> lock(log_mutex);
  process_logger = make_logger(role);
}

}  // namespace troupe
