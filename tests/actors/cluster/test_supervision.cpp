// The control plane across real processes: `troupe serve` starts its local nodes, they
// register, a kill -9 is detected and repaired, and shutdown leaves no process behind.
#include <netinet/in.h>
#include <signal.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <thread>

#include "actors/actor_system_config.h"
#include "actors/cluster/launch.h"
#include "actors/messages.h"
#include "actors/cluster/supervisor.h"
#include "test_support.h"

namespace {

using namespace troupe;
using namespace std::chrono_literals;

/// A block of 10 ports of its own (head, nodes, server at +9) for one test.
uint16_t test_port(int) { return static_cast<uint16_t>(troupe::test::reserve_ports(10)); }

std::string troupe_binary() { return (troupe::test::binary_dir() / "bin" / "troupe").string(); }

int64_t unix_ms_now() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

/// Head on `base`, nodes n0 and n1 on base+1 and base+2, fast heartbeats.
cluster_config two_node_config(uint16_t base) {
  auto c = default_cluster_config();
  c.parallel.replicas = 2;
  c.head.host = "127.0.0.1";
  c.head.port = base;
  c.server.port = static_cast<uint16_t>(base + 9);
  c.nodes.clear();
  for (int i = 0; i < 2; ++i) {
    node_section n;
    n.name = "n" + std::to_string(i);
    n.host = "127.0.0.1";
    n.port = static_cast<uint16_t>(base + 1 + i);
    n.devices = {"cpu"};
    c.nodes.push_back(n);
  }
  c.fault_tolerance.heartbeat_interval = 50ms;
  c.fault_tolerance.heartbeat_timeout = 500ms;
  c.fault_tolerance.request_wait = 5000ms;
  c.fault_tolerance.max_restarts = 2;
  validate(c);
  return c;
}

std::string write_config(const cluster_config& c, const std::filesystem::path& dir) {
  auto path = dir / "cluster.yaml";
  std::ofstream(path) << to_yaml(c);
  return path.string();
}

std::string read_text(const std::filesystem::path& p) {
  std::ifstream f(p);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

/// True when `pid` no longer runs (gone, or a zombie nobody reaped yet).
bool process_gone(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string stat;
  if (!f || !std::getline(f, stat)) return true;
  const auto p = stat.rfind(')');
  return p != std::string::npos && p + 2 < stat.size() && (stat[p + 2] == 'Z' || stat[p + 2] == 'X');
}

bool wait_gone(const std::vector<pid_t>& pids, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    bool all = true;
    for (auto pid : pids) all = all && process_gone(pid);
    if (all) return true;
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(10ms);
  }
}

/// A test-side actor system connected to the head's supervisor.
struct head_client {
  system_config cfg;
  caf::actor_system sys;
  supervisor_actor sup;

  explicit head_client(const cluster_config& c) : cfg(c.fault_tolerance, 2), sys(cfg) {
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    for (;;) {
      auto h = sys.middleman().remote_actor<supervisor_actor>(c.head.host, c.head.port);
      if (h) {
        sup = *h;
        return;
      }
      if (std::chrono::steady_clock::now() > deadline)
        FAIL("head unreachable: " << sys.render(h.error()));
      std::this_thread::sleep_for(20ms);
    }
  }

  cluster_status status() {
    caf::scoped_actor self{sys};
    cluster_status out;
    self->request(sup, 2s, status_atom::value)
        .receive([&](cluster_status& s) { out = std::move(s); },
                 [&](caf::error& e) { FAIL("status request failed: " << sys.render(e)); });
    return out;
  }

  /// Polls the status every 5 ms until `pred` holds or `timeout` passed; the last status.
  cluster_status wait_until(const std::function<bool(const cluster_status&)>& pred,
                            std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      auto s = status();
      if (pred(s) || std::chrono::steady_clock::now() > deadline) return s;
      std::this_thread::sleep_for(5ms);
    }
  }
};

bool all_registered(const cluster_status& s) {
  for (const auto& n : s.nodes)
    if (n.state != node_state::registered) return false;
  return !s.nodes.empty();
}

/// Runs `troupe args...` to completion (10 s at most); returns its exit and its output.
std::pair<child_exit, std::string> run_troupe(const std::vector<std::string>& args,
                                              const std::filesystem::path& dir,
                                              const std::vector<std::string>& env = {}) {
  process_launcher procs;
  const auto log = dir / "run.log";
  std::filesystem::remove(log);
  std::vector<std::string> argv{troupe_binary()};
  argv.insert(argv.end(), args.begin(), args.end());
  launch_options lo;
  lo.log_path = log.string();
  lo.extra_env = env;
  const auto pid = procs.start("troupe", argv, lo);
  auto ex = procs.wait(pid, 10s);
  REQUIRE(ex);
  return {*ex, read_text(log)};
}

}  // namespace

TEST_CASE("a two-node cluster registers, repairs a kill -9 of a node and shuts down cleanly",
          "[actors]") {
  const auto dir = troupe::test::scratch_dir("actors_kill9");
  const auto c = two_node_config(test_port(0));
  const auto path = write_config(c, dir);
  process_launcher procs;
  launch_options lo;
  lo.log_path = (dir / "head.log").string();
  const auto head = procs.start("head", {troupe_binary(), "serve", "--config", path}, lo);
  head_client client(c);

  auto st = client.wait_until(all_registered, 10s);
  INFO(read_text(dir / "head.log"));
  REQUIRE(all_registered(st));
  REQUIRE(st.nodes.size() == 2);
  for (const auto& n : st.nodes) {
    CHECK(n.launched);
    CHECK(n.pid > 0);
    CHECK(n.restarts == 0);
  }
  const pid_t victim = find_node(st, "n1")->pid;
  const pid_t survivor = find_node(st, "n0")->pid;

  const auto killed_at = unix_ms_now();
  REQUIRE(::kill(victim, SIGKILL) == 0);
  st = client.wait_until(
      [](const cluster_status& s) {
        const auto* n = find_node(s, "n1");
        return n && n->restarts == 1 && n->state == node_state::registered;
      },
      10s);
  const auto* n1 = find_node(st, "n1");
  REQUIRE(n1);
  REQUIRE(n1->state == node_state::registered);
  CHECK(n1->restarts == 1);
  CHECK(n1->pid != victim);
  CHECK(n1->last_error.find("remote_link_unreachable") != std::string::npos);
  const auto detect_ms = n1->lost_at_unix_ms - killed_at;
  CHECK(detect_ms >= 0);
  CHECK(detect_ms < c.fault_tolerance.heartbeat_timeout.count());
  CHECK(n1->recover_ms >= 0);
  CHECK(n1->recover_ms < 5000);
  WARN("kill -9 of a node: detected " << detect_ms << " ms after the kill (" << n1->detect_ms
                                      << " ms after its last heartbeat), re-registered "
                                      << n1->recover_ms << " ms after detection");
  CHECK(find_node(st, "n0")->pid == survivor);
  CHECK(find_node(st, "n0")->restarts == 0);

  const pid_t restarted = n1->pid;
  REQUIRE(procs.signal(head, SIGTERM));
  auto ex = procs.wait(head, 10s);
  REQUIRE(ex);
  CHECK(ex->description == "exited with status 0");
  CHECK(wait_gone({survivor, restarted}, 1s));
  const auto log = read_text(dir / "head.log");
  CHECK(log.find("node n1 lost after") != std::string::npos);
  CHECK(log.find("head stopped") != std::string::npos);
}

TEST_CASE("a stopped (SIGSTOP) node is lost after the heartbeat timeout and a SIGTERM'd one "
          "leaves for good", "[actors]") {
  const auto dir = troupe::test::scratch_dir("actors_sigstop");
  const auto c = two_node_config(test_port(80));
  const auto path = write_config(c, dir);
  process_launcher procs;
  launch_options lo;
  lo.log_path = (dir / "head.log").string();
  const auto head = procs.start("head", {troupe_binary(), "serve", "--config", path}, lo);
  head_client client(c);
  auto st = client.wait_until(all_registered, 10s);
  INFO(read_text(dir / "head.log"));
  REQUIRE(all_registered(st));
  const pid_t leaver = find_node(st, "n0")->pid;
  const pid_t frozen = find_node(st, "n1")->pid;

  REQUIRE(::kill(leaver, SIGTERM) == 0);
  const auto stopped_at = unix_ms_now();
  REQUIRE(::kill(frozen, SIGSTOP) == 0);
  st = client.wait_until(
      [](const cluster_status& s) {
        const auto* n = find_node(s, "n1");
        return n && n->restarts == 1 && n->state == node_state::registered &&
               find_node(s, "n0")->state == node_state::stopped;
      },
      10s);
  const auto* n0 = find_node(st, "n0");
  const auto* n1 = find_node(st, "n1");
  CHECK(n0->state == node_state::stopped);
  CHECK(n0->restarts == 0);
  REQUIRE(n1->state == node_state::registered);
  CHECK(n1->restarts == 1);
  CHECK(n1->pid != frozen);
  const auto detect_ms = n1->lost_at_unix_ms - stopped_at;
  const auto& ft = c.fault_tolerance;
  CHECK(detect_ms >= ft.heartbeat_timeout.count() - ft.heartbeat_interval.count());
  CHECK(detect_ms < c.fault_tolerance.heartbeat_timeout.count() + 300);
  WARN("SIGSTOP of a node (heartbeat_timeout " << c.fault_tolerance.heartbeat_timeout.count()
                                              << " ms): detected " << detect_ms
                                              << " ms after the stop, re-registered "
                                              << n1->recover_ms << " ms after detection");
  CHECK(wait_gone({leaver, frozen}, 2s));

  REQUIRE(procs.signal(head, SIGTERM));
  auto ex = procs.wait(head, 10s);
  REQUIRE(ex);
  CHECK(ex->description == "exited with status 0");
  CHECK(wait_gone({n1->pid}, 1s));
}

/// Holds a process's exit back from its parent: this test process traces it (PTRACE_SEIZE),
/// and a traced zombie is reported to its parent only once the tracer has reaped it. What
/// a node process stuck in the kernel (a GPU driver call) looks like after SIGKILL.
class exit_hold {
 public:
  explicit exit_hold(pid_t pid) : pid_(pid) {
    held_ = ::ptrace(PTRACE_SEIZE, pid, nullptr, nullptr) == 0;
  }
  ~exit_hold() { release(); }
  bool held() const { return held_; }
  /// Reaps the traced process (it must have exited): its parent may reap it then.
  void release() {
    if (!held_) return;
    held_ = false;
    int status = 0;
    ::waitpid(pid_, &status, __WALL);
  }

 private:
  pid_t pid_;
  bool held_ = false;
};

TEST_CASE("a killed node process that does not exit at once never blocks the supervisor, and its replacement "
          "starts once it has exited",
          "[actors]") {
  const auto dir = troupe::test::scratch_dir("actors_slow_exit");
  const auto c = two_node_config(test_port(30));
  const auto path = write_config(c, dir);
  process_launcher procs;
  launch_options lo;
  lo.log_path = (dir / "head.log").string();
  const auto head = procs.start("head", {troupe_binary(), "serve", "--config", path}, lo);
  head_client client(c);
  auto st = client.wait_until(all_registered, 10s);
  INFO(read_text(dir / "head.log"));
  REQUIRE(all_registered(st));
  const pid_t victim = find_node(st, "n1")->pid;
  exit_hold hold(victim);
  REQUIRE(hold.held());
  REQUIRE(::kill(victim, SIGKILL) == 0);
  st = client.wait_until([](const cluster_status& s) { return find_node(s, "n1")->state != node_state::registered; },
                         2s);
  REQUIRE(find_node(st, "n1")->state == node_state::restarting);  // the broken connection told it at once
  // For 2.5 s the head cannot reap the victim. The supervisor answers all along (each
  // status request must be answered within 2 s, and quickly), and starts no replacement.
  const auto until = std::chrono::steady_clock::now() + 2500ms;
  auto slowest = std::chrono::steady_clock::duration::zero();
  while (std::chrono::steady_clock::now() < until) {
    const auto t0 = std::chrono::steady_clock::now();
    st = client.status();
    slowest = std::max(slowest, std::chrono::steady_clock::now() - t0);
    const auto* n1 = find_node(st, "n1");
    REQUIRE(n1);
    CHECK(n1->state == node_state::restarting);
    std::this_thread::sleep_for(50ms);
  }
  CHECK(find_node(st, "n1")->state == node_state::restarting);
  CHECK(find_node(st, "n1")->pid == victim);  // no replacement while the old process lives
  CHECK(slowest < 500ms);
  const auto released = std::chrono::steady_clock::now();
  hold.release();
  st = client.wait_until(
      [](const cluster_status& s) {
        const auto* n = find_node(s, "n1");
        return n && n->restarts == 1 && n->state == node_state::registered;
      },
      10s);
  const auto* n1 = find_node(st, "n1");
  REQUIRE(n1->state == node_state::registered);
  CHECK(n1->pid != victim);
  CHECK(std::chrono::steady_clock::now() - released < 5s);
  const auto log = read_text(dir / "head.log");
  CHECK(log.find("node n1 process " + std::to_string(victim) + " killed by signal 9") != std::string::npos);
  REQUIRE(procs.signal(head, SIGTERM));
  auto ex = procs.wait(head, 10s);
  REQUIRE(ex);
  CHECK(ex->description == "exited with status 0");
}

TEST_CASE("killing the head with SIGKILL takes its node processes down too", "[actors]") {
  const auto dir = troupe::test::scratch_dir("actors_head_kill");
  const auto c = two_node_config(test_port(10));
  const auto path = write_config(c, dir);
  process_launcher procs;
  launch_options lo;
  lo.log_path = (dir / "head.log").string();
  const auto head = procs.start("head", {troupe_binary(), "serve", "--config", path}, lo);
  std::vector<pid_t> nodes;
  {
    head_client client(c);
    auto st = client.wait_until(all_registered, 10s);
    INFO(read_text(dir / "head.log"));
    REQUIRE(all_registered(st));
    for (const auto& n : st.nodes) nodes.push_back(n.pid);
  }
  REQUIRE(procs.signal(head, SIGKILL));
  REQUIRE(procs.wait(head, 5s));
  CHECK(wait_gone(nodes, 3s));
}

TEST_CASE("a node whose port is in use fails with an error naming the node and host:port",
          "[actors]") {
  const auto dir = troupe::test::scratch_dir("actors_port_in_use");
  const auto c = two_node_config(test_port(20));
  const auto path = write_config(c, dir);
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(c.nodes[0].port);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  REQUIRE(::listen(fd, 1) == 0);
  auto [ex, out] = run_troupe({"node", "--config", path, "--name", "n0"}, dir);
  ::close(fd);
  CHECK(ex.description == "exited with status 1");
  CHECK_THAT(out, Catch::Contains("node n0: cannot listen on 127.0.0.1:" +
                                  std::to_string(c.nodes[0].port) + ": Address already in use"));
}

TEST_CASE("a node with an unknown name fails listing the node names", "[actors]") {
  const auto dir = troupe::test::scratch_dir("actors_unknown_name");
  const auto c = two_node_config(test_port(30));
  auto [ex, out] = run_troupe({"node", "--config", write_config(c, dir), "--name", "n7"}, dir);
  CHECK(ex.description == "exited with status 1");
  CHECK_THAT(out, Catch::Contains("unknown node 'n7'") && Catch::Contains("n0, n1"));
}

TEST_CASE("a node gives up on an unreachable head after request_wait, naming host:port",
          "[actors]") {
  const auto dir = troupe::test::scratch_dir("actors_no_head");
  const auto c = two_node_config(test_port(40));
  const auto started = std::chrono::steady_clock::now();
  auto [ex, out] = run_troupe({"node", "--config", write_config(c, dir), "--name", "n0", "--set",
                               "fault_tolerance.request_wait=600ms"},
                              dir);
  const auto took = std::chrono::steady_clock::now() - started;
  CHECK(ex.description == "exited with status 1");
  CHECK_THAT(out, Catch::Contains("node n0: head unreachable at 127.0.0.1:" +
                                  std::to_string(c.head.port)));
  CHECK(took < 5s);
}

TEST_CASE("a second head on the same port fails with an error naming host:port", "[actors]") {
  const auto dir = troupe::test::scratch_dir("actors_head_port");
  const auto c = two_node_config(test_port(50));
  const auto path = write_config(c, dir);
  process_launcher procs;
  launch_options lo;
  lo.log_path = (dir / "head.log").string();
  const auto head = procs.start("head", {troupe_binary(), "serve", "--config", path}, lo);
  {
    head_client client(c);
    REQUIRE(all_registered(client.wait_until(all_registered, 10s)));
  }
  auto [ex, out] = run_troupe({"serve", "--config", path}, dir);
  CHECK(ex.description == "exited with status 1");
  CHECK_THAT(out, Catch::Contains("head: cannot listen on 127.0.0.1:" + std::to_string(c.head.port)));
  REQUIRE(procs.signal(head, SIGTERM));
  auto hx = procs.wait(head, 10s);
  REQUIRE(hx);
  CHECK(hx->description == "exited with status 0");
}

TEST_CASE("the launcher rank comes from mpirun, PMI or Slurm variables", "[actors]") {
  auto env_of = [](std::map<std::string, std::string> m) {
    return [m](const char* k) -> const char* {
      auto it = m.find(k);
      return it == m.end() ? nullptr : it->second.c_str();
    };
  };
  CHECK_FALSE(detect_launcher_rank(env_of({})));
  auto r = detect_launcher_rank(env_of({{"OMPI_COMM_WORLD_RANK", "2"}, {"OMPI_COMM_WORLD_SIZE", "3"}}));
  REQUIRE(r);
  CHECK(r->rank == 2);
  CHECK(r->size == 3);
  CHECK(r->variable == "OMPI_COMM_WORLD_RANK");
  r = detect_launcher_rank(env_of({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "4"}}));
  REQUIRE(r);
  CHECK(r->rank == 0);
  CHECK(r->size == 4);
  CHECK_THROWS_WITH(detect_launcher_rank(env_of({{"PMI_RANK", "x"}, {"PMI_SIZE", "2"}})),
                    Catch::Contains("PMI_RANK='x'"));
  CHECK_THROWS_WITH(detect_launcher_rank(env_of({{"PMI_RANK", "1"}})), Catch::Contains("PMI_SIZE"));

  const auto c = two_node_config(test_port(60));
  CHECK(node_for_rank(c, {2, 3, "PMI_RANK", "PMI_SIZE"}).name == "n1");
  CHECK_THROWS_WITH(node_for_rank(c, {1, 5, "PMI_RANK", "PMI_SIZE"}),
                    Catch::Contains("PMI_SIZE=5") && Catch::Contains("2 node(s)") &&
                        Catch::Contains("start 3"));
}

TEST_CASE("under mpirun the ranks are the heads, then the gateways, then the nodes", "[actors]") {
  auto c = two_node_config(test_port(65));
  auto role_of = [&c](int rank, int size) { return role_for_rank(c, {rank, size, "PMI_RANK", "PMI_SIZE"}); };
  using kind = launcher_role::kind;
  // One head, no gateway: rank 0 is the head, rank i is nodes[i-1], as before.
  CHECK(role_of(0, 3).role == kind::head);
  CHECK((role_of(2, 3).role == kind::node && role_of(2, 3).index == 1));
  // Two heads and one gateway before the two nodes.
  c.heads = {c.head, c.head};
  c.heads[1].port = static_cast<uint16_t>(c.head.port + 20);
  c.gateways = {gateway_section{}};
  const std::vector<std::pair<kind, std::size_t>> expected = {
      {kind::head, 0}, {kind::head, 1}, {kind::gateway, 0}, {kind::node, 0}, {kind::node, 1}};
  for (int r = 0; r < 5; ++r) {
    INFO("rank " << r);
    const auto role = role_of(r, 5);
    CHECK(role.role == expected[static_cast<std::size_t>(r)].first);
    CHECK(role.index == expected[static_cast<std::size_t>(r)].second);
  }
  CHECK(node_for_rank(c, {4, 5, "PMI_RANK", "PMI_SIZE"}).name == "n1");
  CHECK_THROWS_WITH(node_for_rank(c, {2, 5, "PMI_RANK", "PMI_SIZE"}), Catch::Contains("rank 2 is a gateway"));
  CHECK_THROWS_WITH(role_of(0, 3), Catch::Contains("PMI_SIZE=3") && Catch::Contains("2 head(s), 1 gateway(s) and 2 node(s)") &&
                                       Catch::Contains("start 5") && Catch::Contains("ranks 0..1 are the heads") &&
                                       Catch::Contains("ranks 2..2 the gateways"));
}

TEST_CASE("serve under mpirun with the wrong number of processes is a clear error", "[actors]") {
  const auto dir = troupe::test::scratch_dir("actors_mpirun_size");
  const auto c = two_node_config(test_port(70));
  auto [ex, out] = run_troupe({"serve", "--config", write_config(c, dir)}, dir,
                              {"OMPI_COMM_WORLD_RANK=0", "OMPI_COMM_WORLD_SIZE=5"});
  CHECK(ex.description == "exited with status 1");
  CHECK_THAT(out, Catch::Contains("OMPI_COMM_WORLD_SIZE=5") && Catch::Contains("start 3"));
}

TEST_CASE("starting a missing program names the program", "[actors]") {
  process_launcher procs;
  CHECK_THROWS_WITH(procs.start("x", {"/nonexistent/troupe-x"}),
                    Catch::Contains("cannot execute /nonexistent/troupe-x") &&
                        Catch::Contains("No such file"));
  CHECK(procs.running().empty());
}

TEST_CASE("a node that refuses its shard during the bring-up does not end the head: placement starts again, and "
          "the cluster serves once the node is back as it should be",
          "[actors][slow]") {
  const auto dir = troupe::test::scratch_dir("actors_placement_retry");
  auto c = two_node_config(test_port(90));
  for (auto& n : c.nodes) n.launch = false;  // the test starts them
  const auto path = write_config(c, dir);
  process_launcher procs;
  auto start = [&](const std::string& name, std::vector<std::string> args) {
    launch_options lo;
    lo.log_path = (dir / (name + ".log")).string();
    args.insert(args.begin(), troupe_binary());
    return procs.start(name, args, lo);
  };
  const auto log_has = [&](const std::string& name, const std::string& text, std::chrono::seconds within) {
    const auto until = std::chrono::steady_clock::now() + within;
    while (read_text(dir / (name + ".log")).find(text) == std::string::npos)
      if (std::chrono::steady_clock::now() > until) return false;
      else std::this_thread::sleep_for(20ms);
    return true;
  };
  const auto head = start("head", {"serve", "--config", path});
  start("n1", {"node", "--name", "n1", "--config", path});
  // n0 believes in another model: it registers, then refuses the shard the head asks of it.
  const auto wrong = start("n0-wrong", {"node", "--name", "n0", "--config", path, "--set", "model.path=/elsewhere/other.gguf"});
  INFO(read_text(dir / "head.log"));
  REQUIRE(log_has("head", "placement starts again", 60s));
  CHECK(log_has("n0-wrong", "refused to spawn", 5s));
  std::this_thread::sleep_for(1s);
  CHECK_FALSE(process_gone(head));  // before, the head's main ended here and the head with it
  REQUIRE(::kill(wrong, SIGTERM) == 0);
  REQUIRE(procs.wait(wrong, 10s));
  start("n0", {"node", "--name", "n0", "--config", path});
  REQUIRE(log_has("head", "serving: ", 90s));
  head_client client(c);
  const auto st = client.wait_until(all_registered, 10s);
  CHECK(all_registered(st));
  REQUIRE(::kill(head, SIGTERM) == 0);
  const auto ex = procs.wait(head, 30s);
  REQUIRE(ex);
  CHECK(ex->description == "exited with status 0");
}
