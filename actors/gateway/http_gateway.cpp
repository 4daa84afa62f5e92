#include "actors/gateway/http_gateway.h"

#include <sys/resource.h>

#include <future>
#include <thread>

#include "actors/actor_system_config.h"
#include "actors/gateway/http_auth.h"
#include "actors/gateway/http_session.h"
#include "runtime/model/model.h"

namespace troupe {

namespace {

using namespace troupe::http;

/// The CAF side of the gateway: the client of the router for every HTTP request.
struct bridge_state {
  /// The router (set_router), or a client actor in front of it (set_client): both take the
  /// same generate, cancel and status messages. Null until one is set.
  caf::actor router;
  std::shared_ptr<gateway_core> core;  ///< where events go
  static inline const char* name = "troupe.http_bridge";
};

void fail_unrouted(gateway_core& core, uint64_t id, const std::string& why) {
  token_msg m;
  m.request = id;
  m.finished = true;
  m.finish_reason = "error";
  m.error = why;
  core.hub.deliver(std::move(m));
}

caf::behavior bridge_impl(caf::stateful_actor<bridge_state>* self, std::shared_ptr<gateway_core> core,
                          std::chrono::milliseconds interval) {
  self->state.core = std::move(core);
  self->send(self, sweep_atom::value);
  return {
      [self](router_atom, const caf::actor& r) {
        self->state.router = r;
        self->state.core->have_router = true;
        self->send(self, sweep_atom::value);
      },
      [self](generate_atom, uint64_t id, generate_request& req) {
        auto& st = self->state;
        if (!st.router) return fail_unrouted(*st.core, id, "no router yet: the cluster is still starting");
        self->send(st.router, generate_atom::value, id, std::move(req), caf::actor_cast<caf::actor>(self));
      },
      [self](cancel_atom, uint64_t id) {
        auto& st = self->state;
        st.core->hub.remove(id);
        if (st.router) self->send(st.router, cancel_atom::value, id, caf::actor_cast<caf::actor>(self));
      },
      [self](token_atom, token_msg& m) { self->state.core->hub.deliver(std::move(m)); },
      [self, interval](sweep_atom) {
        auto& st = self->state;
        if (st.router)
          self->request(st.router, std::max(interval * 5, std::chrono::milliseconds(1000)), status_atom::value)
              .then([self](const router_status& s) { self->state.core->ready_replicas = s.ready; },
                    [self](caf::error&) { self->state.core->ready_replicas = 0; });
        self->delayed_send(self, interval, sweep_atom::value);
      },
  };
}

/// Lets this process hold as many sockets as its hard limit allows (floods of clients).
void raise_file_limit() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= rl.rlim_max) return;
  rl.rlim_cur = rl.rlim_max;
  setrlimit(RLIMIT_NOFILE, &rl);
}

}  // namespace

struct http_gateway::impl {
  caf::actor_system& sys;
  std::shared_ptr<gateway_core> core = std::make_shared<gateway_core>();
  net::io_context ioc{2};
  std::optional<net::executor_work_guard<net::io_context::executor_type>> work;
  tcp::acceptor acceptor{net::make_strand(ioc)};
  net::steady_timer retry{acceptor.get_executor()};
  std::vector<std::thread> threads;
  uint16_t port = 0;
  bool started = false;
  bool stopped = false;
  std::chrono::steady_clock::time_point last_refusal_log{};

  explicit impl(caf::actor_system& s) : sys(s) {}

  void accept() {
    acceptor.async_accept(net::make_strand(ioc), [this](beast::error_code ec, tcp::socket socket) {
      on_accept(ec, std::move(socket));
    });
  }

  void on_accept(beast::error_code ec, tcp::socket socket) {
    if (ec == net::error::operation_aborted || !acceptor.is_open()) return;
    if (ec) {  // out of file descriptors, most likely: back off instead of spinning
      log_refusal("accept failed: " + ec.message());
      retry.expires_after(std::chrono::milliseconds(50));
      retry.async_wait([this](beast::error_code e) {
        if (!e && acceptor.is_open()) accept();
      });
      return;
    }
    if (core->connections.load() >= core->max_connections) {
      log_refusal("refusing a connection: " + std::to_string(core->max_connections) + " are open");
      beast::error_code ignored;
      socket.shutdown(tcp::socket::shutdown_both, ignored);
      socket.close(ignored);
    } else {
      beast::error_code ignored;
      socket.set_option(tcp::no_delay(true), ignored);
      std::make_shared<session>(std::move(socket), core)->run();
    }
    accept();
  }

  void log_refusal(const std::string& what) {
    const auto now = std::chrono::steady_clock::now();
    if (now - last_refusal_log < std::chrono::seconds(1)) return;
    last_refusal_log = now;
    logger()->warn("http: {}", what);
  }

  void close_acceptor() {
    std::promise<void> done;
    net::dispatch(acceptor.get_executor(), [this, &done] {
      beast::error_code ignored;
      acceptor.close(ignored);
      retry.cancel();
      done.set_value();
    });
    if (!threads.empty()) done.get_future().wait();
  }
};

http_gateway::http_gateway(caf::actor_system& sys, gateway_options opts) : impl_(std::make_unique<impl>(sys)) {
  if (!opts.served) throw std::invalid_argument("http gateway: no model (tokenizer) given");
  if (!opts.registry) opts.registry = std::make_shared<metrics::registry>();
  if (!opts.metrics) opts.metrics = std::make_shared<troupe_metrics>(*opts.registry);
  if (opts.max_context <= 0) opts.max_context = opts.served->config().max_context;
  auto& core = *impl_->core;
  core.limits.model_name = opts.model_name;
  core.limits.max_n = opts.server.max_n;
  core.limits.defaults = opts.generation;
  core.limits.max_tokens_default = opts.server.max_tokens_default;
  core.max_connections =
      opts.max_connections > 0 ? opts.max_connections : 2 * opts.server.max_queue_requests + 10000;
  core.cache = make_response_cache(opts.cache, *opts.registry);
  core.tls_context = make_tls_context(opts.tls);
  core.created = std::chrono::duration_cast<std::chrono::seconds>(
                     std::chrono::system_clock::now().time_since_epoch()).count();
  core.opts = std::move(opts);
}

http_gateway::~http_gateway() { stop(); }

void http_gateway::start() {
  auto& d = *impl_;
  if (d.started) return;
  const auto& s = d.core->opts.server;
  raise_file_limit();
  beast::error_code ec;
  const auto address = net::ip::make_address(s.host == "localhost" ? "127.0.0.1" : s.host, ec);
  if (ec) throw std::runtime_error("http: cannot listen on " + endpoint(s.host, s.port) + ": not an IP address");
  const tcp::endpoint ep{address, s.port};
  d.acceptor.open(ep.protocol(), ec);
  if (!ec) d.acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) d.acceptor.bind(ep, ec);
  if (!ec) d.acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec) throw std::runtime_error("http: cannot listen on " + endpoint(s.host, s.port) + ": " + ec.message());
  d.port = d.acceptor.local_endpoint().port();
  d.core->bridge = d.sys.spawn(bridge_impl, d.core, d.core->opts.status_interval);
  d.started = true;
  d.work.emplace(d.ioc.get_executor());
  d.accept();
  const int n = std::max(1, std::min(d.core->opts.threads, 8));
  for (int i = 0; i < n; ++i) d.threads.emplace_back([&d] { d.ioc.run(); });
  logger()->info("http: listening on {}", endpoint(s.host, d.port));
  logger()->info("http: {}", describe(d.core->opts.tls));
  if (!d.core->opts.tls.warning.empty()) logger()->warn("http: {}", d.core->opts.tls.warning);
  if (const auto w = exposure_warning(s); !w.empty()) logger()->warn("http: {}", w);
}

uint16_t http_gateway::port() const { return impl_->port; }

void http_gateway::set_router(const router_actor& router) {
  if (!impl_->core->bridge) throw std::logic_error("http gateway: set_router before start");
  caf::anon_send(impl_->core->bridge, router_atom::value, caf::actor_cast<caf::actor>(router));
}

void http_gateway::set_client(const client_actor& client) {
  if (!impl_->core->bridge) throw std::logic_error("http gateway: set_client before start");
  caf::anon_send(impl_->core->bridge, router_atom::value, caf::actor_cast<caf::actor>(client));
}

void http_gateway::drain(std::chrono::milliseconds timeout) {
  auto& d = *impl_;
  if (!d.started || d.stopped) return;
  d.core->draining = true;
  d.close_acceptor();
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (d.core->queued_requests() > 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
}

void http_gateway::stop() {
  auto& d = *impl_;
  if (!d.started || d.stopped) return;
  d.stopped = true;
  d.core->draining = true;
  d.close_acceptor();
  d.core->hub.close();
  d.work.reset();
  d.ioc.stop();
  for (auto& t : d.threads) t.join();
  d.threads.clear();
  caf::anon_send_exit(d.core->bridge, caf::exit_reason::user_shutdown);
}

int64_t http_gateway::queued_requests() const { return impl_->core->queued_requests(); }

}  // namespace troupe
