#include "actors/cluster/launch.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <deque>
#include <stdexcept>
#include <atomic>
#include <thread>

#include "actors/actor_system_config.h"
#include "actors/cluster/node_agent.h"
#include "actors/cluster/supervisor.h"
#include "actors/leadership/head_leadership.h"
#include "actors/leadership/head_state_setup.h"
#include "actors/link_connect.h"
#include "actors/link_security.h"

namespace troupe {

// -- process drivers ------------------------------------------------------------------------

namespace {

/// Blocks SIGINT/SIGTERM (and SIGUSR1, the wake-up of `wake`) in this thread and in every
/// thread started after it (the actor system's), so they can be taken synchronously.
class signal_guard {
 public:
  signal_guard() {
    sigemptyset(&set_);
    sigaddset(&set_, SIGINT);
    sigaddset(&set_, SIGTERM);
    sigaddset(&set_, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &set_, &old_);
  }
  ~signal_guard() { pthread_sigmask(SIG_SETMASK, &old_, nullptr); }
  signal_guard(const signal_guard&) = delete;
  signal_guard& operator=(const signal_guard&) = delete;

  /// SIGINT or SIGTERM if one arrived within `timeout`; 0 on timeout or wake-up.
  int wait(std::chrono::milliseconds timeout) {
    timespec ts{static_cast<time_t>(timeout.count() / 1000),
                static_cast<long>(timeout.count() % 1000) * 1000000L};
    const int sig = sigtimedwait(&set_, nullptr, &ts);
    return sig > 0 && sig != SIGUSR1 ? sig : 0;
  }

  /// Ends a `wait` early (from any thread).
  static void wake() { ::kill(getpid(), SIGUSR1); }

 private:
  sigset_t set_;
  sigset_t old_;
};

/// Sends every held actor an exit message when it goes out of scope (declare it after the
/// actor_system: published actors and timers otherwise block ~actor_system()).
struct actor_guard {
  std::vector<caf::actor> actors;
  ~actor_guard() {
    for (auto& a : actors) caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
  }
};

/// Why binding host:port fails, in the operating system's words ("Address already in use").
std::string explain_bind_failure(const std::string& host, uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return std::strerror(errno);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  std::string why = "not an IPv4 address of this host";
  if (::inet_pton(AF_INET, host == "localhost" ? "127.0.0.1" : host.c_str(), &addr.sin_addr) == 1)
    why = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 ? "" : std::strerror(errno);
  ::close(fd);
  return why;
}

std::string listen_error(const std::string& who, const std::string& host, uint16_t port,
                         const caf::actor_system& sys, const caf::error& err) {
  auto why = explain_bind_failure(host, port);
  if (why.empty()) why = sys.render(err);
  return who + ": cannot listen on " + endpoint(host, port) + ": " + why;
}

/// Events from the node agent to the node's main thread.
class event_queue {
 public:
  void push(node_event e, const std::string& detail) {
    std::lock_guard<std::mutex> lock(mutex_);
    events_.emplace_back(e, detail);
  }
  std::optional<std::pair<node_event, std::string>> pop() {
    std::lock_guard<std::mutex> lock(mutex_);
    if (events_.empty()) return std::nullopt;
    auto e = events_.front();
    events_.pop_front();
    return e;
  }

 private:
  std::mutex mutex_;
  std::deque<std::pair<node_event, std::string>> events_;
};

/// Connects to a head, retrying with backoff until request_wait has passed: the single
/// head, or (several heads) each in turn from `next` on, every attempt bounded (a paused head
/// never answers), until one has a supervisor published (the one that leads). nullopt when
/// a signal arrived meanwhile (stored in `signal_out`); `next` moves past the head found.
/// Several heads: the backoff stops at 200 ms (a standby that takes over is found within
/// that of its start; an attempt where nothing is published fails at once), and the
/// attempts are logged once a head and then every 5 s.
std::optional<supervisor_actor> connect_to_head(caf::actor_system& sys, const node_options& o,
                                                signal_guard& sigs, int& signal_out, std::size_t& next) {
  const auto heads = head_list(o.config);
  const auto wait = o.config.fault_tolerance.request_wait;
  const auto attempt = caf::timespan{std::max(o.config.fault_tolerance.heartbeat_timeout, std::chrono::milliseconds{1000})};
  const auto begin = std::chrono::steady_clock::now();
  const auto max_backoff = std::chrono::milliseconds{heads.size() > 1 ? 200 : 1000};
  auto backoff = std::chrono::milliseconds{50};
  auto logged = begin - std::chrono::seconds{10};
  for (;;) {
    const bool log = heads.size() == 1 || std::chrono::steady_clock::now() - logged >= std::chrono::seconds{5};
    if (log) logged = std::chrono::steady_clock::now();
    for (std::size_t tried = 0; tried < heads.size(); ++tried) {
      const auto& head = heads[next % heads.size()];
      next = (next + 1) % heads.size();
      if (log) logger()->info("connecting to head at {}", endpoint(head.host, head.port));
      auto sup = heads.size() == 1 ? connect_link<supervisor_actor>(sys, head.host, head.port)
                                   : connect_link_within<supervisor_actor>(sys, head.host, head.port, attempt);
      if (sup) return *sup;
      const auto spent = std::chrono::steady_clock::now() - begin;
      if (spent + backoff > wait)
        throw std::runtime_error(
            "node " + o.name + ": head unreachable at " + endpoint(head.host, head.port) + " after " +
            std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(spent).count()) +
            " ms (fault_tolerance.request_wait): " + sys.render(sup.error()));
    }
    if ((signal_out = sigs.wait(backoff)) != 0) return std::nullopt;
    backoff = std::min(backoff * 2, max_backoff);
  }
}

/// Logs how the links of this process are protected (a warning for plaintext links on an
/// address other hosts reach).
void log_links(const caf::actor_system& sys, const std::string& host) {
  bool warn = false;
  const auto line = links_notice(sys, host, warn);
  if (warn)
    logger()->warn("{}", line);
  else
    logger()->info("{}", line);
}

void unregister_node(caf::actor_system& sys, const node_agent_actor& agent) {
  caf::scoped_actor self{sys};
  self->request(agent, std::chrono::seconds{2}, unregister_atom::value)
      .receive([](caf::ok_atom) {}, [](caf::error&) {});
}

/// The head stops: its supervisor gives clients no router from now on (they try the other
/// heads at once instead of resuming on a router that is about to end). Waits until the
/// supervisor has taken it (the answer to a later request from the same sender), at most 1 s.
void withdraw_router(caf::actor_system& sys, const supervisor_actor& sup) {
  caf::scoped_actor self{sys};
  self->send(sup, router_atom::value, caf::actor{});
  self->request(sup, std::chrono::seconds{1}, lease_atom::value).receive([](uint64_t) {}, [](caf::error&) {});
}

}  // namespace

int run_head(const head_options& o) {
  init_logging(o.head_index ? "head " + std::to_string(*o.head_index) : "head");
  const auto head = o.head_index ? o.config.heads.at(*o.head_index) : o.config.head;
  signal_guard sigs;
  system_config cfg(o.config.fault_tolerance);
  use_tls(cfg, head_identity(o.config));
  caf::actor_system sys{cfg};
  std::unique_ptr<head_leadership> leadership;
  supervisor_options so;
  const auto state_dir = head_state_directory(o.config, o.head_index);
  state_replica_actor replica;  // a standby's copy of the leader's state
  actor_guard replica_guard;    // stops it on every way out
  if (o.head_index) {
    replica = publish_state_replica(sys, o.config, *o.head_index, *state_dir);
    if (replica) replica_guard.actors.push_back(caf::actor_cast<caf::actor>(replica));
    leadership = std::make_unique<head_leadership>(sys, o.config, *o.head_index, o.metrics.get());
    int sig = 0;
    const auto term = leadership->wait_to_lead([&] { return (sig = sigs.wait(std::chrono::milliseconds{50})) != 0; });
    if (!term) {
      logger()->info("received {} while standing by: exiting", strsignal(sig));
      return 0;
    }
    logger()->info("head {} leads with term {}: starting the supervisor", *o.head_index, *term);
    so.term = *term;
    so.head_index = *o.head_index;
  }
  // A head with no state_port never hears of another leader's changes: its own store may be
  // older than the cluster, so it places from the file (and still saves what it leads).
  const bool replicated = !o.head_index || o.config.heads[*o.head_index].state_port != 0;
  so.restored = state_to_lead_from(sys, o.config, replica, replicated ? state_dir : std::nullopt);
  so.recorder = make_head_state_recorder(sys, o.config, o.head_index, so.term, state_dir, so.restored, o.metrics);
  auto recorder = so.recorder;
  auto restored = so.restored;
  so.config = o.config;
  so.config_path = o.config_path;
  so.overrides = o.overrides;
  so.launch_local_nodes = o.launch_local_nodes;
  so.metrics = o.metrics;
  so.launcher = std::make_shared<process_launcher>();
  so.stop_wait = std::max(o.config.fault_tolerance.heartbeat_timeout, std::chrono::milliseconds{2000});
  auto launcher = so.launcher;
  const auto stop_wait = so.stop_wait;
  auto sup = spawn_supervisor(sys, std::move(so));
  actor_guard guard{{caf::actor_cast<caf::actor>(sup)}};
  auto port = publish_link(sys, sup, head.port, head.host);
  if (!port) throw std::runtime_error(listen_error("head", head.host, head.port, sys, port.error()));
  logger()->info("supervisor listening on {} ({} node(s) in {})", endpoint(head.host, *port),
                 o.config.nodes.size(), o.config_path);
  log_links(sys, head.host);
  caf::scoped_actor{sys}->send(sup, start_atom::value);  // a sender of this process: the head's own
  std::atomic<bool> stopping{false};
  head_context ctx{sys, caf::actor_cast<caf::actor>(sup), {}, stopping, std::move(restored), recorder};
  std::atomic<bool> main_done{false};
  int exit_code = 0;
  std::thread main_thread;
  if (o.main)
    main_thread = std::thread([&] {
      try {
        if (auto rc = o.main(ctx)) {
          exit_code = *rc;
          main_done = true;
        }
      } catch (const std::exception& e) {
        if (stopping) return;  // interrupted by the shutdown it was waiting on: not an error
        logger()->error("{}", e.what());
        exit_code = 1;
        main_done = true;
      }
    });
  int sig = 0;
  while ((sig = sigs.wait(std::chrono::milliseconds{50})) == 0 && !main_done) {
    if (auto why = leadership ? leadership->stepped_down() : std::nullopt) restart_as_standby(*why);
  }
  if (sig != 0) logger()->info("received {}: shutting down", strsignal(sig));
  stopping = true;
  if (main_thread.joinable()) main_thread.join();
  withdraw_router(sys, sup);
  for (auto& a : ctx.keep_alive) caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
  unpublish_link(sys, sup, *port);
  if (leadership)  // one of several heads: the nodes keep their shards for the next leader
    logger()->info("head {}: leaving the nodes running for the next leader (fault_tolerance.head_grace)",
                   *o.head_index);
  else {
    caf::scoped_actor self{sys};
    self->request(sup, stop_wait + std::chrono::seconds{1}, stop_atom::value)
        .receive([](caf::ok_atom) {},
                 [&](caf::error& e) { logger()->warn("stopping nodes: {}", sys.render(e)); });
  }
  caf::anon_send_exit(sup, caf::exit_reason::user_shutdown);
  if (recorder) recorder->stop();  // the latest state saved; the senders stop
  for (const auto& ex : launcher->wait_all(std::chrono::milliseconds{1000}))
    logger()->info("node {} (pid {}) {}", ex.name, ex.pid, ex.description);
  for (const auto& ex : launcher->stop_all(std::chrono::milliseconds{2000}))
    logger()->info("node {} (pid {}) {}", ex.name, ex.pid, ex.description);
  logger()->info("head stopped");
  return exit_code;
}

int run_node(const node_options& o) {
  const auto& node = find_node_section(o.config, o.name);
  init_logging("node " + node.name);
  const auto bind = o.bind_host.empty() ? node.host : o.bind_host;
  signal_guard sigs;
  event_queue events;
  system_config cfg(o.config.fault_tolerance);
  use_tls(cfg, node_identity(o.config, node));
  caf::actor_system sys{cfg};
  node_agent_options ao;
  ao.info = {node.name, static_cast<int32_t>(getpid()),
             o.advertise_host.empty() ? node.host : o.advertise_host, node.port, node.devices};
  ao.fault_tolerance = o.config.fault_tolerance;
  ao.model_path = o.config.model.path;
  ao.on_event = [&events](node_event e, const std::string& d) {
    events.push(e, d);
    signal_guard::wake();
  };
  auto agent = spawn_node_agent(sys, std::move(ao));
  actor_guard guard{{caf::actor_cast<caf::actor>(agent)}};
  auto port = publish_link(sys, agent, node.port, bind);
  if (!port)
    throw std::runtime_error(listen_error("node " + node.name, bind, node.port, sys, port.error()));
  logger()->info("node agent listening on {} (pid {})", endpoint(bind, *port), getpid());
  log_links(sys, bind);
  if (node.voter_port != 0 && o.config.heads.size() > 1)  // a voter of the heads' election
    guard.actors.push_back(publish_lease_voter(sys, bind, node.voter_port, o.config.leadership,
                                               "node " + node.name + " (nodes[].voter_port)"));
  const auto heads = head_list(o.config);
  std::size_t next_head = 0;
  for (;;) {
    int sig = 0;
    auto sup = connect_to_head(sys, o, sigs, sig, next_head);
    if (!sup) {
      logger()->info("received {} while connecting: exiting", strsignal(sig));
      return 0;
    }
    const auto& at = heads[(next_head + heads.size() - 1) % heads.size()];  // the head found
    const auto head = endpoint(at.host, at.port);
    caf::scoped_actor{sys}->send(agent, attach_atom::value, *sup);  // attach comes from this process only
    for (bool attached = true; attached;) {
      if ((sig = sigs.wait(std::chrono::milliseconds{200})) != 0) {
        logger()->info("received {}: unregistering", strsignal(sig));
        unregister_node(sys, agent);
        return 0;
      }
      while (auto ev = events.pop()) {
        switch (ev->first) {
          case node_event::registered:
            logger()->info("registered with head at {}{}", head, ev->second.empty() ? "" : " (" + ev->second + ")");
            break;
          case node_event::rejected:
            throw std::runtime_error("node " + node.name + ": the head at " + head +
                                     " refused the registration: " + ev->second);
          case node_event::head_lost:
            logger()->warn("lost the head at {} ({}): reconnecting", head, ev->second);
            attached = false;
            break;
          case node_event::stop_requested:
            logger()->info("stopped by the head");
            return 0;
        }
      }
    }
  }
}

}  // namespace troupe
