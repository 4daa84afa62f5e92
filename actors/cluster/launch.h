#pragma once
/// Process management for the control plane: starting node processes (fork/exec of
/// /proc/self/exe), reaping and killing them; finding this process's role under
/// mpirun/srun; and the two process drivers, `run_head` (troupe serve) and `run_node`
/// (troupe node).
#include <sys/types.h>

#include <chrono>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <atomic>
#include <caf/all.hpp>

#include "actors/leadership/head_state_recorder.h"
#include "actors/troupe_metrics.h"
#include "cluster-config/cluster_config.h"

namespace troupe {

/// How a child process ended.
struct child_exit {
  std::string name;         ///< the name it was started under
  pid_t pid = 0;            ///< its process id
  int status = 0;           ///< raw waitpid status
  std::string description;  ///< "exited with status 1", "killed by signal 9 (Killed)"
};

/// Extra settings of one child process.
struct launch_options {
  std::string log_path;                ///< append stdout+stderr here ("" = inherit)
  std::vector<std::string> extra_env;  ///< "KEY=value" entries added to the environment
  bool die_with_parent = true;         ///< prctl(PR_SET_PDEATHSIG, SIGTERM) in the child
};

/// The child processes of this process, in start order. Thread-safe. The destructor
/// stops whatever is still running (stop_all with a short grace).
class process_launcher {
 public:
  process_launcher() = default;
  process_launcher(const process_launcher&) = delete;
  process_launcher& operator=(const process_launcher&) = delete;
  ~process_launcher();

  /// fork/exec of `argv` (argv[0] is the program path). Throws std::runtime_error naming
  /// the program when fork or exec fails. SIGINT/SIGTERM are unblocked in the child.
  pid_t start(const std::string& name, const std::vector<std::string>& argv,
              const launch_options& opts = {});
  /// Collects children that exited since the last call (never blocks).
  std::vector<child_exit> reap();
  /// Sends `sig` to child `pid`; false when it is not a running child of ours.
  bool signal(pid_t pid, int sig);
  /// Waits up to `timeout` for child `pid` to exit and reaps it; nullopt on timeout (or
  /// when `pid` is not ours).
  std::optional<child_exit> wait(pid_t pid, std::chrono::milliseconds timeout);
  /// SIGKILL, then wait for it (a stopped process dies too). Blocks up to 5 s: not for an
  /// actor's handler (the supervisor signals and collects the exit through reap()).
  std::optional<child_exit> kill_and_wait(pid_t pid);
  /// Reaps children as they exit on their own, until none is left or `timeout` passed.
  std::vector<child_exit> wait_all(std::chrono::milliseconds timeout);
  /// Reverse start order: SIGTERM each child, wait up to `grace`, then SIGKILL and reap.
  std::vector<child_exit> stop_all(std::chrono::milliseconds grace);
  /// Pids of children not yet reaped, in start order.
  std::vector<pid_t> running() const;

 private:
  struct child {
    std::string name;
    pid_t pid;
  };
  std::optional<child_exit> try_reap_locked(size_t index);

  mutable std::mutex mutex_;
  std::vector<child> children_;  // start order
};

/// "exited with status 1", "killed by signal 9 (Killed)".
std::string describe_exit(int wait_status);

/// Absolute path of the running executable (/proc/self/exe).
std::string self_executable();

/// This machine's host name (gethostname); "" when unknown.
std::string local_host_name();

/// True for loopback addresses, "localhost", "0.0.0.0" and this machine's host name.
bool is_local_host(const std::string& host);

/// Whether `host` (a name or a numeric address) is an address of this machine: a socket can
/// be bound to it.
bool binds_here(const std::string& host);

/// The address a node started by mpirun/srun listens on and reports to the head (one and
/// the same, never the wildcard): `n.host` when it is an address of this machine other
/// than 0.0.0.0/::, else `host_name` (this machine's name, local_host_name()).
std::string launcher_node_host(const node_section& n, const std::string& host_name);

/// This process's place in an mpirun/srun job.
struct launcher_rank {
  int rank = 0;          ///< see launcher_role
  int size = 1;          ///< processes in the job
  std::string variable;       ///< where the rank came from ("OMPI_COMM_WORLD_RANK", ...)
  std::string size_variable;  ///< where the size came from ("OMPI_COMM_WORLD_SIZE", ...)
};

/// Reads OMPI_COMM_WORLD_RANK/SIZE, PMI_RANK/SIZE or SLURM_PROCID/NTASKS (first found)
/// through `getenv_fn`; nullopt when none is set. Throws std::runtime_error naming the
/// variable when a value is not a number in range.
std::optional<launcher_rank> detect_launcher_rank(
    const std::function<const char*(const char*)>& getenv_fn);

/// Throws std::runtime_error when the job size is not heads + gateways + nodes (naming the
/// numbers, the file and the rank order of launcher_role).
void check_launcher_size(const cluster_config& c, const launcher_rank& r);

/// What an mpirun/srun rank runs. With H heads (the entries of `heads:`, else the one
/// `head:`), G gateways (`gateways:`) and N nodes: ranks 0..H-1 are heads[rank], ranks
/// H..H+G-1 gateways[rank - H], the rest nodes[rank - H - G] (one head, no gateways: rank 0
/// is the head, rank i is nodes[i - 1]).
struct launcher_role {
  enum class kind { head, gateway, node };
  kind role = kind::head;  ///< which process this rank is
  std::size_t index = 0;   ///< into heads (0: the single head), gateways or nodes
};

/// This rank's role (after check_launcher_size, which it calls).
launcher_role role_for_rank(const cluster_config& c, const launcher_rank& r);

/// The node a node's rank becomes (see launcher_role); throws std::runtime_error for a head's or gateway's rank.
const node_section& node_for_rank(const cluster_config& c, const launcher_rank& r);

/// The node called `name`; throws std::runtime_error listing the node names otherwise.
const node_section& find_node_section(const cluster_config& c, const std::string& name);

/// What the head's main function gets: the running system and the supervisor.
struct head_context {
  caf::actor_system& system;
  caf::actor supervisor;                ///< the supervisor (actor_cast to supervisor_actor)
  std::vector<caf::actor> keep_alive;   ///< actors that must live until the head stops
  const std::atomic<bool>& stopping;    ///< set when a signal asks the head to stop
  /// The replicated head state this head starts from (its store, or what it took as a
  /// standby); nullopt: place from the cluster file.
  std::optional<head_state> restored;
  /// Where the data plane records placement changes (null: the head keeps no state).
  std::shared_ptr<head_state_recorder> recorder;
};

/// `troupe serve`: the head process.
struct head_options {
  cluster_config config;               ///< validated cluster file
  std::string config_path;             ///< its path (passed to launched nodes)
  std::vector<std::string> overrides;  ///< --set values (passed to launched nodes)
  bool launch_local_nodes = true;      ///< false under mpirun/srun (ranks are the nodes)
  std::shared_ptr<troupe_metrics> metrics;  ///< node up/restarts go here (null = nowhere)
  /// Which entry of `heads:` this process is (several heads): it publishes its lease voter,
  /// stands by until it is elected, then runs as head at heads[index] with the term of its
  /// lease, and starts again as a standby when it steps down (restart_as_standby).
  /// nullopt: the single `head:`, no election.
  std::optional<std::size_t> head_index;
  /// Runs on its own thread once the supervisor is published and the nodes start (the
  /// data plane: placement, replicas, requests). Returning a value stops the head with
  /// that exit code; nullopt keeps it serving until SIGINT/SIGTERM. Null: control plane only.
  std::function<std::optional<int>(head_context&)> main;
};

/// Runs the head until SIGINT/SIGTERM: (with head_index, once elected) publishes the
/// supervisor on head.host:head.port (heads[head_index]'s),
/// starts the local nodes, logs progress, then stops nodes, kills leftover children and
/// returns 0. Throws std::runtime_error for a port in use (naming host:port).
int run_head(const head_options& opts);

/// `troupe node`: one node process.
struct node_options {
  cluster_config config;   ///< validated cluster file
  std::string name;        ///< which entry of `nodes:` this process is
  std::string bind_host;   ///< address to listen on ("" = the node's configured host)
  std::string advertise_host;  ///< host reported to the head ("" = the node's host)
};

/// Runs a node until SIGINT/SIGTERM or until the head stops it: publishes the node agent
/// (and, with nodes[].voter_port, a lease voter for the heads' election), connects to the
/// head (retrying with backoff for fault_tolerance.request_wait; with several heads, each
/// in turn, until the one that leads accepts the registration), registers and heartbeats;
/// after losing the head it reconnects within the same deadline. Returns 0 on an orderly stop. Throws std::runtime_error for an unknown
/// name (listing the names), a port in use (naming the node and host:port), an
/// unreachable head (naming host:port) or a refused registration.
int run_node(const node_options& opts);

}  // namespace troupe
