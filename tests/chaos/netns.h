#pragma once
/// Network chaos plumbing: hosts as Linux network namespaces on one bridge, a link per
/// host that can be cut and restored, and links with latency, jitter and loss.
///
/// This kernel has no `sch_netem` (and no tc classifiers), so an impaired link is a pair
/// of TAP devices (one in the host's namespace, one on the bridge) with a forwarder
/// thread in the test process that delays, jitters and drops Ethernet frames: netem in
/// user space. Plain links are veth pairs. Everything (namespaces, links, bridge,
/// forwarders, and processes left in the namespaces) is removed by the destructor, also
/// when a test fails. Needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) and the `ip` command.
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace troupe::test::chaos {

/// What a user-space netem link does to every frame, in each direction.
struct link_impairment {
  std::chrono::milliseconds delay{0};   ///< added one-way latency
  std::chrono::milliseconds jitter{0};  ///< latency varies uniformly by +- this
  double loss = 0.0;                    ///< probability that a frame is dropped
  uint64_t seed = 1;                    ///< seeds the drop and jitter draws
};

/// Frames a user-space netem link forwarded and dropped (both directions).
struct link_counters {
  uint64_t forwarded = 0;  ///< frames delivered
  uint64_t dropped = 0;    ///< frames dropped by the loss draw
};

class tap_forwarder;

/// Hosts in network namespaces, joined by a bridge in the root namespace.
class net_lab {
 public:
  /// Creates one namespace per name in `hosts` (addresses 10.213.0.1, .2, ... in host
  /// order) and links them to a fresh bridge; hosts in `impaired` get a user-space netem
  /// link. Throws std::runtime_error naming the command that failed (and undoes what it
  /// created).
  explicit net_lab(const std::vector<std::string>& hosts,
                   const std::map<std::string, link_impairment>& impaired = {});
  ~net_lab();
  net_lab(const net_lab&) = delete;
  net_lab& operator=(const net_lab&) = delete;

  /// "" when this process has what building a lab takes: effective root with
  /// CAP_NET_ADMIN and CAP_SYS_ADMIN (`ip netns add` mounts), and the `ip` command; else
  /// which of them is missing. Only these may make a scenario skip: any other error while
  /// building a lab is thrown by the constructor and fails the test.
  static std::string missing_privilege();

  /// The IPv4 address of `host`.
  std::string ip(const std::string& host) const;
  /// The command prefix that runs a program inside `host`'s namespace.
  std::vector<std::string> exec_prefix(const std::string& host) const;
  /// The same prefix as one shell word list ("ip netns exec NAME").
  std::string shell_prefix(const std::string& host) const;
  /// Cuts `host`'s link (its bridge-side interface goes down): nothing gets in or out.
  void cut(const std::string& host);
  /// Brings a cut link back.
  void restore(const std::string& host);
  /// Frames forwarded and dropped so far on `host`'s user-space netem link.
  link_counters counters(const std::string& host) const;
  /// The names of this lab's namespaces, in host order (unique to this lab).
  std::vector<std::string> namespaces() const;
  /// The name of this lab's bridge in the root namespace.
  const std::string& bridge() const { return bridge_; }

 private:
  struct host_link {
    std::string name;       // host name
    std::string ns;         // namespace name
    std::string ip;         // 10.213.0.N
    std::string bridge_if;  // the link's interface on the bridge (root namespace)
    std::unique_ptr<tap_forwarder> forwarder;  // set on impaired links
  };
  const host_link& find(const std::string& host) const;
  void teardown() noexcept;

  std::string tag_;      // unique per test process: names are "<prefix><tag>-<i>"
  std::string bridge_;   // bridge name
  std::vector<host_link> links_;
};

}  // namespace troupe::test::chaos
