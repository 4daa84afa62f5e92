#pragma once
/// The gateway's internals (not a public API): the state shared by every connection, the
/// table that routes router events to connections, and one HTTP connection (`session`).
#include <atomic>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "actors/gateway/http_gateway.h"
#include "actors/gateway/http_stream.h"
#include "actors/messages.h"
#include "actors/gateway/openai_response.h"
#include "actors/gateway/response_cache.h"

namespace troupe::http {

namespace beast = boost::beast;
namespace net = boost::asio;
namespace bhttp = boost::beast::http;
using tcp = net::ip::tcp;

class session;

/// Where the events of one router request go: a connection and its choice index.
struct event_target {
  std::weak_ptr<session> owner;  ///< the connection (gone = drop the events)
  int choice = 0;                ///< which choice of its request
};

/// Router request id -> the connection waiting for its events. Thread-safe.
class event_hub {
 public:
  /// Routes the events of `id` to `t`.
  void add(uint64_t id, event_target t);
  /// Forgets `id`: its later events are dropped.
  void remove(uint64_t id);
  /// Posts `m` onto its connection's executor (a finished event forgets the id); drops
  /// it when the id is unknown, the connection is gone or the hub is closed.
  void deliver(token_msg m);
  /// Drops every event from now on (before the io_context goes away).
  void close();
  /// Ids routed now.
  size_t size() const;

 private:
  mutable std::mutex mutex_;
  std::unordered_map<uint64_t, event_target> targets_;
  bool closed_ = false;
};

/// State every connection shares with the gateway and the bridge actor.
struct gateway_core {
  gateway_options opts;           ///< as given (model, limits, metrics)
  request_limits limits;          ///< for request parsing
  int64_t created = 0;            ///< unix seconds the gateway started (model objects)
  int max_connections = 0;        ///< open connections at most
  event_hub hub;                  ///< router events -> connections
  caf::actor bridge;              ///< the CAF bridge (router requests and cancels)
  std::atomic<int> ready_replicas{0};   ///< from the router's last status
  std::atomic<bool> have_router{false}; ///< set_router was called
  std::atomic<bool> draining{false};    ///< no new generation requests
  std::atomic<uint64_t> next_id{1};     ///< router request ids
  std::atomic<int64_t> connections{0};  ///< open connections
  std::shared_ptr<response_cache> cache;  ///< the response cache (null = off)
  std::shared_ptr<net::ssl::context> tls_context;  ///< HTTPS connections' settings (null = plain HTTP)
  /// When a failed TLS handshake was last logged (steady clock, ms): one line a second at most.
  std::atomic<int64_t> last_handshake_log_ms{0};

  /// The metrics the gateway updates.
  troupe_metrics& metrics() { return *opts.metrics; }
  /// Admits `requests` choices holding `tokens` (prompt + max_tokens) when both queues
  /// have room; false = 429.
  bool admit(int64_t requests, int64_t tokens);
  /// Gives back what admit took.
  void release(int64_t requests, int64_t tokens);
  /// Choices admitted and not finished.
  int64_t queued_requests() const;
  /// Sends router request `id` through the bridge.
  void submit(uint64_t id, generate_request r);
  /// Cancels router request `id` (and forgets it) through the bridge.
  void cancel(uint64_t id);

 private:
  mutable std::mutex admit_mutex_;
  int64_t queued_requests_ = 0;
  int64_t queued_tokens_ = 0;
};

/// One choice of an HTTP generation request as it runs.
struct choice_state {
  uint64_t id = 0;             ///< router request id
  int prompt = 0;              ///< index of its prompt
  int64_t admitted_tokens = 0; ///< prompt + max_tokens (released once)
  bool released = false;       ///< admission given back
  bool done = false;           ///< finished (or cancelled)
  bool started = false;        ///< chat stream: role chunk sent
  choice_output out;           ///< text, finish reason, tokens
  size_t streamed_chars = 0;   ///< text length already streamed (completions text_offset)
  int generated = 0;           ///< tokens generated
  std::chrono::steady_clock::time_point last_token;  ///< for inter-token latency
};

/// One HTTP generation request as it runs (n choices per prompt).
struct api_call {
  openai_request request;                     ///< parsed request
  std::vector<std::vector<int32_t>> prompts;  ///< [prompts][tokens] prompt token ids
  response_meta meta;                         ///< id, model, created
  std::vector<choice_state> choices;          ///< prompt-major, then n
  int remaining = 0;                          ///< choices not finished
  bool headers_sent = false;                  ///< streaming: the 200 header is out
  bool ended = false;                         ///< streaming: the last bytes are queued
  std::chrono::steady_clock::time_point start;  ///< when the request arrived
  std::string cache_key;                      ///< "" = the answer is not stored
  cached_answer recording;                    ///< what the cache stores when it ends
};

/// One HTTP/1.1 connection, plain or TLS (http_stream): reads requests, routes them, streams
/// answers.
class session : public std::enable_shared_from_this<session> {
 public:
  /// Takes over an accepted socket.
  session(tcp::socket&& socket, std::shared_ptr<gateway_core> core);
  ~session();
  /// Starts the TLS handshake (HTTPS) or reading the first request.
  void run();
  /// Queues a router event for this connection's strand (thread-safe).
  void post_event(int choice, token_msg m);

 private:
  // -- connection (http_session.cpp)
  void handshake();
  void on_handshake(beast::error_code ec);
  void read_header();
  void on_header(beast::error_code ec);
  void read_body();
  void on_body(beast::error_code ec);
  void on_read_error(beast::error_code ec);
  void handle();
  void route(const bhttp::request<bhttp::string_body>& req);
  /// Throws the OpenAI-style 401 unless `req` carries a configured API key (or none is set).
  void require_api_key(const bhttp::request<bhttp::string_body>& req) const;
  /// /admin/*: an admin key, or a loopback client without admin keys (http_auth.h); 401/403.
  void require_admin_key(const bhttp::request<bhttp::string_body>& req);
  void admin(const bhttp::request<bhttp::string_body>& req, const std::string& path);  // graceful drain
  void respond(bhttp::status status, std::string body, const std::string& content_type,
               bool close = false, const std::string& retry_after = "");
  void respond_error(const api_error& e, bool close = false);
  void after_response(beast::error_code ec, bool close);
  void next_request();
  void watch();
  void on_watch(beast::error_code ec, size_t n);
  void close();
  void count_request(int status);
  // -- generation (http_generation.cpp)
  void start_generation(const bhttp::request<bhttp::string_body>& req);
  void launch(openai_request r, std::vector<std::vector<int32_t>> prompts, std::string cache_key = "");
  void on_event(int choice, token_msg& m);
  void record_token(choice_state& c, const token_msg& m);
  void finish_choice(choice_state& c, const std::string& reason);
  void fail_call(const std::string& why);
  void stream_event(int choice, const token_msg& m);
  void start_stream();
  void end_stream();
  void complete();
  void client_gone();
  void cancel_unfinished();
  void push(const std::string& data, bool raw = false);
  void flush();
  void on_flushed(beast::error_code ec);
  // -- response cache (http_cache.cpp)
  /// Looks `r` up (sets cache_header_); true when the answer was served from the cache.
  bool serve_cached(const bhttp::request<bhttp::string_body>& req, const nlohmann::json& body,
                    const openai_request& r, const std::vector<std::vector<int32_t>>& prompts,
                    std::string& key);
  void replay(const openai_request& r, cached_answer a);
  void replay_stream(const openai_request& r, const cached_answer& a);
  void record_event(int choice, const token_msg& m);
  void store_answer();

  http_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  std::shared_ptr<gateway_core> core_;
  std::unique_ptr<api_call> call_;
  std::string endpoint_ = "other";  ///< metrics label of the current request
  unsigned version_ = 11;
  bool keep_alive_ = true;
  bool closed_ = false;
  bool watching_ = false;
  bool resume_after_watch_ = false;
  bool chunked_ = false;
  bool writing_ = false;
  std::string cache_header_;  ///< X-Troupe-Cache of the current answer ("" = none)
  std::deque<std::string> out_;
  std::string write_buf_;
};

}  // namespace troupe::http
