#pragma once
/// A lease voter as an actor: it answers the lease requests of the heads (remote, through
/// the middleman) with the rules of leadership::lease_voter, on this process's steady
/// clock. It remembers in memory only: a new voter refuses every grant for one
/// lease_duration (lease.h says why). The process publishes it (publish_link) on the
/// address the heads' `head_election_options::voters` name.
#include <caf/all.hpp>

#include "actors/leadership/lease.h"
#include "actors/messages.h"

namespace troupe {

/// The voter's typed interface.
using lease_voter_actor = caf::typed_actor<
    /// Candidate id and term: grant, renew or refuse the lease of that term.
    caf::replies_to<lease_atom, std::string, uint64_t>::with<leadership::lease_reply>,
    /// Candidate id and term: the candidate gives its grant of that term back.
    caf::reacts_to<release_atom, std::string, uint64_t>,
    /// The lease's state (held, vacant or restarting), granting nothing.
    caf::replies_to<status_atom>::with<leadership::lease_reply>>;

/// Spawns a voter with `timing` (its quiet period starts now).
lease_voter_actor spawn_lease_voter(caf::actor_system& sys, leadership::lease_timing timing);

}  // namespace troupe
