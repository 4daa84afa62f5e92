#include "actors/leadership/lease.h"

#include <algorithm>
#include <functional>

namespace troupe::leadership {

namespace {

int64_t ms_between(lease_time from, lease_time to) {
  return std::chrono::ceil<std::chrono::milliseconds>(to - from).count();
}

}  // namespace

const char* to_string(lease_verdict v) {
  switch (v) {
    case lease_verdict::granted: return "granted";
    case lease_verdict::stale_term: return "stale_term";
    case lease_verdict::term_taken: return "term_taken";
    case lease_verdict::held: return "held";
    case lease_verdict::restarting: return "restarting";
    case lease_verdict::vacant: return "vacant";
  }
  return "lease_verdict(?)";
}

// -- voter ------------------------------------------------------------------------------

// A voter keeps its promises in memory only. After a restart it has forgotten the lease it
// may have granted just before: a candidate may still count that grant for up to
// lease_duration - drift_margin after it sent the request. So the voter grants nothing for
// one lease_duration after it starts; by then every lease it could have granted has ended.
lease_voter::lease_voter(lease_timing timing, lease_time started)
    : timing_(timing), quiet_until_(started + timing.lease_duration) {}

lease_reply lease_voter::refuse(lease_verdict v, lease_time now, std::string reason) const {
  lease_reply r;
  r.verdict = v;
  r.term = term_;
  r.holder = holder_;
  r.remaining_ms = v == lease_verdict::restarting ? ms_between(now, quiet_until_)
                                                  : std::max<int64_t>(0, ms_between(now, expiry_));
  r.reason = std::move(reason);
  return r;
}

lease_reply lease_voter::on_request(const std::string& candidate, uint64_t term, lease_time now) {
  const std::string asked = "term " + std::to_string(term) + " for " + candidate;
  if (now < quiet_until_)
    return refuse(lease_verdict::restarting, now,
                  "refused " + asked + ": this voter started less than one lease_duration ago (" +
                      std::to_string(ms_between(now, quiet_until_)) +
                      " ms left) and may have granted a lease it no longer remembers");
  if (term < term_)
    return refuse(lease_verdict::stale_term, now,
                  "refused " + asked + ": stale term, this voter has seen term " + std::to_string(term_) +
                      " (held by " + holder_ + ")");
  if (term == term_ && candidate != holder_ && !holder_.empty())
    return refuse(lease_verdict::term_taken, now,
                  "refused " + asked + ": term " + std::to_string(term_) + " was granted to " + holder_);
  if (term > term_ && now < expiry_)
    return refuse(lease_verdict::held, now,
                  "refused " + asked + ": the lease is held by " + holder_ + " (term " + std::to_string(term_) +
                      ") for " + std::to_string(ms_between(now, expiry_)) + " ms more");
  term_ = term;  // a new term, the holder renewing its own, or a term given back
  holder_ = candidate;
  expiry_ = now + timing_.lease_duration;
  lease_reply r;
  r.verdict = lease_verdict::granted;
  r.term = term_;
  r.holder = holder_;
  r.remaining_ms = timing_.lease_duration.count();
  return r;
}

lease_reply lease_voter::peek(lease_time now) const {
  if (now < quiet_until_)
    return refuse(lease_verdict::restarting, now, "this voter is restarting (it grants nothing yet)");
  if (now < expiry_)
    return refuse(lease_verdict::held, now,
                  "the lease is held by " + holder_ + " (term " + std::to_string(term_) + ") for " +
                      std::to_string(ms_between(now, expiry_)) + " ms more");
  return refuse(lease_verdict::vacant, now, "nobody holds the lease (highest term " + std::to_string(term_) + ")");
}

bool lease_voter::on_release(const std::string& candidate, uint64_t term, lease_time now) {
  if (candidate != holder_ || term != term_) return false;
  expiry_ = std::min(expiry_, now);
  holder_.clear();  // the candidate has left this term: another may have it
  return true;
}

// -- candidate --------------------------------------------------------------------------

lease_candidate::lease_candidate(std::string id, std::size_t voters, lease_timing timing)
    : id_(std::move(id)), voters_(voters), timing_(timing), standings_(voters) {}

uint64_t lease_candidate::campaign(lease_time now) {
  term_ = highest_seen_ + 1;
  highest_seen_ = term_;
  deposed_ = false;
  campaign_started_ = now;
  first_grant_sent_ = lease_time{};
  standings_.assign(voters_, standing{});
  return term_;
}

void lease_candidate::on_reply(std::size_t voter, uint64_t term, const lease_reply& reply, lease_time sent) {
  highest_seen_ = std::max(highest_seen_, reply.term);
  if (term != term_ || term_ == 0 || voter >= voters_) return;
  standing& s = standings_[voter];
  switch (reply.verdict) {
    case lease_verdict::granted: {
      // The voter's grant ends lease_duration after it RECEIVED the request, which is after
      // `sent`; the margin covers the clocks' drift over one lease.
      const lease_time end = sent + timing_.lease_duration - timing_.drift_margin;
      if (deposed_) return;
      if (!s.valid_until || *s.valid_until < end) s.valid_until = end;
      if (first_grant_sent_ == lease_time{} || sent < first_grant_sent_) first_grant_sent_ = sent;
      s.refused_for_good = false;
      return;
    }
    case lease_verdict::stale_term:
    case lease_verdict::term_taken:
      s.refused_for_good = true;
      s.valid_until.reset();
      // Another candidate won a higher term at this voter. While the other voters' grants
      // still make a majority, no candidate can win one before they end: a leader loses
      // only this voter. Without such a majority the candidate adopts the term and gives up
      // for good; its grants stay listed (granted_voters) for the next campaign to give back.
      if (reply.term > term_ && lease_end() <= sent) deposed_ = true;
      return;
    case lease_verdict::held:
    case lease_verdict::restarting:
    case lease_verdict::vacant:
      return;  // may grant later; a grant this voter gave before stays valid in our view
  }
}

lease_time lease_candidate::lease_end() const {
  if (deposed_) return lease_time{};
  std::vector<lease_time> ends;
  for (const auto& s : standings_)
    if (s.valid_until) ends.push_back(*s.valid_until);
  if (ends.size() < majority()) return lease_time{};
  std::sort(ends.begin(), ends.end(), std::greater<>());
  return ends[majority() - 1];
}

bool lease_candidate::hopeless() const {
  if (deposed_) return true;
  const auto refused = std::count_if(standings_.begin(), standings_.end(),
                                     [](const standing& s) { return s.refused_for_good; });
  return static_cast<std::size_t>(refused) > voters_ - majority();
}

std::vector<std::size_t> lease_candidate::granted_voters() const {
  std::vector<std::size_t> out;
  for (std::size_t v = 0; v < standings_.size(); ++v)
    if (standings_[v].valid_until) out.push_back(v);
  return out;
}

bool lease_candidate::holds_grant(std::size_t v, lease_time now) const {
  return !deposed_ && v < standings_.size() && standings_[v].valid_until && *standings_[v].valid_until > now;
}

}  // namespace troupe::leadership
