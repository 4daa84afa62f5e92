#pragma once
/// The election a head runs to find out whether it leads (docs/reliability.md,
/// "Leadership"). It asks every voter (leadership::lease_voter behind a remote
/// lease_voter_actor, host:port) in parallel, each request with a timeout, so an
/// unreachable voter never holds up the others:
/// - with no lease, it campaigns for term = highest seen + 1 after a random backoff, and
///   asks again the voters whose lease is still held once it is due to end;
/// - leading (a majority granted its term), it renews every lease_duration / 3 and steps
///   down at the end of its own view of the lease when the renewals no longer reach a
///   majority, or at once when a voter names a higher term and the other voters' grants no
///   longer make a majority;
/// - a campaign that cannot win (a majority refused its term for good, or its grants make
///   no majority half a lease_duration after the first: a split vote) gives its grants back and starts
///   again with a higher term.
/// Each transition is reported through `head_election_options::on_event` and the
/// troupe_head_* metrics.
#include <caf/all.hpp>
#include <functional>
#include <string>
#include <vector>

#include "actors/leadership/lease.h"
#include "actors/messages.h"
#include "actors/troupe_metrics.h"

namespace troupe {

/// What a head learns about leadership.
enum class election_role {
  leader,        ///< this head holds the lease of `term`
  follower,      ///< the voters name `leader` as the holder of `term`
  stepped_down,  ///< this head no longer leads (`detail` says why)
};

/// "leader", "follower" or "stepped_down".
const char* to_string(election_role r);

/// One transition, as reported to head_election_options::on_event.
struct election_event {
  election_role role = election_role::follower;
  uint64_t term = 0;       ///< leader: its term; follower: the leader's; stepped_down: the lost term
  std::string leader;      ///< leader: this head's id; follower: the holder; stepped_down: ""
  std::string detail;      ///< why (stepped_down), or what the voters said
  leadership::lease_time at;  ///< when the election saw it (steady clock)
};

/// The election's typed interface (its own timers; nothing else talks to it).
using head_election_actor = caf::typed_actor<
    /// The next round of requests if `generation` is still current.
    caf::reacts_to<elect_atom, uint64_t>,
    /// The lease may have ended: step down if it did.
    caf::reacts_to<expire_atom>>;

/// How a head's election is set up.
struct head_election_options {
  std::string id;                   ///< this head's name, unique among the heads (not empty)
  std::vector<std::string> voters;  ///< every voter's "host:port" (the same list on every head)
  leadership::lease_timing timing;  ///< leadership.lease_duration and drift_margin
  troupe_metrics* metrics = nullptr;  ///< troupe_head_* (none when null); must outlive the actor
  std::function<void(const election_event&)> on_event;  ///< must be thread-safe
};

/// Checks `o` (an id, at least one voter, each host:port with a port in 1..65535, none
/// twice, a lease longer than its drift margin) and throws std::invalid_argument naming
/// the field and the bad value.
void check_election_options(const head_election_options& o);

/// Splits "host:port" ("[::1]:7000" for IPv6); std::invalid_argument naming `what` when
/// it is not one.
std::pair<std::string, uint16_t> parse_host_port(const std::string& text, const std::string& what);

/// Checks `opts` (check_election_options) and spawns the election; it starts campaigning
/// after a random backoff of at most lease_duration / 3.
head_election_actor spawn_head_election(caf::actor_system& sys, head_election_options opts);

}  // namespace troupe
