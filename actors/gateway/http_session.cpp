#include "actors/gateway/http_session.h"

#include "actors/actor_system_config.h"
#include "actors/cluster/supervisor.h"
#include "actors/gateway/http_auth.h"
#include "runtime/model/model.h"

namespace troupe::http {

namespace {

constexpr auto idle_timeout = std::chrono::seconds(60);
/// How long an HTTPS client may take to finish the TLS handshake: one that connects and
/// says nothing (or speaks plaintext and waits) gives its connection back after this.
constexpr auto handshake_timeout = std::chrono::seconds(10);
constexpr size_t header_limit = 16 * 1024;
constexpr size_t watch_limit = 64 * 1024;

const char* json_type = "application/json";

/// The metrics label of a request path (unknown paths share one label).
std::string endpoint_label(const std::string& path) {
  static const char* known[] = {"/v1/completions", "/v1/chat/completions", "/v1/models",
                                "/health", "/ready", "/metrics", "/admin/drain", "/admin/nodes"};
  for (const char* k : known)
    if (path == k) return k;
  if (path.rfind("/v1/models/", 0) == 0) return "/v1/models";
  return "other";
}

bool is_disconnect(const beast::error_code& ec) {
  return ec == bhttp::error::end_of_stream || ec == net::error::eof ||
         ec == net::error::connection_reset || ec == net::error::broken_pipe ||
         ec == beast::error::timeout || ec == net::error::operation_aborted ||
         ec == net::error::bad_descriptor || ec == net::error::not_connected;
}

// -- admin endpoints (graceful drain) -----------------------------------------------------

/// A gateway heard from by the leading head within this long counts as reachable (it says
/// so every second).
constexpr int64_t gateway_seen_within_ms = 3000;

/// How long an admin request waits for the supervisor.
constexpr auto admin_timeout = std::chrono::seconds(5);

nlohmann::json node_json(const node_view& v) {
  return {{"name", v.name},         {"state", v.state},       {"pid", v.pid},       {"replicas", v.replicas},
          {"replace", v.replace},   {"migrated", v.migrated}, {"detail", v.detail}};
}

/// Adds the heads and gateways of GET /admin/nodes to `body`: "heads": [{"host", "port",
/// "leader", "term"}] ("term" null for a head this one knows no term of) and "gateways":
/// [{"host", "port", "last_seen_ms", "reachable"}] ("last_seen_ms": since the leading head
/// last heard from it, null when never; "reachable": heard within the last 3 s).
void roles_json(const cluster_roles& roles, nlohmann::json& body) {
  body["heads"] = nlohmann::json::array();
  for (const auto& h : roles.heads) {
    nlohmann::json j = {{"host", h.host}, {"port", h.port}, {"leader", h.leader}, {"term", nullptr}};
    if (h.leader) j["term"] = h.term;
    body["heads"].push_back(std::move(j));
  }
  body["gateways"] = nlohmann::json::array();
  for (const auto& g : roles.gateways) {
    nlohmann::json j = {{"host", g.host}, {"port", g.port}, {"last_seen_ms", nullptr}, {"reachable", false}};
    if (g.last_seen_ms >= 0) {
      j["last_seen_ms"] = g.last_seen_ms;
      j["reachable"] = g.last_seen_ms <= gateway_seen_within_ms;
    }
    body["gateways"].push_back(std::move(j));
  }
}

/// The body of POST /admin/drain: {"node": "<name>", "replace": false}; api_error 400
/// naming the field otherwise.
std::pair<std::string, bool> parse_drain_body(const std::string& body) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(body);
  } catch (const std::exception& e) {
    throw api_error(400, std::string("the body is not valid JSON: ") + e.what());
  }
  if (!j.is_object()) throw api_error(400, "the body must be a JSON object like {\"node\": \"<name>\"}");
  for (const auto& [key, value] : j.items())
    if (key != "node" && key != "replace")
      throw api_error(400, "unknown field '" + key + "' (fields: node, replace)", key);
  if (!j.contains("node")) throw api_error(400, "missing field 'node' (the node to drain)", "node");
  if (!j["node"].is_string() || j["node"].get<std::string>().empty())
    throw api_error(400, "field 'node' must be a non-empty string", "node");
  bool replace = false;
  if (j.contains("replace")) {
    if (!j["replace"].is_boolean()) throw api_error(400, "field 'replace' must be true or false", "replace");
    replace = j["replace"].get<bool>();
  }
  return {j["node"].get<std::string>(), replace};
}

/// Asks the head's supervisor (from the actor system's registry) with `msg...` and calls
/// `done` with the answer, or `fail` with an api_error, on an actor thread.
template <class Answer, class... Ts>
void ask_supervisor(caf::actor_system& sys, std::function<void(Answer&)> done,
                    std::function<void(const api_error&)> fail, Ts... msg) {
  auto sup = sys.registry().get<supervisor_actor>(supervisor_registry_name);
  if (!sup) return fail(api_error(503, "no supervisor in this process: the admin API needs a head"));
  sys.spawn([=](caf::event_based_actor* self) {
    self->request(sup, admin_timeout, msg...)
        .then([done](Answer& a) { done(a); },
              [fail, self](caf::error& e) {
                fail(api_error(503, "the supervisor did not answer: " + self->system().render(e)));
              });
  });
}

}  // namespace

// -- event_hub --------------------------------------------------------------------------

void event_hub::add(uint64_t id, event_target t) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!closed_) targets_[id] = std::move(t);
}

void event_hub::remove(uint64_t id) {
  std::lock_guard<std::mutex> lock(mutex_);
  targets_.erase(id);
}

void event_hub::deliver(token_msg m) {
  std::lock_guard<std::mutex> lock(mutex_);
  // The session is released under the lock: close() cannot return (and the io_context
  // cannot go away) while a connection is being touched here.
  if (closed_) return;
  auto it = targets_.find(m.request);
  if (it == targets_.end()) return;
  auto owner = it->second.owner.lock();
  const int choice = it->second.choice;
  if (m.finished || !owner) targets_.erase(it);
  if (owner) owner->post_event(choice, std::move(m));
}

void event_hub::close() {
  std::lock_guard<std::mutex> lock(mutex_);
  closed_ = true;
  targets_.clear();
}

size_t event_hub::size() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return targets_.size();
}

// -- gateway_core -----------------------------------------------------------------------

bool gateway_core::admit(int64_t requests, int64_t tokens) {
  std::lock_guard<std::mutex> lock(admit_mutex_);
  if (queued_requests_ + requests > opts.server.max_queue_requests ||
      queued_tokens_ + tokens > opts.server.max_queue_tokens)
    return false;
  queued_requests_ += requests;
  queued_tokens_ += tokens;
  metrics().queue_requests.set(static_cast<double>(queued_requests_));
  metrics().queue_tokens.set(static_cast<double>(queued_tokens_));
  return true;
}

void gateway_core::release(int64_t requests, int64_t tokens) {
  std::lock_guard<std::mutex> lock(admit_mutex_);
  queued_requests_ -= requests;
  queued_tokens_ -= tokens;
  metrics().queue_requests.set(static_cast<double>(queued_requests_));
  metrics().queue_tokens.set(static_cast<double>(queued_tokens_));
}

int64_t gateway_core::queued_requests() const {
  std::lock_guard<std::mutex> lock(admit_mutex_);
  return queued_requests_;
}

void gateway_core::submit(uint64_t id, generate_request r) {
  caf::anon_send(bridge, generate_atom::value, id, std::move(r));
}

void gateway_core::cancel(uint64_t id) { caf::anon_send(bridge, cancel_atom::value, id); }

// -- session: connection ----------------------------------------------------------------

session::session(tcp::socket&& socket, std::shared_ptr<gateway_core> core)
    : stream_(std::move(socket), core->tls_context.get()), core_(std::move(core)) {
  core_->connections++;
}

session::~session() {
  cancel_unfinished();
  core_->connections--;
}

void session::run() {
  net::dispatch(stream_.get_executor(), [self = shared_from_this()] {
    if (self->stream_.is_tls()) return self->handshake();
    self->read_header();
  });
}

void session::handshake() {
  stream_.tcp().expires_after(handshake_timeout);
  stream_.async_handshake([self = shared_from_this()](beast::error_code ec) { self->on_handshake(ec); });
}

void session::on_handshake(beast::error_code ec) {
  if (!ec) return read_header();
  // No certificate, another CA's, plaintext, silence: this connection ends, nothing else.
  const auto now = std::chrono::duration_cast<std::chrono::milliseconds>(
                       std::chrono::steady_clock::now().time_since_epoch()).count();
  auto last = core_->last_handshake_log_ms.load();
  if (now - last >= 1000 && core_->last_handshake_log_ms.compare_exchange_strong(last, now)) {
    beast::error_code unknown;
    const auto peer = stream_.socket().remote_endpoint(unknown);
    const auto who = unknown ? std::string("a client") : peer.address().to_string() + ":" + std::to_string(peer.port());
    const auto why = ec == beast::error::timeout
                         ? "no handshake within " + std::to_string(handshake_timeout.count()) + " s"
                         : ec.message();
    logger()->warn("http: TLS handshake with {} failed, connection closed: {}", who, why);
  }
  close();
}

void session::post_event(int choice, token_msg m) {
  net::post(stream_.get_executor(), [self = shared_from_this(), choice, m = std::move(m)]() mutable {
    self->on_event(choice, m);
  });
}

void session::read_header() {
  if (closed_) return;
  parser_.emplace();
  parser_->header_limit(header_limit);
  parser_->body_limit(static_cast<uint64_t>(core_->opts.server.max_body_bytes));
  endpoint_ = "other";
  cache_header_.clear();
  stream_.tcp().expires_after(idle_timeout);
  bhttp::async_read_header(stream_, buffer_, *parser_,
                           [self = shared_from_this()](beast::error_code ec, size_t) { self->on_header(ec); });
}

void session::on_header(beast::error_code ec) {
  if (ec) return on_read_error(ec);
  auto& req = parser_->get();
  version_ = req.version();
  keep_alive_ = req.keep_alive();
  if (parser_->is_done()) return handle();
  const auto expect = req[bhttp::field::expect];
  if (beast::iequals(expect, "100-continue")) {
    auto msg = std::make_shared<std::string>("HTTP/1.1 100 Continue\r\n\r\n");
    net::async_write(stream_, net::buffer(*msg), [self = shared_from_this(), msg](beast::error_code e, size_t) {
      if (e) return self->close();
      self->read_body();
    });
    return;
  }
  read_body();
}

void session::read_body() {
  if (closed_) return;
  bhttp::async_read(stream_, buffer_, *parser_,
                    [self = shared_from_this()](beast::error_code ec, size_t) { self->on_body(ec); });
}

void session::on_body(beast::error_code ec) {
  if (ec) return on_read_error(ec);
  handle();
}

void session::on_read_error(beast::error_code ec) {
  if (closed_) return;
  if (ec == bhttp::error::body_limit) {
    keep_alive_ = false;
    return respond_error(api_error(413, "the request body is larger than server.max_body_bytes (" +
                                            std::to_string(core_->opts.server.max_body_bytes) + " bytes)"),
                         true);
  }
  if (is_disconnect(ec) || ec == bhttp::error::partial_message) return close();
  keep_alive_ = false;
  respond_error(api_error(400, "malformed HTTP request: " + ec.message()), true);
}

void session::handle() {
  stream_.tcp().expires_never();
  const auto& req = parser_->get();
  try {
    route(req);
  } catch (const api_error& e) {
    respond_error(e);
  } catch (const std::exception& e) {
    logger()->error("http: {} {}: {}", std::string(req.method_string()), std::string(req.target()), e.what());
    respond_error(api_error(500, std::string("internal error: ") + e.what()));
  }
}

namespace {

/// Throws the 401/403 api_error of a refused verdict; `admin` names the admin key.
void refuse(access verdict, bool admin) {
  switch (verdict) {
    case access::allowed:
      return;
    case access::missing_key:
      throw api_error(401, std::string("missing ") + (admin ? "admin" : "API") +
                               " key: send the header 'Authorization: Bearer <key>'",
                      "", "invalid_api_key", "invalid_request_error");
    case access::wrong_key:
      throw api_error(401, admin ? "incorrect admin key provided (server.admin_keys)" : "incorrect API key provided",
                      "", "invalid_api_key", "invalid_request_error");
    case access::not_loopback:
      throw api_error(403,
                      "the admin API answers only clients on this host unless server.admin_keys is set",
                      "", "forbidden", "invalid_request_error");
  }
}

}  // namespace

void session::require_api_key(const bhttp::request<bhttp::string_body>& req) const {
  refuse(inference_access(core_->opts.server, std::string(req[bhttp::field::authorization])), false);
}

void session::require_admin_key(const bhttp::request<bhttp::string_body>& req) {
  beast::error_code ec;
  const auto peer = stream_.socket().remote_endpoint(ec);
  const bool loopback = !ec && peer.address().is_loopback();
  refuse(admin_access(core_->opts.server, std::string(req[bhttp::field::authorization]), loopback), true);
}

void session::route(const bhttp::request<bhttp::string_body>& req) {
  auto path = std::string(req.target());
  path = path.substr(0, path.find('?'));
  endpoint_ = endpoint_label(path);
  const auto method = req.method();
  const bool get = method == bhttp::verb::get;
  const auto need = [&](bool ok, const char* allowed) {
    if (!ok) throw api_error(405, "method " + std::string(req.method_string()) + " is not allowed on " + path +
                                      " (use " + allowed + ")");
  };
  if (path == "/health") {
    need(get, "GET");
    return respond(bhttp::status::ok, R"({"status":"ok"})", json_type);
  }
  if (path == "/ready") {
    need(get, "GET");
    const int ready = core_->have_router ? core_->ready_replicas.load() : 0;
    const nlohmann::json j = {{"ready", ready >= 1}, {"replicas_ready", ready}};
    return respond(ready >= 1 ? bhttp::status::ok : bhttp::status::service_unavailable, j.dump(), json_type);
  }
  if (path == "/metrics") {
    need(get, "GET");
    return respond(bhttp::status::ok, core_->opts.registry->render(), "text/plain; version=0.0.4; charset=utf-8");
  }
  if (path == "/admin/drain" || path == "/admin/nodes") return admin(req, path);
  const bool completions = path == "/v1/completions", chat = path == "/v1/chat/completions";
  const bool models = path == "/v1/models" || path.rfind("/v1/models/", 0) == 0;
  if (!completions && !chat && !models) throw api_error(404, "no such endpoint: " + path, "", "not_found");
  require_api_key(req);
  if (models) {
    need(get, "GET");
    if (path == "/v1/models")
      return respond(bhttp::status::ok, dump_json(models_body(core_->limits.model_name, core_->created)), json_type);
    const auto name = path.substr(std::string("/v1/models/").size());
    if (name != core_->limits.model_name)
      throw api_error(404, "The model '" + name + "' does not exist", "model", "model_not_found");
    return respond(bhttp::status::ok, dump_json(model_body(name, core_->created)), json_type);
  }
  need(method == bhttp::verb::post, "POST");
  start_generation(req);
}

void session::admin(const bhttp::request<bhttp::string_body>& req, const std::string& path) {
  require_admin_key(req);
  auto self = shared_from_this();
  std::function<void(const api_error&)> fail = [self](const api_error& e) {
    net::post(self->stream_.get_executor(), [self, e] { self->respond_error(e); });
  };
  auto answer = [self](bhttp::status status, nlohmann::json j) {
    net::post(self->stream_.get_executor(),
              [self, status, body = j.dump()] { self->respond(status, body, json_type); });
  };
  auto& sys = core_->bridge.home_system();
  if (path == "/admin/nodes") {
    if (req.method() != bhttp::verb::get)
      throw api_error(405, "method " + std::string(req.method_string()) + " is not allowed on " + path + " (use GET)");
    // The nodes, then the heads and gateways (roles_atom): one answer with all three.
    std::function<void(std::vector<node_view>&)> done = [answer, fail, sys = &sys](std::vector<node_view>& nodes) {
      auto body = nlohmann::json::object();
      body["nodes"] = nlohmann::json::array();
      for (const auto& n : nodes) body["nodes"].push_back(node_json(n));
      std::function<void(cluster_roles&)> with_roles = [answer, body](cluster_roles& roles) mutable {
        roles_json(roles, body);
        answer(bhttp::status::ok, std::move(body));
      };
      ask_supervisor<cluster_roles>(*sys, with_roles, fail, roles_atom::value);
    };
    return ask_supervisor<std::vector<node_view>>(sys, done, fail, nodes_atom::value);
  }
  if (req.method() != bhttp::verb::post)
    throw api_error(405, "method " + std::string(req.method_string()) + " is not allowed on " + path + " (use POST)");
  const auto [node, replace] = parse_drain_body(req.body());
  std::function<void(drain_reply&)> done = [answer, fail](drain_reply& r) {
    if (r.code != 202) return fail(api_error(r.code, r.error, r.code == 400 ? "node" : ""));
    answer(bhttp::status::accepted, {{"status", "draining"}, {"node", node_json(r.node)}});
  };
  // An actor of the head asks: the admin key was checked above (admin_access).
  ask_supervisor<drain_reply>(sys, done, fail, drain_atom::value, node, replace, std::string{});
}

void session::count_request(int status) {
  core_->metrics().requests.with({endpoint_, std::to_string(status)}).inc();
}

void session::respond(bhttp::status status, std::string body, const std::string& content_type, bool close,
                      const std::string& retry_after) {
  if (closed_) return;
  auto res = std::make_shared<bhttp::response<bhttp::string_body>>(status, version_);
  res->set(bhttp::field::server, "troupe");
  res->set(bhttp::field::content_type, content_type);
  if (!retry_after.empty()) res->set(bhttp::field::retry_after, retry_after);
  if (!cache_header_.empty()) res->set("X-Troupe-Cache", cache_header_);
  if (status == bhttp::status::method_not_allowed)
    res->set(bhttp::field::allow, endpoint_ == "/v1/completions" || endpoint_ == "/v1/chat/completions" || endpoint_ == "/admin/drain"
                                             ? "POST"
                                             : "GET");
  res->body() = std::move(body);
  res->keep_alive(keep_alive_ && !close);
  res->prepare_payload();
  count_request(static_cast<int>(status));
  bhttp::async_write(stream_, *res, [self = shared_from_this(), res](beast::error_code ec, size_t) {
    self->after_response(ec, !res->keep_alive());
  });
}

void session::respond_error(const api_error& e, bool close) {
  if (e.status >= 500 && e.status != 503) logger()->warn("http: {} answered {}: {}", endpoint_, e.status, e.what());
  respond(static_cast<bhttp::status>(e.status), dump_json(error_body(e)), json_type, close,
          e.status == 429 ? "1" : "");
}

void session::after_response(beast::error_code ec, bool close_after) {
  if (ec || close_after) return close();
  next_request();
}

void session::next_request() {
  if (closed_) return;
  if (watching_) {  // the disconnect watch is still reading: stop it, then read on
    resume_after_watch_ = true;
    beast::error_code ignored;
    stream_.socket().cancel(ignored);
    return;
  }
  read_header();
}

void session::watch() {
  if (watching_ || closed_ || buffer_.size() >= watch_limit) return;
  watching_ = true;
  stream_.async_read_some(buffer_.prepare(4096), [self = shared_from_this()](beast::error_code ec, size_t n) {
    self->on_watch(ec, n);
  });
}

void session::on_watch(beast::error_code ec, size_t n) {
  watching_ = false;
  if (!ec) buffer_.commit(n);
  if (resume_after_watch_) {
    resume_after_watch_ = false;
    if (ec && ec != net::error::operation_aborted) return close();
    return read_header();
  }
  if (!ec) return watch();  // pipelined bytes: keep them for the next request
  if (ec == net::error::operation_aborted || !call_) return;  // no call: the response write sees it
  client_gone();
}

void session::close() {
  if (closed_) return;
  closed_ = true;
  stream_.close();
}

}  // namespace troupe::http
