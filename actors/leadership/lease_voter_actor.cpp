#include "actors/leadership/lease_voter_actor.h"

#include "actors/actor_system_config.h"

namespace troupe {

namespace {

struct voter_state {
  static inline const char* name = "troupe.lease_voter";
  std::optional<leadership::lease_voter> voter;
};

lease_voter_actor::behavior_type voter_behavior(lease_voter_actor::stateful_pointer<voter_state> self,
                                                leadership::lease_timing timing) {
  self->state.voter.emplace(timing, leadership::lease_clock::now());
  return {
      [=](lease_atom, const std::string& candidate, uint64_t term) {
        auto& v = *self->state.voter;
        const uint64_t before = v.term();
        auto reply = v.on_request(candidate, term, leadership::lease_clock::now());
        if (reply.verdict == leadership::lease_verdict::granted && v.term() != before)
          logger()->info("lease voter: granted term {} to {}", v.term(), candidate);
        else if (reply.verdict != leadership::lease_verdict::granted)
          logger()->debug("lease voter: {}", reply.reason);
        return reply;
      },
      [=](release_atom, const std::string& candidate, uint64_t term) {
        if (self->state.voter->on_release(candidate, term, leadership::lease_clock::now()))
          logger()->info("lease voter: {} gave back term {}", candidate, term);
      },
      [=](status_atom) { return self->state.voter->peek(leadership::lease_clock::now()); },
  };
}

}  // namespace

lease_voter_actor spawn_lease_voter(caf::actor_system& sys, leadership::lease_timing timing) {
  return sys.spawn(voter_behavior, timing);
}

}  // namespace troupe
