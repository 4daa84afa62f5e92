#pragma once
/// A real redis-server (Debian's) for the response cache tests: started on a reserved
/// free port with no persistence, killed (SIGKILL) on demand or at the end.
#include <hiredis/hiredis.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "test_support.h"

extern char** environ;

namespace troupe::test {

/// One redis-server child process.
class redis_server {
 public:
  /// The redis-server on PATH ("" = none: the caller skips).
  static std::string binary() {
    const char* path = std::getenv("PATH");
    std::string dirs = path ? path : "/usr/bin:/bin";
    size_t start = 0;
    while (start <= dirs.size()) {
      const size_t end = dirs.find(':', start);
      const auto dir = dirs.substr(start, end == std::string::npos ? std::string::npos : end - start);
      const auto candidate = std::filesystem::path(dir.empty() ? "." : dir) / "redis-server";
      if (::access(candidate.c_str(), X_OK) == 0) return candidate.string();
      if (end == std::string::npos) break;
      start = end + 1;
    }
    return "";
  }

  /// Starts one on a reserved port; running() says whether it answers PING.
  redis_server() : port_(reserve_ports(1)) { start(); }
  ~redis_server() { kill(); }
  redis_server(const redis_server&) = delete;
  redis_server& operator=(const redis_server&) = delete;

  /// (Re)starts the server on the same port; true once it answers PING (3 s at most).
  bool start() {
    const auto bin = binary();
    if (bin.empty()) return false;
    const std::string port = std::to_string(port_);
    std::vector<std::string> args = {bin,  "--port",       port, "--bind",     "127.0.0.1", "--save",
                                     "",   "--appendonly", "no", "--loglevel", "warning",   "--daemonize",
                                     "no", "--protected-mode", "no"};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    const int rc = posix_spawn(&pid_, bin.c_str(), &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) {
      pid_ = -1;
      return false;
    }
    for (int i = 0; i < 150; ++i) {
      if (ping()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  }

  /// SIGKILL, as a crash would.
  void kill() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    ::kill(pid_, SIGCONT);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

  /// SIGSTOP: it accepts connections (the kernel does) but answers nothing, as a hung server.
  void pause() {
    if (pid_ > 0) ::kill(pid_, SIGSTOP);
  }
  /// SIGCONT after pause().
  void resume() {
    if (pid_ > 0) ::kill(pid_, SIGCONT);
  }

  /// Whether it answers PING now.
  bool ping() const { return command("PING") == "PONG"; }

  /// One command's reply as text (a string, status, integer or the second element of
  /// an array, as CONFIG GET answers); "" when it does not answer.
  std::string command(const std::string& cmd) const {
    timeval tv{0, 200000};
    redisContext* c = redisConnectWithTimeout("127.0.0.1", port_, tv);
    std::string out;
    if (c && !c->err) {
      redisSetTimeout(c, tv);
      auto* r = static_cast<redisReply*>(redisCommand(c, cmd.c_str()));
      if (r) {
        if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS) out.assign(r->str, r->len);
        if (r->type == REDIS_REPLY_INTEGER) out = std::to_string(r->integer);
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 2) out.assign(r->element[1]->str, r->element[1]->len);
        freeReplyObject(r);
      }
    }
    if (c) redisFree(c);
    return out;
  }

  /// Its port.
  int port() const { return port_; }
  /// redis://127.0.0.1:<port>
  std::string url() const { return "redis://127.0.0.1:" + std::to_string(port_); }

 private:
  int port_;
  pid_t pid_ = -1;
};

}  // namespace troupe::test
