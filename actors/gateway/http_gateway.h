#pragma once
/// The HTTP front door of a cluster: an OpenAI-compatible HTTP/1.1 server (Boost.Beast
/// over Asio, on an io_context of its own run by one or two threads, so idle
/// keep-alive and SSE connections cost no thread each). Requests become router requests
/// through a CAF bridge actor; token events come back to the owning connection.
/// docs/api.md describes the endpoints, fields, errors and limits.
#include <caf/all.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "actors/client.h"
#include "actors/gateway/http_tls.h"
#include "actors/serving/router.h"
#include "actors/troupe_metrics.h"
#include "cluster-config/cluster_config.h"

namespace troupe {

class model;

namespace http {
struct gateway_core;
}

/// What the gateway serves and how it is bounded.
struct gateway_options {
  server_section server;                  ///< host, port, api_keys, queue and body limits, max_n
  std::string model_name;                 ///< the name /v1/models lists and requests must use
  int max_context = 0;                    ///< tokens per sequence (prompt + output)
  /// Sampling defaults for the fields a request leaves out: the cluster file's
  /// model.generation_defaults over the model file's (read_generation_defaults).
  generation_defaults generation;
  std::shared_ptr<const troupe::model> served;  ///< the model: tokenizer, chat template, context (no weights needed)
  std::shared_ptr<metrics::registry> registry;  ///< rendered on /metrics (null = a private one)
  std::shared_ptr<troupe_metrics> metrics;      ///< updated by the gateway (null = on `registry`)
  int threads = 2;                        ///< io threads (1..2 is plenty)
  int max_connections = 0;                ///< open connections at most; 0 = 2 x max_queue_requests + 10000
  std::chrono::milliseconds status_interval{200};  ///< how often the router's readiness is polled
  cache_section cache;                    ///< the response cache (backend off = none)
  http_tls tls;                           ///< plain HTTP or HTTPS (http_tls_of(cluster file))
};

/// The server object. Not copyable; stop() (or the destructor) ends every connection.
class http_gateway {
 public:
  /// Prepares the server; nothing listens before start(). Loads the TLS files of opts.tls,
  /// throwing std::runtime_error that names the key and the file.
  http_gateway(caf::actor_system& sys, gateway_options opts);
  ~http_gateway();
  http_gateway(const http_gateway&) = delete;
  http_gateway& operator=(const http_gateway&) = delete;

  /// Binds server.host:server.port (0 = a free port), starts the io threads and logs
  /// "http: listening on HOST:PORT" and the port's TLS mode (describe(opts.tls)). Throws std::runtime_error naming host:port when the
  /// address cannot be bound. Until set_router, /ready and generation answer 503.
  void start();
  /// The bound port (after start()).
  uint16_t port() const;
  /// Routes generation requests to `router` from now on.
  void set_router(const router_actor& router);
  /// Routes generation requests through `client` (actors/client.h) from now on: a gateway
  /// apart from the head. A client spawned with client_options::failover follows the head
  /// across a loss of its router and re-submits every unfinished request with the tokens
  /// its HTTP client already has, so streams go on with no error, gap or duplicate.
  void set_client(const client_actor& client);
  /// Stops accepting connections and waits up to `timeout` for admitted requests to end.
  void drain(std::chrono::milliseconds timeout);
  /// Closes every connection, cancels what is still running and joins the io threads.
  void stop();
  /// Requests admitted and not finished (each choice counts one).
  int64_t queued_requests() const;

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace troupe
