// The state replica (state_replica.h): a standby's copy of the leader's head state.
#include "actors/leadership/state_replica.h"

#include <optional>

#include "actors/actor_system_config.h"

namespace troupe {
namespace {

struct state_replica_state {
  std::optional<head_state_store> store;
  std::optional<head_state> held;  ///< the latest state accepted (or loaded)
  std::string bytes;               ///< encode(*held)
  std::string head;                ///< this head's name, for logs
  static inline const char* name = "troupe.state_replica";
};

using replica_ptr = state_replica_actor::stateful_pointer<state_replica_state>;

std::string at(uint64_t term, uint64_t sequence) {
  return "term " + std::to_string(term) + " sequence " + std::to_string(sequence);
}

caf::error refuse(replica_ptr self, const std::string& why) {
  logger()->warn("state replica {}: refused the leader's state: {}", self->state.head, why);
  return caf::make_error(caf::sec::invalid_argument, "state replica " + self->state.head + ": " + why);
}

/// Why a state of `term`, `sequence` may not replace the one held ("" = it may).
std::string stale(const state_replica_state& st, uint64_t term, uint64_t sequence) {
  if (!st.held) return "";
  const auto held_term = st.held->term, held_sequence = st.held->sequence;
  if (term < held_term)
    return "term " + std::to_string(term) + " is older than term " + std::to_string(held_term) +
           " of the state it holds (" + at(held_term, held_sequence) + ")";
  if (term == held_term && sequence <= held_sequence)
    return "sequence " + std::to_string(sequence) + " in term " + std::to_string(term) +
           " is not newer than sequence " + std::to_string(held_sequence) + " it holds";
  return "";
}

caf::result<uint64_t> on_replicate(replica_ptr self, uint64_t term, uint64_t sequence, std::string& bytes) {
  auto& st = self->state;
  if (auto why = stale(st, term, sequence); !why.empty()) return refuse(self, why);
  head_state s;
  try {
    s = decode(bytes, "the leader's state of " + at(term, sequence));
  } catch (const head_state_error& e) {
    return refuse(self, e.what());
  }
  if (s.term != term || s.sequence != sequence)
    return refuse(self, "the leader's message says " + at(term, sequence) + " but its state holds " +
                            at(s.term, s.sequence));
  try {
    st.store->save(s);
  } catch (const std::exception& e) {
    return refuse(self, std::string("saving it failed: ") + e.what());
  }
  st.held = std::move(s);
  st.bytes = std::move(bytes);
  return sequence;
}

state_replica_actor::behavior_type state_replica_impl(replica_ptr self, state_replica_state init) {
  self->state = std::move(init);
  return {
      [self](replicate_atom, uint64_t term, uint64_t sequence, std::string& bytes) {
        return on_replicate(self, term, sequence, bytes);
      },
      [self](latest_atom) -> caf::result<uint64_t, uint64_t, std::string> {
        const auto& st = self->state;
        if (!st.held) return {uint64_t{0}, uint64_t{0}, std::string{}};
        return {st.held->term, st.held->sequence, st.bytes};
      },
  };
}

}  // namespace

state_replica_actor spawn_state_replica(caf::actor_system& sys, state_replica_options o) {
  state_replica_state init;
  init.head = o.name;
  init.store.emplace(o.store);
  if (auto loaded = init.store->load()) {
    logger()->info("state replica {}: starts from {} ({})", o.name, loaded->from.string(),
                   at(loaded->state.term, loaded->state.sequence));
    init.bytes = encode(loaded->state);
    init.held = std::move(loaded->state);
  } else {
    logger()->info("state replica {}: {} holds no state yet", o.name, init.store->main_path().string());
  }
  return sys.spawn<caf::detached>(state_replica_impl, std::move(init));
}

}  // namespace troupe
