// process_launcher (actors/cluster/launch.h): the head's child processes (local nodes).
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <thread>

#include "actors/cluster/launch.h"

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

}  // namespace troupe
