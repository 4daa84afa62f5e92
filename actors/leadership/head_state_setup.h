#pragma once
/// How a head process (run_head) wires the replicated head state (docs/reliability.md,
/// "Replicated head state"): where it keeps it, the state replica a standby publishes, the
/// state a new leader starts from, and the recorder that fills, saves and sends it.
#include <caf/all.hpp>
#include <cstddef>
#include <filesystem>
#include <memory>
#include <optional>

#include "actors/leadership/head_state_recorder.h"
#include "actors/leadership/state_replica.h"
#include "cluster-config/cluster_config.h"

namespace troupe {

/// Where head `index` of `c` (nullopt: the single head) keeps its state:
/// `<leadership.state_dir>/head-<index>` for one of several heads (heads sharing a working
/// directory never share a store), `<leadership.state_dir>` for a single head with
/// leadership.single_head_state, else nowhere.
std::optional<std::filesystem::path> head_state_directory(const cluster_config& c, std::optional<std::size_t> index);

/// A standby's state replica over `directory`, published on heads[index].host:state_port;
/// null when that head has no state_port. Throws std::runtime_error naming the key and the
/// address when it cannot listen, and what head_state_store::load() throws for a store
/// with no good state.
state_replica_actor publish_state_replica(caf::actor_system& sys, const cluster_config& c, std::size_t index,
                                          const std::filesystem::path& directory);

/// The state a new leader starts from: stops `replica` (when not null) once it answered
/// what it holds, then loads `directory`'s store. nullopt when there is none, when it does
/// not load (logged), or when it was made for another cluster file (its config_digest is
/// not cluster_config_digest(c): logged, naming both digests, and ignored).
std::optional<head_state> state_to_lead_from(caf::actor_system& sys, const cluster_config& c,
                                             const state_replica_actor& replica,
                                             const std::optional<std::filesystem::path>& directory);

/// The recorder of the leader of `term` (head `index`, nullopt: the single head): it saves
/// in `directory` and sends to every other head of `heads:` with a state_port; null when
/// there is neither a directory nor a standby to send to.
std::shared_ptr<head_state_recorder> make_head_state_recorder(caf::actor_system& sys, const cluster_config& c,
                                                              std::optional<std::size_t> index, uint64_t term,
                                                              const std::optional<std::filesystem::path>& directory,
                                                              const std::optional<head_state>& restored,
                                                              std::shared_ptr<troupe_metrics> metrics);

}  // namespace troupe
