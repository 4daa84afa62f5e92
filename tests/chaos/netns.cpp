#include "chaos/netns.h"

#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <mutex>
#include <random>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace troupe::test::chaos {

namespace {

using steady = std::chrono::steady_clock;

/// Runs `cmd` with /bin/sh; its exit status and its output (stdout and stderr).
std::pair<int, std::string> shell(const std::string& cmd) {
  std::string out;
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return {-1, "popen failed: " + std::string(std::strerror(errno))};
  std::array<char, 512> buf{};
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  const int status = pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

/// Runs `cmd`; throws naming the command and its output when it fails.
void must(const std::string& cmd) {
  auto [code, out] = shell(cmd);
  if (code != 0)
    throw std::runtime_error("net_lab: '" + cmd + "' failed (exit " + std::to_string(code) + "): " + out);
}

/// Opens a non-persistent TAP device `name` (gone when the descriptor closes).
int open_tap(const std::string& name) {
  const int fd = ::open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) throw std::runtime_error("net_lab: cannot open /dev/net/tun: " + std::string(std::strerror(errno)));
  ifreq ifr{};
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
  std::strncpy(ifr.ifr_name, name.c_str(), IFNAMSIZ - 1);
  if (::ioctl(fd, TUNSETIFF, &ifr) != 0) {
    const std::string why = std::strerror(errno);
    ::close(fd);
    throw std::runtime_error("net_lab: cannot create TAP device " + name + ": " + why);
  }
  return fd;
}

/// Capability bits (linux/capability.h) that building a lab needs.
constexpr int cap_net_admin = 12, cap_sys_admin = 21;

/// This process's effective capability set (the CapEff line of /proc/self/status); 0 when
/// it cannot be read.
uint64_t effective_capabilities() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);)
    if (line.rfind("CapEff:", 0) == 0) return std::strtoull(line.c_str() + 7, nullptr, 16);
  return 0;
}

/// The path of the `ip` command; "" when none is installed.
std::string ip_tool() {
  for (const char* p : {"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"})
    if (::access(p, X_OK) == 0) return p;
  return "";
}

/// A name tag unique to this lab: the process id and a letter (interface names have at
/// most 15 characters: "trv" + tag + "-" + index fits).
std::string next_tag() {
  static std::atomic<int> n{0};
  return std::to_string(::getpid()) + static_cast<char>('a' + n++ % 26);
}

}  // namespace

/// Moves Ethernet frames between two TAP devices with a link_impairment (user-space netem).
class tap_forwarder {
 public:
  tap_forwarder(int a, int b, const link_impairment& imp) : fd_{a, b}, imp_(imp), rng_(imp.seed) {
    thread_ = std::thread([this] { loop(); });
  }
  ~tap_forwarder() {
    stop_ = true;
    thread_.join();
    ::close(fd_[0]);
    ::close(fd_[1]);
  }
  tap_forwarder(const tap_forwarder&) = delete;
  tap_forwarder& operator=(const tap_forwarder&) = delete;

  link_counters counters() const { return {forwarded_.load(), dropped_.load()}; }

 private:
  struct frame {
    steady::time_point due;
    std::vector<char> bytes;
  };

  /// When a frame read now is delivered; frames of one direction keep their order.
  steady::time_point due_time(int dir) {
    auto delay = std::chrono::duration<double, std::milli>(imp_.delay);
    if (imp_.jitter.count() > 0) {
      std::uniform_real_distribution<double> j(-static_cast<double>(imp_.jitter.count()),
                                               static_cast<double>(imp_.jitter.count()));
      delay += std::chrono::duration<double, std::milli>(j(rng_));
    }
    auto due = steady::now() + std::chrono::duration_cast<steady::duration>(delay);
    if (!queue_[dir].empty() && due < queue_[dir].back().due) due = queue_[dir].back().due;
    return due;
  }

  /// Reads every frame waiting on side `dir` and queues it for the other side (or drops it).
  void read_side(int dir) {
    std::uniform_real_distribution<double> u(0.0, 1.0);
    for (;;) {
      std::vector<char> buf(65536);
      const ssize_t n = ::read(fd_[dir], buf.data(), buf.size());
      if (n <= 0) return;
      if (imp_.loss > 0 && u(rng_) < imp_.loss) {
        ++dropped_;
        continue;
      }
      buf.resize(static_cast<size_t>(n));
      queue_[dir].push_back({due_time(dir), std::move(buf)});
    }
  }

  /// Writes the due frames of direction `dir` to the other side; the time until the next.
  int flush(int dir) {
    const auto now = steady::now();
    while (!queue_[dir].empty() && queue_[dir].front().due <= now) {
      const auto& f = queue_[dir].front().bytes;
      if (::write(fd_[1 - dir], f.data(), f.size()) == static_cast<ssize_t>(f.size())) ++forwarded_;
      queue_[dir].pop_front();
    }
    if (queue_[dir].empty()) return 5;
    const auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(queue_[dir].front().due - now).count();
    return static_cast<int>(std::max<int64_t>(0, std::min<int64_t>(wait, 5)));
  }

  void loop() {
    int timeout = 5;
    while (!stop_) {
      std::array<pollfd, 2> p{pollfd{fd_[0], POLLIN, 0}, pollfd{fd_[1], POLLIN, 0}};
      ::poll(p.data(), p.size(), timeout);
      for (int dir = 0; dir < 2; ++dir)
        if (p[static_cast<size_t>(dir)].revents & POLLIN) read_side(dir);
      timeout = std::min(flush(0), flush(1));
    }
  }

  std::array<int, 2> fd_;
  link_impairment imp_;
  std::mt19937_64 rng_;
  std::array<std::deque<frame>, 2> queue_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> forwarded_{0}, dropped_{0};
  std::thread thread_;
};

net_lab::net_lab(const std::vector<std::string>& hosts, const std::map<std::string, link_impairment>& impaired)
    : tag_(next_tag()), bridge_("trb" + tag_) {
  try {
    must("ip link add " + bridge_ + " type bridge");
    must("ip link set " + bridge_ + " up");
    for (size_t i = 0; i < hosts.size(); ++i) {
      const auto idx = std::to_string(i);
      host_link l;
      l.name = hosts[i];
      l.ns = "trp" + tag_ + "-" + idx;
      l.ip = "10.213.0." + std::to_string(i + 1);
      must("ip netns add " + l.ns);
      links_.push_back(std::move(l));
      auto& link = links_.back();
      std::string inner;
      if (auto it = impaired.find(hosts[i]); it != impaired.end()) {
        link.bridge_if = "trt" + tag_ + "-" + idx;
        inner = "trn" + tag_ + "-" + idx;
        const int outer_fd = open_tap(link.bridge_if);
        int inner_fd = -1;
        try {
          inner_fd = open_tap(inner);
        } catch (...) {
          ::close(outer_fd);
          throw;
        }
        link.forwarder = std::make_unique<tap_forwarder>(inner_fd, outer_fd, it->second);
      } else {
        link.bridge_if = "trv" + tag_ + "-" + idx;
        inner = "tri" + tag_ + "-" + idx;
        must("ip link add " + link.bridge_if + " type veth peer name " + inner);
      }
      must("ip link set " + inner + " netns " + link.ns);
      must("ip link set " + link.bridge_if + " master " + bridge_ + " up");
      must("ip -n " + link.ns + " addr add " + link.ip + "/24 dev " + inner);
      must("ip -n " + link.ns + " link set " + inner + " up");
      must("ip -n " + link.ns + " link set lo up");
    }
  } catch (...) {
    teardown();
    throw;
  }
}

net_lab::~net_lab() { teardown(); }

void net_lab::teardown() noexcept {
  for (auto& l : links_) {
    auto [code, pids] = shell("ip netns pids " + l.ns);
    std::istringstream in(pids);
    for (pid_t pid; code == 0 && in >> pid;) {
      ::kill(pid, SIGKILL);
      int status = 0;
      ::waitpid(pid, &status, 0);  // ours (spawned by the test), or not a child: returns at once
    }
  }
  for (auto& l : links_) l.forwarder.reset();  // closing the TAP descriptors removes the devices
  for (auto& l : links_) shell("ip link del " + l.bridge_if);
  shell("ip link del " + bridge_);
  for (auto& l : links_) shell("ip netns del " + l.ns);
  links_.clear();
}

std::string net_lab::missing_privilege() {
  std::vector<std::string> missing;
  if (::geteuid() != 0) missing.push_back("not root (effective uid " + std::to_string(::geteuid()) + ")");
  const uint64_t caps = effective_capabilities();
  if (!(caps & (uint64_t{1} << cap_net_admin))) missing.push_back("no CAP_NET_ADMIN");
  if (!(caps & (uint64_t{1} << cap_sys_admin))) missing.push_back("no CAP_SYS_ADMIN");
  if (ip_tool().empty()) missing.push_back("no `ip` command (iproute2) in /usr/sbin, /sbin or /usr/bin");
  std::string why;
  for (const auto& m : missing) why += (why.empty() ? "" : ", ") + m;
  return why;
}

const net_lab::host_link& net_lab::find(const std::string& host) const {
  for (const auto& l : links_)
    if (l.name == host) return l;
  throw std::invalid_argument("net_lab: no host named '" + host + "'");
}

std::string net_lab::ip(const std::string& host) const { return find(host).ip; }

std::vector<std::string> net_lab::exec_prefix(const std::string& host) const {
  return {ip_tool(), "netns", "exec", find(host).ns};
}

std::string net_lab::shell_prefix(const std::string& host) const { return "ip netns exec " + find(host).ns; }

void net_lab::cut(const std::string& host) { must("ip link set " + find(host).bridge_if + " down"); }

void net_lab::restore(const std::string& host) { must("ip link set " + find(host).bridge_if + " up"); }

std::vector<std::string> net_lab::namespaces() const {
  std::vector<std::string> out;
  for (const auto& l : links_) out.push_back(l.ns);
  return out;
}

link_counters net_lab::counters(const std::string& host) const {
  const auto& l = find(host);
  if (!l.forwarder) throw std::invalid_argument("net_lab: host '" + host + "' has no user-space netem link");
  return l.forwarder->counters();
}

}  // namespace troupe::test::chaos
