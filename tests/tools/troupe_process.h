#pragma once
/// Running the troupe command from tests: to completion (exit code, stdout, stderr), or
/// in the background in a process group of its own, and watching its processes in /proc.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "test_support.h"

extern char** environ;

namespace troupe::test {

/// The troupe executable of this build.
inline std::string troupe_exe() { return (binary_dir() / "bin" / "troupe").string(); }

/// What a finished troupe command gave.
struct cli_result {
  int code = -1;    ///< exit status (-1 when killed by a signal)
  std::string out;  ///< stdout
  std::string err;  ///< stderr (logs and error messages)
};

/// The whole text of `path` ("" when missing).
inline std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

/// Runs the shell command `cmd` to completion; stderr goes through `err_file`.
inline cli_result run_command(const std::string& cmd_line, const std::filesystem::path& err_file) {
  const std::string cmd = cmd_line + " 2>" + err_file.string();
  cli_result r;
  FILE* p = popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  std::array<char, 4096> buf{};
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  const int status = pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.err = read_text(err_file);
  return r;
}

/// Runs `troupe <args>` (shell syntax) to completion; stderr goes through `err_file`.
inline cli_result run_troupe(const std::string& args, const std::filesystem::path& err_file) {
  return run_command(troupe_exe() + " " + args, err_file);
}

/// Starts `argv` (argv[0] a path) in a new process group with stdout and stderr
/// appended to `log` and `extra_env` ("KEY=value") added to the environment.
inline pid_t spawn_background(const std::vector<std::string>& argv, const std::filesystem::path& log,
                              const std::vector<std::string>& extra_env = {}) {
  std::vector<std::string> env_strings;
  for (char** e = environ; e && *e; ++e) env_strings.emplace_back(*e);
  env_strings.insert(env_strings.end(), extra_env.begin(), extra_env.end());
  std::vector<char*> args, env;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  for (const auto& e : env_strings) env.push_back(const_cast<char*>(e.c_str()));
  env.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
  posix_spawnattr_setpgroup(&attr, 0);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, args[0], &actions, &attr, args.data(), env.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  REQUIRE(rc == 0);
  return pid;
}

/// Waits up to `timeout` for child `pid` to exit; its wait status, or nullopt.
inline std::optional<int> wait_exit(pid_t pid, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == pid) return status;
    if (std::chrono::steady_clock::now() > deadline) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

/// Field `index` (1-based, as in proc(5)) of /proc/<pid>/stat; "" when gone.
inline std::string proc_stat_field(pid_t pid, int index) {
  const auto text = read_text("/proc/" + std::to_string(pid) + "/stat");
  const auto paren = text.rfind(')');
  if (paren == std::string::npos) return "";
  std::istringstream rest(text.substr(paren + 2));
  std::string field;
  for (int i = 3; i <= index && rest >> field; ++i) {
  }
  return field;
}

/// True while `pid` exists and is not a zombie.
inline bool process_alive(pid_t pid) {
  const auto state = proc_stat_field(pid, 3);
  return !state.empty() && state != "Z";
}

/// Live processes whose parent is `parent`.
inline std::vector<pid_t> children_of(pid_t parent) {
  std::vector<pid_t> out;
  for (const auto& e : std::filesystem::directory_iterator("/proc")) {
    const auto name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    const pid_t pid = std::stoi(name);
    if (proc_stat_field(pid, 4) == std::to_string(parent) && process_alive(pid)) out.push_back(pid);
  }
  return out;
}

/// Live processes whose command line contains `needle` (a unique argument of a test).
inline std::vector<pid_t> processes_with_argument(const std::string& needle) {
  std::vector<pid_t> out;
  for (const auto& e : std::filesystem::directory_iterator("/proc")) {
    const auto name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    auto cmdline = read_text(e.path() / "cmdline");
    for (auto& ch : cmdline)
      if (ch == '\0') ch = ' ';
    if (cmdline.find(needle) != std::string::npos && process_alive(std::stoi(name)))
      out.push_back(std::stoi(name));
  }
  return out;
}

/// Waits up to `timeout` until `log` contains `text`; false when it did not, or when
/// `pid` exited first.
inline bool wait_for_log(const std::filesystem::path& log, const std::string& text, pid_t pid,
                         std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (read_text(log).find(text) != std::string::npos) return true;
    if (!process_alive(pid)) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

}  // namespace troupe::test
