#pragma once
/// Leadership of the heads without an external store: the pure logic of a lease granted
/// by a majority of voters (no CAF; every time is passed in, on steady clocks).
///
/// Protocol. A head (a `lease_candidate`) asks every voter for the lease of a term,
/// `term = highest term it has seen + 1`. A voter (`lease_voter`) grants it when the term
/// is higher than any it has seen and the lease it granted last has expired, and then
/// holds it for that candidate for `lease_duration`; the holder renews the same term every
/// `lease_duration / 3` (same holder, same term: the expiry moves on). A head LEADS while
/// a majority of the voters granted its current term, and its own view of each grant ends
/// at (time it SENT the request) + lease_duration - drift_margin.
///
/// Safety (at most one leader at any instant). Two majorities share a voter v. v grants a
/// term only after the lease it granted before has expired on its own clock, i.e. at
/// least lease_duration after it RECEIVED the previous holder's last granted request;
/// that holder's view of v's grant ended drift_margin earlier still, counted from when it
/// SENT that request (before v received it). After granting term T, v refuses every
/// lower term, so the previous holder cannot win v back. Hence the old leader has stopped
/// leading before the new one can start, provided the clocks' rates differ by less than
/// drift_margin over one lease_duration (steady clocks, no wall clock). A candidate that
/// gives a term back (a campaign that cannot win) never counts that term again, so the
/// voter may end that lease at once and let another candidate have the term.
/// A voter remembers only in memory: a restarted voter refuses every grant for one
/// lease_duration after it starts (it may have granted a lease it no longer remembers).
/// It then learns the current term again from the next grant it makes; while the leader
/// is gone too, a restarted voter may grant a term lower than one granted before its
/// restart (still one leader at a time; fencing by term across such restarts needs the
/// head's persisted state, leadership.state_dir).
///
/// Timing knobs (cluster file, `leadership:`): lease_duration (default 2 s) bounds how
/// long a dead leader keeps the lease (takeover within about lease_duration plus a
/// retry); drift_margin (default 200 ms) is how much earlier the leader gives the lease up
/// than any voter frees it. Renewal every lease_duration / 3 survives one lost round.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "actors/leadership/lease_reply.h"

namespace troupe::leadership {

using lease_clock = std::chrono::steady_clock;
using lease_time = lease_clock::time_point;

/// The lease's timing (docs/reliability.md, "Leadership").
struct lease_timing {
  /// How long a voter holds a grant for its candidate after receiving the request.
  std::chrono::milliseconds lease_duration{2000};
  /// How much earlier than lease_duration the candidate stops counting a grant.
  std::chrono::milliseconds drift_margin{200};
  /// The candidate's renewal period while it leads (lease_duration / 3).
  std::chrono::milliseconds renew_interval() const { return lease_duration / 3; }
};

/// One voter's memory: the highest term seen, its holder and the grant's expiry.
class lease_voter {
 public:
  /// A voter that started at `started` (it refuses every grant until started + duration).
  lease_voter(lease_timing timing, lease_time started);

  /// Candidate `candidate` asks for the lease of `term` at `now`: granted when `term` is
  /// higher than any seen and the current lease has expired, when the holder renews its
  /// own term, or when the term was given back (on_release); the expiry becomes now +
  /// lease_duration. Refused otherwise, with why.
  lease_reply on_request(const std::string& candidate, uint64_t term, lease_time now);

  /// The candidate gives up the lease of `term` (a campaign that cannot win, or a leader
  /// that lost its majority; it never asks for that term again): when `candidate` holds
  /// that term, the lease ends now and the term may go to another candidate; true then.
  bool on_release(const std::string& candidate, uint64_t term, lease_time now);

  /// The voter's state at `now` without asking for anything: restarting, held (by whom,
  /// which term, for how long) or vacant. Heads that know a leader ask this instead of
  /// campaigning, so a voter the leader does not hold yet is not taken from under it.
  lease_reply peek(lease_time now) const;

  /// The highest term granted.
  uint64_t term() const { return term_; }
  /// Who holds it ("" = nobody yet).
  const std::string& holder() const { return holder_; }
  /// When the current grant expires.
  lease_time expiry() const { return expiry_; }

 private:
  lease_reply refuse(lease_verdict v, lease_time now, std::string reason) const;

  lease_timing timing_;
  lease_time quiet_until_;  ///< no grant before this (started + lease_duration)
  uint64_t term_ = 0;
  std::string holder_;
  lease_time expiry_{};
};

/// One head's side: its campaign, the grants it holds and whether it leads.
class lease_candidate {
 public:
  /// Candidate `id` (unique among the heads) before `voters` voters.
  lease_candidate(std::string id, std::size_t voters, lease_timing timing);

  /// Voters that must grant a term: more than half.
  static std::size_t majority_of(std::size_t voters) { return voters / 2 + 1; }
  /// majority_of(voters()).
  std::size_t majority() const { return majority_of(voters_); }

  /// Starts a campaign for term = highest seen + 1 (forgetting every grant) at `now`;
  /// returns the term.
  uint64_t campaign(lease_time now);

  /// Records voter `voter`'s reply to the request for `term` sent at `sent`; replies of
  /// another term are ignored. A refusal that names a higher term costs a candidate whose
  /// other grants still make a majority (valid at `sent`) only that voter; any other
  /// candidate adopts the term and is deposed (it then needs a new campaign).
  void on_reply(std::size_t voter, uint64_t term, const lease_reply& reply, lease_time sent);

  /// A term seen elsewhere (a voter's status): the next campaign goes above it.
  void saw_term(uint64_t term) { highest_seen_ = std::max(highest_seen_, term); }

  /// Whether a majority's grants of the current term are still valid at `now`.
  bool leads(lease_time now) const { return lease_end() > now; }
  /// When the current grants stop making a majority (the majority-th latest end of the
  /// candidate's view of a grant); lease_time{} when they never did.
  lease_time lease_end() const;

  /// Whether the current campaign can no longer win: too many voters refused its term for
  /// good (a higher term, or the term given to another), or it was deposed.
  bool hopeless() const;
  /// Voters that granted the current term (their grants may have expired since, or the
  /// candidate was deposed: then they are only to be given back).
  std::vector<std::size_t> granted_voters() const;
  /// Whether voter `v` has a grant of the current term still valid at `now` (none once deposed).
  bool holds_grant(std::size_t v, lease_time now) const;

  /// The term campaigned for or held.
  uint64_t term() const { return term_; }
  /// The highest term seen (own campaigns and voters' replies).
  uint64_t highest_seen() const { return highest_seen_; }
  /// When the current campaign started.
  lease_time campaign_started() const { return campaign_started_; }
  /// When the request of the earliest grant of the current term was sent (lease_time{} when
  /// none was granted): grants that make no majority long after it mean a split vote.
  lease_time first_grant_sent() const { return first_grant_sent_; }
  /// This candidate's id.
  const std::string& id() const { return id_; }
  /// The number of voters.
  std::size_t voters() const { return voters_; }

 private:
  /// One voter's standing in the current term.
  struct standing {
    std::optional<lease_time> valid_until;  ///< end of the candidate's view of the grant
    bool refused_for_good = false;          ///< stale_term or term_taken in this term
  };

  std::string id_;
  std::size_t voters_;
  lease_timing timing_;
  uint64_t term_ = 0;
  uint64_t highest_seen_ = 0;
  bool deposed_ = false;
  lease_time campaign_started_{};
  lease_time first_grant_sent_{};
  std::vector<standing> standings_;
};

}  // namespace troupe::leadership
