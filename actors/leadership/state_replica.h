#pragma once
/// The state replica: the actor each standby head runs so that the leader's state
/// (head_state.h) reaches it and its disk on every change. The leader sends
/// `replicate_atom, term, sequence, bytes` (bytes = encode(state)); the replica refuses a
/// term older than the one it holds, and in the same term a sequence that is not newer
/// (a replay or a reordering), decodes the bytes, saves them to its store
/// (head_state_store.h) and only then holds them. A new replica on the same directory
/// (a restarted head) starts from what the store holds.
///
/// A newer term is accepted whatever its sequence: the term is the fencing token, and
/// the state of the newest leader is the truth (choosing a standby that holds the latest
/// sequence as the next leader is the election's business).
#include <caf/all.hpp>
#include <cstdint>
#include <string>

#include "actors/leadership/head_state_store.h"
#include "actors/messages.h"

namespace troupe {

/// The state replica's typed interface.
using state_replica_actor = caf::typed_actor<
    /// The leader's state: term, sequence, encode(state). Answers the sequence the replica
    /// holds now (the one sent). Fails, holding what it held, with an error naming both
    /// terms (an older term) or both sequences (not newer in the same term), or naming what
    /// is wrong with the bytes (decode()'s errors, or a term and sequence inside them that
    /// differ from the message's), or the store's error when saving failed.
    caf::replies_to<replicate_atom, uint64_t, uint64_t, std::string>::with<uint64_t>,
    /// The latest state held: term, sequence, encode(state); 0, 0 and no bytes when it
    /// holds none yet.
    caf::replies_to<latest_atom>::with<uint64_t, uint64_t, std::string>>;

/// How a state replica is set up.
struct state_replica_options {
  head_state_store_options store;  ///< where it keeps the state (the lead wires a config key)
  std::string name = "standby";    ///< this head's name, for logs
};

/// Loads the store and spawns the replica (detached: saves fsync). Throws what
/// head_state_store::load() throws (a corrupt store with no good `.prev`) before spawning.
/// The replica runs until it is sent an exit message.
state_replica_actor spawn_state_replica(caf::actor_system& sys, state_replica_options o);

}  // namespace troupe
