#pragma once
/// Several heads, nodes that vote and keep their shards, and HTTP gateways apart, as real
/// processes: the fixture of issue 15's chaos tests with several heads
/// (tests/chaos/test_gateway_heads.cpp, test_head_chaos.cpp, test_head_chaos_acceptance.cpp).
/// One `troupe serve --head-index I` per entry of `heads:`, one `troupe node` per node
/// (`launch: false`, a lease voter, shards kept for `fault_tolerance.head_grace`), one
/// `troupe gateway --index J` per gateway, on reserved ports; optionally each process in a
/// host (network namespace) of a net_lab. Every log lies in one scratch directory; every
/// process still running is killed when the fixture goes.
#include <signal.h>

#include <functional>

#include "chaos/cluster_run.h"
#include "chaos/netns.h"

namespace troupe::test::chaos {

/// Milliseconds from `from` to `to`, for the tests' printed measurements.
inline long long elapsed_ms(std::chrono::steady_clock::time_point from, std::chrono::steady_clock::time_point to) {
  return static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(to - from).count());
}

/// What a head_cluster runs.
struct head_cluster_spec {
  std::string config = "cluster-config/examples/pipeline2.yaml";  ///< cluster file, under the source tree
  std::vector<std::string> nodes = {"stage0", "stage1"};          ///< its `nodes:` names, in file order
  int heads = 2;                                                  ///< entries of `heads:`
  int gateways = 0;                                               ///< entries of `gateways:`
  std::string lease_duration = "1500ms";                          ///< leadership.lease_duration
  std::string connection_timeout = "3s";                          ///< fault_tolerance.connection_timeout
  std::string extra;                                              ///< more --set flags, for every process
  /// When set, every process runs in a host of this lab: host_of("head0"), host_of(node
  /// name), host_of("gateway0"), host_of("client"); the cluster file's hosts are set to
  /// the lab's addresses. Unset: everything on 127.0.0.1.
  net_lab* lab = nullptr;
  std::function<std::string(const std::string&)> host_of;
};

/// A running cluster of several heads (see the file comment).
class head_cluster {
 public:
  /// Starts the nodes, head 0 (until it serves with a ready replica), then the other heads
  /// (each until it follows head 0) and the gateways (each until it serves through the
  /// leader's router). FAILs with every log when one of them does not.
  head_cluster(head_cluster_spec spec, const std::string& dir_name)
      : spec_(std::move(spec)), dir_(scratch_dir(dir_name)),
        base_(reserve_ports(2 * spec_.heads + 2 * static_cast<int>(spec_.nodes.size()) + spec_.gateways)) {
    sets_ = " --config " + (source_dir() / spec_.config).string() + " --set head.host=" + host("head0") +
            " --set head.port=" + std::to_string(head_port(0)) + " --set server.port=0" +
            " --set server.model_name=smol --set fault_tolerance.head_grace=60s" +
            " --set leadership.lease_duration=" + spec_.lease_duration +
            " --set fault_tolerance.connection_timeout=" + spec_.connection_timeout +
            // The heads' replicated state in this run's scratch, never in the working
            // directory, where another case's heads (same cluster file) would find it.
            " --set leadership.state_dir=" + (dir_ / "state").string();
    for (int i = 0; i < spec_.heads; ++i) {
      // The whole entry at once: head: must equal heads[0] after every single --set.
      sets_ += " --set 'heads[" + std::to_string(i) + "]={host: " + host("head" + std::to_string(i)) +
               ", port: " + std::to_string(head_port(i)) + ", voter_port: " + std::to_string(head_port(i) + 1) + "}'";
    }
    for (size_t k = 0; k < spec_.nodes.size(); ++k) {
      const auto at = " --set nodes[" + std::to_string(k) + "].";
      const int port = base_ + 2 * spec_.heads + 2 * static_cast<int>(k);
      sets_ += at + "host=" + host(spec_.nodes[k]) + at + "port=" + std::to_string(port) + at +
               "voter_port=" + std::to_string(port + 1) + at + "launch=false";
    }
    for (int j = 0; j < spec_.gateways; ++j) {
      const auto at = " --set gateways[" + std::to_string(j) + "].";
      sets_ += at + "host=" + host("gateway" + std::to_string(j)) + at + "port=" + std::to_string(http_port(j));
    }
    sets_ += spec_.extra;
    start();
  }
  ~head_cluster() {
    for (auto* pids : {&heads_, &nodes_, &gateways_})
      for (pid_t p : *pids)
        if (p > 0) kill(p, SIGKILL), wait_exit(p, std::chrono::seconds(5));
  }
  head_cluster(const head_cluster&) = delete;
  head_cluster& operator=(const head_cluster&) = delete;

  /// The scratch directory of this run.
  const std::filesystem::path& dir() const { return dir_; }
  /// Head i's log (of its latest start: start_head writes a new one).
  std::filesystem::path head_log(int i) const {
    const auto n = head_starts_.at(static_cast<size_t>(i));
    return dir_ / ("head" + std::to_string(i) + (n > 1 ? "-start" + std::to_string(n) : "") + ".log");
  }
  std::filesystem::path node_log(const std::string& name) const { return dir_ / (name + ".log"); }
  std::filesystem::path gateway_log(int j) const { return dir_ / ("gateway" + std::to_string(j) + ".log"); }
  /// The node names, in file order.
  const std::vector<std::string>& nodes() const { return spec_.nodes; }
  pid_t head_pid(int i) const { return heads_.at(static_cast<size_t>(i)); }
  pid_t gateway_pid(int j) const { return gateways_.at(static_cast<size_t>(j)); }
  /// Gateway j's HTTP port (on its host's address).
  uint16_t http_port(int j) const {
    return static_cast<uint16_t>(base_ + 2 * spec_.heads + 2 * static_cast<int>(spec_.nodes.size()) + j);
  }
  /// "HOST:PORT" of head i's supervisor.
  std::string head_address(int i) const { return host("head" + std::to_string(i)) + ":" + std::to_string(head_port(i)); }
  /// " --head H0,H1,..." for `troupe generate`: it tries every head.
  std::string head_flag() const {
    std::string f = " --head ";
    for (int i = 0; i < spec_.heads; ++i) f += (i ? "," : "") + head_address(i);
    return f;
  }

  /// Starts head i (again: after it was killed) with the same command and a new log.
  void start_head(int i) {
    const auto at = static_cast<size_t>(i);
    if (heads_.size() <= at) heads_.resize(at + 1, 0), head_starts_.resize(at + 1, 0);
    ++head_starts_[at];
    heads_[at] = spawn_troupe("serve --head-index " + std::to_string(i) + sets_,
                              dir_ / ("head" + std::to_string(i) + ".out"), head_log(i), prefix("head" + std::to_string(i)));
  }
  /// Sends `sig` to head i; SIGKILL also waits until it is gone.
  void signal_head(int i, int sig) {
    REQUIRE(kill(head_pid(i), sig) == 0);
    if (sig != SIGKILL) return;
    REQUIRE(wait_exit(head_pid(i), std::chrono::seconds(10)));
    heads_[static_cast<size_t>(i)] = 0;
  }
  /// kill -9 of gateway j; waits until it is gone.
  void kill_gateway(int j) {
    REQUIRE(kill(gateway_pid(j), SIGKILL) == 0);
    REQUIRE(wait_exit(gateway_pid(j), std::chrono::seconds(10)));
    gateways_[static_cast<size_t>(j)] = 0;
  }
  /// Starts one `troupe generate` client (in host "client") over `prompts`: output
  /// <dir>/<name>.json, log <dir>/<name>.log.
  pid_t client(const std::string& name, const std::vector<std::string>& prompts, const sampling_params& p) const {
    const auto file = write_prompts(dir_ / (name + "-prompts.jsonl"), prompts);
    return spawn_troupe("generate" + head_flag() + " --prompt-file " + file.string() + sampling_flags(p),
                        dir_ / (name + ".json"), dir_ / (name + ".log"), prefix("client"));
  }
  /// Waits until the log of some head contains `text`; that head's index and when (nullopt
  /// after `timeout`).
  std::optional<std::pair<int, std::chrono::steady_clock::time_point>> wait_any_head(const std::string& text,
                                                                                   std::chrono::milliseconds timeout) const {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      for (int i = 0; i < spec_.heads; ++i)
        if (read_text(head_log(i)).find(text) != std::string::npos) return std::make_pair(i, std::chrono::steady_clock::now());
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return std::nullopt;
  }
  /// Every log of the run, for a failure's message.
  std::string logs() const {
    std::string all;
    for (const auto& e : std::filesystem::directory_iterator(dir_))
      if (e.path().extension() == ".log") all += "---- " + e.path().filename().string() + "\n" + read_text(e.path());
    return all;
  }

 private:
  int head_port(int i) const { return base_ + 2 * i; }
  std::string host(const std::string& who) const { return spec_.lab ? spec_.lab->ip(spec_.host_of(who)) : "127.0.0.1"; }
  std::string prefix(const std::string& who) const {
    return spec_.lab ? spec_.lab->shell_prefix(spec_.host_of(who)) : std::string();
  }

  void start() {
    for (const auto& n : spec_.nodes)
      nodes_.push_back(spawn_troupe("node --name " + n + sets_, dir_ / (n + ".out"), node_log(n), prefix(n)));
    start_head(0);
    if (!wait_for_log(head_log(0), "serving:", head_pid(0), std::chrono::seconds(180)) ||
        !wait_for_count(head_log(0), ": ready (", 1, std::chrono::seconds(120)))
      FAIL("head 0 did not start serving: " << logs());
    for (int i = 1; i < spec_.heads; ++i) {
      start_head(i);
      if (!wait_for_count(head_log(i), "follows head-0", 1, std::chrono::seconds(30)))
        FAIL("head " << i << " did not stand by behind head 0: " << logs());
    }
    for (int j = 0; j < spec_.gateways; ++j) {
      const auto g = "gateway" + std::to_string(j);
      gateways_.push_back(spawn_troupe("gateway --index " + std::to_string(j) + sets_, dir_ / (g + ".out"),
                                       gateway_log(j), prefix(g)));
      if (!wait_for_log(gateway_log(j), "serving through the head's router", gateway_pid(j), std::chrono::seconds(60)))
        FAIL("gateway " << j << " did not reach the leader's router: " << logs());
    }
  }

  head_cluster_spec spec_;
  std::filesystem::path dir_;
  int base_;
  std::string sets_;
  std::vector<pid_t> heads_, nodes_, gateways_;
  std::vector<int> head_starts_;
};

/// Each node of `c` loaded its weights exactly once (`adopted`: and its shard was adopted
/// that many times by a later leader, weights kept).
inline void check_loaded_once(const head_cluster& c, size_t adopted) {
  INFO(c.logs());
  for (const auto& n : c.nodes()) {
    INFO("node " << n);
    const auto log = read_text(c.node_log(n));
    CHECK(count_of(log, ": loading") == 1);
    CHECK(count_of(log, "adopted by the new head, weights kept") == adopted);
  }
}

}  // namespace troupe::test::chaos
