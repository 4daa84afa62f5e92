// How a head process wires the replicated head state (head_state_setup.h).
#include "actors/leadership/head_state_setup.h"

#include <stdexcept>

#include "actors/actor_system_config.h"
#include "actors/link_security.h"

namespace troupe {

std::optional<std::filesystem::path> head_state_directory(const cluster_config& c, std::optional<std::size_t> index) {
  const std::filesystem::path root = c.leadership.state_dir;
  if (index) return root / ("head-" + std::to_string(*index));
  if (c.leadership.single_head_state) return root;
  return std::nullopt;
}

state_replica_actor publish_state_replica(caf::actor_system& sys, const cluster_config& c, std::size_t index,
                                          const std::filesystem::path& directory) {
  const auto& me = c.heads.at(index);
  if (me.state_port == 0) return {};
  const std::string name = "heads[" + std::to_string(index) + "]";
  auto replica = spawn_state_replica(sys, state_replica_options{head_state_store_options{directory}, name});
  auto bound = publish_link(sys, replica, me.state_port, me.host);
  if (!bound) {
    caf::anon_send_exit(replica, caf::exit_reason::user_shutdown);
    throw std::runtime_error(name + ".state_port: cannot listen for the leader's state on " +
                             endpoint(me.host, me.state_port) + ": " + sys.render(bound.error()));
  }
  logger()->info("state replica of {} listening on {} (state in {})", name, endpoint(me.host, *bound),
                 directory.string());
  return replica;
}

namespace {

/// Asks `replica` what it holds (so a save in progress ends first), then stops it.
void stop_replica(caf::actor_system& sys, const state_replica_actor& replica) {
  caf::scoped_actor self{sys};
  self->request(replica, std::chrono::seconds(10), latest_atom::value)
      .receive([](uint64_t term, uint64_t sequence,
                  const std::string&) { logger()->info("state replica: holds term {} sequence {}", term, sequence); },
               [&](caf::error& e) { logger()->warn("state replica: did not answer: {}", sys.render(e)); });
  unpublish_link(sys, replica, 0);  // every port it was published on
  self->send_exit(replica, caf::exit_reason::user_shutdown);
  self->wait_for(replica);
}

}  // namespace

std::optional<head_state> state_to_lead_from(caf::actor_system& sys, const cluster_config& c,
                                             const state_replica_actor& replica,
                                             const std::optional<std::filesystem::path>& directory) {
  if (replica) stop_replica(sys, replica);
  if (!directory) return std::nullopt;
  std::optional<loaded_head_state> loaded;
  try {
    loaded = head_state_store(head_state_store_options{*directory}).load();
  } catch (const std::exception& e) {
    logger()->error("head state: {}; placing from the cluster file", e.what());
    return std::nullopt;
  }
  if (!loaded) {
    logger()->info("head state: none in {}: placing from the cluster file", directory->string());
    return std::nullopt;
  }
  const auto digest = cluster_config_digest(c);
  if (loaded->state.config_digest != digest) {
    logger()->warn("head state: {} was made for another cluster file (config digest {}, this one's {}): ignored; "
                   "placing from the cluster file",
                   loaded->from.string(), loaded->state.config_digest.empty() ? "none" : loaded->state.config_digest,
                   digest);
    return std::nullopt;
  }
  logger()->info("head state: starting from {} (term {} sequence {}: {} member(s), {} replica(s))",
                 loaded->from.string(), loaded->state.term, loaded->state.sequence, loaded->state.members.size(),
                 loaded->state.replicas.size());
  return std::move(loaded->state);
}

std::shared_ptr<head_state_recorder> make_head_state_recorder(caf::actor_system& sys, const cluster_config& c,
                                                              std::optional<std::size_t> index, uint64_t term,
                                                              const std::optional<std::filesystem::path>& directory,
                                                              const std::optional<head_state>& restored,
                                                              std::shared_ptr<troupe_metrics> metrics) {
  head_state_recorder_options o;
  o.term = term;
  o.config_digest = cluster_config_digest(c);
  o.directory = directory;
  o.restored = restored;
  o.metrics = metrics;
  for (std::size_t i = 0; i < c.heads.size(); ++i)
    if (!(index && *index == i) && c.heads[i].state_port != 0)
      o.standbys.push_back({"heads[" + std::to_string(i) + "]", c.heads[i].host, c.heads[i].state_port, metrics});
  if (!o.directory && o.standbys.empty()) return nullptr;
  logger()->info("head state: recording term {} from sequence {}{}; sending it to {} standby head(s)", term,
                 restored ? restored->sequence : 0, directory ? " in " + directory->string() : "",
                 o.standbys.size());
  return std::make_shared<head_state_recorder>(sys, std::move(o));
}

}  // namespace troupe
