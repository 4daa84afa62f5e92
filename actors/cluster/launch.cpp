#include "actors/cluster/launch.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
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

extern char** environ;

namespace troupe {

// -- process_launcher -----------------------------------------------------------------------

namespace {

std::vector<char*> c_strings(std::vector<std::string>& v) {
  std::vector<char*> out;
  for (auto& s : v) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

/// The current environment with `extra` ("KEY=value") added or replaced.
std::vector<std::string> child_environment(const std::vector<std::string>& extra) {
  std::vector<std::string> env;
  for (char** e = environ; e && *e; ++e) {
    std::string entry = *e;
    const auto key = entry.substr(0, entry.find('=') + 1);
    bool replaced = false;
    for (const auto& x : extra) replaced = replaced || x.compare(0, key.size(), key) == 0;
    if (!replaced) env.push_back(std::move(entry));
  }
  env.insert(env.end(), extra.begin(), extra.end());
  return env;
}

/// Only async-signal-safe calls between fork and exec (the parent is multi-threaded).
[[noreturn]] void exec_child(char** argv, char** envp, int log_fd, int err_fd, pid_t parent,
                             bool die_with_parent) {
  if (die_with_parent) {
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(127);
  }
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  signal(SIGINT, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
  if (log_fd >= 0) {
    dup2(log_fd, STDOUT_FILENO);
    dup2(log_fd, STDERR_FILENO);
  }
  execve(argv[0], argv, envp);
  int err = errno;
  ssize_t ignored = write(err_fd, &err, sizeof err);
  (void)ignored;
  _exit(127);
}

}  // namespace

process_launcher::~process_launcher() { stop_all(std::chrono::milliseconds{500}); }

pid_t process_launcher::start(const std::string& name, const std::vector<std::string>& argv,
                              const launch_options& opts) {
  if (argv.empty()) throw std::runtime_error("cannot start " + name + ": empty command line");
  auto args = argv;
  auto env = child_environment(opts.extra_env);
  auto cargv = c_strings(args);
  auto cenv = c_strings(env);
  int log_fd = -1;
  if (!opts.log_path.empty()) {
    log_fd = ::open(opts.log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log_fd < 0)
      throw std::runtime_error("cannot start " + name + ": cannot open log file " +
                               opts.log_path + ": " + std::strerror(errno));
  }
  int err_pipe[2];
  if (pipe2(err_pipe, O_CLOEXEC) != 0) {
    if (log_fd >= 0) ::close(log_fd);
    throw std::runtime_error("cannot start " + name + ": pipe: " + std::strerror(errno));
  }
  const pid_t parent = getpid();
  std::lock_guard<std::mutex> lock(mutex_);
  const pid_t pid = fork();
  if (pid == 0) exec_child(cargv.data(), cenv.data(), log_fd, err_pipe[1], parent, opts.die_with_parent);
  const int fork_errno = errno;
  ::close(err_pipe[1]);
  if (log_fd >= 0) ::close(log_fd);
  if (pid < 0) {
    ::close(err_pipe[0]);
    throw std::runtime_error("cannot start " + name + ": fork: " + std::strerror(fork_errno));
  }
  int child_errno = 0;
  ssize_t n;
  do n = ::read(err_pipe[0], &child_errno, sizeof child_errno);
  while (n < 0 && errno == EINTR);
  ::close(err_pipe[0]);
  if (n == static_cast<ssize_t>(sizeof child_errno)) {
    waitpid(pid, nullptr, 0);
    throw std::runtime_error("cannot start " + name + ": cannot execute " + argv[0] + ": " +
                             std::strerror(child_errno));
  }
  children_.push_back({name, pid});
  return pid;
}

std::optional<child_exit> process_launcher::try_reap_locked(size_t index) {
  const auto c = children_[index];
  int status = 0;
  const pid_t r = waitpid(c.pid, &status, WNOHANG);
  if (r == 0 || (r < 0 && errno == EINTR)) return std::nullopt;
  children_.erase(children_.begin() + static_cast<std::ptrdiff_t>(index));
  if (r < 0) return child_exit{c.name, c.pid, 0, "was reaped elsewhere"};
  return child_exit{c.name, c.pid, status, describe_exit(status)};
}

std::vector<child_exit> process_launcher::reap() {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<child_exit> out;
  for (size_t i = children_.size(); i-- > 0;)
    if (auto ex = try_reap_locked(i)) out.push_back(std::move(*ex));
  return out;
}

bool process_launcher::signal(pid_t pid, int sig) {
  std::lock_guard<std::mutex> lock(mutex_);
  for (const auto& c : children_)
    if (c.pid == pid) return ::kill(pid, sig) == 0;
  return false;
}

std::optional<child_exit> process_launcher::wait(pid_t pid, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      size_t i = 0;
      while (i < children_.size() && children_[i].pid != pid) ++i;
      if (i == children_.size()) return std::nullopt;
      if (auto ex = try_reap_locked(i)) return ex;
    }
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds{2});
  }
}

std::optional<child_exit> process_launcher::kill_and_wait(pid_t pid) {
  signal(pid, SIGKILL);
  return wait(pid, std::chrono::milliseconds{5000});
}

std::vector<child_exit> process_launcher::stop_all(std::chrono::milliseconds grace) {
  std::vector<child_exit> out;
  auto pids = running();
  for (auto it = pids.rbegin(); it != pids.rend(); ++it) {
    signal(*it, SIGTERM);
    auto ex = wait(*it, grace);
    if (!ex) ex = kill_and_wait(*it);
    if (ex) out.push_back(std::move(*ex));
  }
  return out;
}

std::vector<child_exit> process_launcher::wait_all(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::vector<child_exit> out;
  for (;;) {
    for (auto& ex : reap()) out.push_back(std::move(ex));
    if (running().empty() || std::chrono::steady_clock::now() >= deadline) return out;
    std::this_thread::sleep_for(std::chrono::milliseconds{2});
  }
}

std::vector<pid_t> process_launcher::running() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<pid_t> pids;
  for (const auto& c : children_) pids.push_back(c.pid);
  return pids;
}

std::string describe_exit(int wait_status) {
  if (WIFEXITED(wait_status)) return "exited with status " + std::to_string(WEXITSTATUS(wait_status));
  if (WIFSIGNALED(wait_status)) {
    const int sig = WTERMSIG(wait_status);
    return "killed by signal " + std::to_string(sig) + " (" + strsignal(sig) + ")";
  }
  return "ended with wait status " + std::to_string(wait_status);
}

// -- host and launcher environment ----------------------------------------------------------

std::string self_executable() {
  char buf[PATH_MAX];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0)
    throw std::runtime_error(std::string("cannot read /proc/self/exe: ") + std::strerror(errno));
  return std::string(buf, static_cast<size_t>(n));
}

std::string local_host_name() {
  char buf[HOST_NAME_MAX + 1] = {};
  if (gethostname(buf, sizeof buf - 1) != 0) return "";
  return buf;
}

namespace {

int parse_env_int(const char* variable, const char* text, int min_value) {
  errno = 0;
  char* end = nullptr;
  const long v = std::strtol(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || v < min_value || v > INT_MAX)
    throw std::runtime_error(std::string("launcher variable ") + variable + "='" + text +
                             "' is not a number >= " + std::to_string(min_value));
  return static_cast<int>(v);
}

}  // namespace

bool is_local_host(const std::string& host) {
  if (host == "localhost" || host == "::1" || host == "0.0.0.0" || host.rfind("127.", 0) == 0)
    return true;
  const auto me = local_host_name();
  if (me.empty()) return false;
  return host == me || host == me.substr(0, me.find('.')) || me == host.substr(0, host.find('.'));
}

bool binds_here(const std::string& host) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* found = nullptr;
  if (host.empty() || ::getaddrinfo(host.c_str(), "0", &hints, &found) != 0) return false;
  bool ok = false;
  for (auto* a = found; a && !ok; a = a->ai_next) {
    const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    ok = ::bind(fd, a->ai_addr, a->ai_addrlen) == 0;
    ::close(fd);
  }
  ::freeaddrinfo(found);
  return ok;
}

std::string launcher_node_host(const node_section& n, const std::string& host_name) {
  const bool wildcard = n.host == "0.0.0.0" || n.host == "::" || n.host.empty();
  return !wildcard && binds_here(n.host) ? n.host : host_name;
}

std::optional<launcher_rank> detect_launcher_rank(
    const std::function<const char*(const char*)>& getenv_fn) {
  static const char* const pairs[][2] = {{"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"},
                                         {"PMI_RANK", "PMI_SIZE"},
                                         {"SLURM_PROCID", "SLURM_NTASKS"}};
  for (const auto& p : pairs) {
    const char* rank = getenv_fn(p[0]);
    if (!rank || !*rank) continue;
    const char* size = getenv_fn(p[1]);
    if (!size || !*size)
      throw std::runtime_error(std::string("launcher variable ") + p[0] + " is set but " + p[1] +
                               " is not");
    launcher_rank r{parse_env_int(p[0], rank, 0), parse_env_int(p[1], size, 1), p[0], p[1]};
    if (r.rank >= r.size)
      throw std::runtime_error(std::string(p[0]) + "=" + rank + " is not below " + p[1] + "=" +
                               size);
    return r;
  }
  return std::nullopt;
}

void check_launcher_size(const cluster_config& c, const launcher_rank& r) {
  const auto file = c.source.empty() ? std::string("<built in code>") : c.source;
  if (static_cast<size_t>(r.size) != c.nodes.size() + 1)
    throw std::runtime_error("the launcher started " + std::to_string(r.size) + " processes (" +
                             r.size_variable + "=" + std::to_string(r.size) +
                             ") but the cluster file " + file + " has " +
                             std::to_string(c.nodes.size()) + " node(s): start " +
                             std::to_string(c.nodes.size() + 1) +
                             " (rank 0 is the head, rank i is nodes[i-1])");
}

const node_section& node_for_rank(const cluster_config& c, const launcher_rank& r) {
  check_launcher_size(c, r);
  if (r.rank < 1) throw std::runtime_error("rank 0 is the head, not a node");
  return c.nodes[static_cast<size_t>(r.rank - 1)];
}

const node_section& find_node_section(const cluster_config& c, const std::string& name) {
  std::string names;
  for (const auto& n : c.nodes) {
    if (n.name == name) return n;
    names += (names.empty() ? "" : ", ") + n.name;
  }
  const auto file = c.source.empty() ? std::string("the cluster config") : c.source;
  throw std::runtime_error("unknown node '" + name + "': " + file + " has nodes: " +
                           (names.empty() ? "(none)" : names));
}

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
std::optional<supervisor_actor> connect_to_head(caf::actor_system& sys, const node_options& o,
                                                signal_guard& sigs, int& signal_out, std::size_t& next) {
  const auto heads = head_list(o.config);
  const auto wait = o.config.fault_tolerance.request_wait;
  const auto attempt = caf::timespan{std::max(o.config.fault_tolerance.heartbeat_timeout, std::chrono::milliseconds{1000})};
  const auto begin = std::chrono::steady_clock::now();
  auto backoff = std::chrono::milliseconds{50};
  for (;;) {
    for (std::size_t tried = 0; tried < heads.size(); ++tried) {
      const auto& head = heads[next % heads.size()];
      next = (next + 1) % heads.size();
      logger()->info("connecting to head at {}", endpoint(head.host, head.port));
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
    backoff = std::min(backoff * 2, std::chrono::milliseconds{1000});
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
