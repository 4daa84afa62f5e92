#pragma once
/// One head among several (`heads:` in the cluster file; docs/reliability.md,
/// "Leadership"): the process publishes its lease voter on heads[i].host:voter_port, runs
/// head_election over every voter of the cluster (election_voters), stands by until it
/// leads, and learns at once when it stepped down. The head process (run_head) starts its
/// supervisor, router and replicas only once it leads, with the term of its lease; a head
/// that stepped down stops acting at once (restart_as_standby).
#include <caf/all.hpp>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "actors/troupe_metrics.h"
#include "cluster-config/cluster_config.h"

namespace troupe {

/// This head's voter and election, and what the election reported.
class head_leadership {
 public:
  /// Publishes the voter of heads[index] and starts the election (id "head-<index>@<nonce>",
  /// one per process image).
  /// Throws std::runtime_error naming the address when the voter's port cannot be bound,
  /// std::invalid_argument for an index outside `heads`. `metrics` (troupe_head_*) may be
  /// null and must outlive this object.
  head_leadership(caf::actor_system& sys, const cluster_config& c, std::size_t index, troupe_metrics* metrics);
  /// Stops the election and the voter.
  ~head_leadership();
  head_leadership(const head_leadership&) = delete;
  head_leadership& operator=(const head_leadership&) = delete;

  /// Blocks until this head leads (returns the term) or `interrupted` returns true
  /// (nullopt); `interrupted` is called between checks and should block briefly (~50 ms).
  std::optional<uint64_t> wait_to_lead(const std::function<bool()>& interrupted);
  /// Why this head stepped down after it led; nullopt while it leads (or never led).
  std::optional<std::string> stepped_down() const;

 private:
  struct shared;
  caf::actor_system& sys_;
  std::shared_ptr<shared> shared_;
  caf::actor voter_;
  caf::actor election_;
  uint16_t voter_port_ = 0;
};

/// Spawns a lease voter with the file's `leadership:` timing and publishes it on host:port
/// (a head's voter_port, or a node's); throws std::runtime_error naming `who`, the address
/// and the reason when it cannot listen there. Send the voter an exit to stop it.
caf::actor publish_lease_voter(caf::actor_system& sys, const std::string& host, uint16_t port,
                               const leadership_section& timing, const std::string& who);

/// Ends this process's part as head at once and starts it again as a standby: closes every
/// file descriptor but stdin, stdout and stderr (the published ports, every link) and execs
/// /proc/self/exe with the same arguments. Nothing of the deposed leader (supervisor, router,
/// replicas) survives, so a leader that was paused and wakes up after its lease ended can do
/// no harm. Logs `why` first. Never returns (_exit(3) when the exec fails).
[[noreturn]] void restart_as_standby(const std::string& why);

}  // namespace troupe
