#include "actors/leadership/head_election.h"

#include <algorithm>
#include <optional>
#include <random>
#include <set>
#include <stdexcept>

#include "actors/actor_system_config.h"
#include "actors/leadership/lease_voter_actor.h"
#include "actors/link_connect.h"

namespace troupe {

const char* to_string(election_role r) {
  switch (r) {
    case election_role::leader: return "leader";
    case election_role::follower: return "follower";
    case election_role::stepped_down: return "stepped_down";
  }
  return "election_role(?)";
}

std::pair<std::string, uint16_t> parse_host_port(const std::string& text, const std::string& what) {
  const auto colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == text.size())
    throw std::invalid_argument(what + ": \"" + text + "\" is not host:port");
  std::string host = text.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  const std::string digits = text.substr(colon + 1);
  const bool numeric = digits.size() <= 5 && std::all_of(digits.begin(), digits.end(), [](char c) {
                         return c >= '0' && c <= '9';
                       });
  const long port = numeric ? std::stol(digits) : 0;
  if (port < 1 || port > 65535)
    throw std::invalid_argument(what + ": \"" + text + "\" has no port in 1..65535");
  return {host, static_cast<uint16_t>(port)};
}

void check_election_options(const head_election_options& o) {
  if (o.id.empty()) throw std::invalid_argument("head election: id must not be empty");
  if (o.voters.empty()) throw std::invalid_argument("head election: voters: at least one voter is needed");
  std::set<std::string> seen;
  for (std::size_t i = 0; i < o.voters.size(); ++i) {
    const std::string what = "head election: voters[" + std::to_string(i) + "]";
    parse_host_port(o.voters[i], what);
    if (!seen.insert(o.voters[i]).second)
      throw std::invalid_argument(what + ": \"" + o.voters[i] + "\" is listed twice");
  }
  const auto& t = o.timing;
  if (t.drift_margin.count() < 0 || t.lease_duration <= t.drift_margin || t.renew_interval().count() < 1)
    throw std::invalid_argument("head election: lease_duration (" + std::to_string(t.lease_duration.count()) +
                                " ms) must be longer than drift_margin (" + std::to_string(t.drift_margin.count()) +
                                " ms, not negative) and at least 3 ms");
}

namespace {

using leadership::lease_clock;
using leadership::lease_reply;
using leadership::lease_time;
using leadership::lease_verdict;
using std::chrono::milliseconds;

/// One voter as the election reaches it.
struct voter_link {
  std::string address;  ///< "host:port" as configured
  std::string host;
  uint16_t port = 0;
  lease_voter_actor handle;  ///< null until connected (and again once it is down)
  bool connecting = false;
  std::string last_error;  ///< the last connection error logged ("" = none)
  uint64_t higher_term_logged = 0;  ///< the higher term this voter named that was last logged
};

struct election_state {
  static inline const char* name = "troupe.head_election";
  head_election_options opts;
  std::optional<leadership::lease_candidate> candidate;
  std::vector<voter_link> voters;
  uint64_t generation = 0;          ///< of the pending round timer
  lease_time next_round{};          ///< when the pending round fires
  bool leading = false;
  std::string known_leader;         ///< the holder the voters named last (follower)
  uint64_t known_term = 0;
  lease_time known_since{};         ///< when a majority first named known_leader
  bool leader_existed = false;      ///< a leader was known (a later lease is a takeover)
  lease_time leader_seen_until{};   ///< the last known end of another leader's lease (or ours)
  std::string step_down_detail;     ///< why the candidate was deposed ("" = it was not)
  bool watching = false;            ///< following a live leader: only looking at the voters
  int peeks_pending = 0;            ///< status requests not answered yet (no campaign asks before)
  bool prevote_due = false;         ///< the campaign's next round looks at the voters first
  /// Per voter: the other head and term its last answer said holds a lease with time left
  /// ("" = none).
  std::vector<std::pair<std::string, uint64_t>> held_by;
  std::mt19937_64 rng{std::random_device{}()};
};

using self_ptr = head_election_actor::stateful_pointer<election_state>;

milliseconds jitter(self_ptr self, milliseconds lo, milliseconds hi) {
  std::uniform_int_distribution<int64_t> d(lo.count(), std::max(lo.count(), hi.count()));
  return milliseconds(d(self->state.rng));
}

void schedule_round(self_ptr self, milliseconds delay) {
  auto& st = self->state;
  st.next_round = lease_clock::now() + delay;
  self->delayed_send(self, delay, elect_atom::value, ++st.generation);
}

void report(self_ptr self, election_role role, uint64_t term, std::string leader, std::string detail) {
  election_event e{role, term, std::move(leader), std::move(detail), lease_clock::now()};
  const auto& id = self->state.opts.id;
  if (role == election_role::stepped_down)
    logger()->warn("head election: {} stepped down from term {}: {}", id, term, e.detail);
  else if (role == election_role::leader)
    logger()->info("head election: {} leads term {}", id, term);
  else
    logger()->info("head election: {} follows {} (term {})", id, e.leader, term);
  if (self->state.opts.on_event) self->state.opts.on_event(e);
}

void on_reply(self_ptr self, std::size_t v, uint64_t term, const lease_reply& r, lease_time sent);

void on_status(self_ptr self, std::size_t v, const lease_reply& r);

/// Connects to voter `v` through the middleman (TLS when the links are), asynchronously.
void connect(self_ptr self, std::size_t v) {
  auto& link = self->state.voters[v];
  link.connecting = true;
  connect_link_async<lease_voter_actor>(
      self, link.host, link.port, self->state.opts.timing.lease_duration, [self, v](caf::expected<lease_voter_actor> r) {
        auto& l = self->state.voters[v];
        l.connecting = false;
        if (!r) {
          const auto& e = r.error();
          const bool answered =
              e == caf::sec::no_actor_published_at_port || e == caf::sec::unexpected_actor_messaging_interface;
          const std::string why = connect_failure(self->home_system(), e, "lease voter");
          if (why != l.last_error) {
            if (answered)
              logger()->error("head election: voter {}: {}", l.address, why);
            else
              logger()->warn("head election: voter {} unreachable: {}", l.address, why);
          }
          l.last_error = why;
          return;
        }
        l.last_error.clear();
        l.handle = std::move(*r);
        self->monitor(l.handle);  // asked from the next round on
      });
}

/// Asks voter `v` for the candidate's current term (connecting first when needed).
void ask(self_ptr self, std::size_t v) {
  auto& st = self->state;
  auto& link = st.voters[v];
  if (!link.handle) {
    if (!link.connecting) connect(self, v);
    return;
  }
  const uint64_t term = st.candidate->term();
  const lease_time sent = lease_clock::now();
  self->request(link.handle, st.opts.timing.renew_interval(), lease_atom::value, st.opts.id, term)
      .then([=](const lease_reply& r) { on_reply(self, v, term, r, sent); },
            [=](caf::error&) {});  // unreachable or slow: the lease ends on its own
}

void release_grants(self_ptr self) {
  auto& c = *self->state.candidate;
  for (std::size_t v : c.granted_voters())
    if (auto& h = self->state.voters[v].handle) self->send(h, release_atom::value, self->state.opts.id, c.term());
}

/// Whether the candidate should give up its term and campaign for a higher one.
bool needs_new_campaign(const leadership::lease_candidate& c, lease_time now, milliseconds lease) {
  if (c.term() == 0 || c.hopeless() || c.highest_seen() > c.term()) return true;
  // Grants that still make no majority half a lease after the first: a split vote (or a
  // leadership that was lost).
  return !c.granted_voters().empty() && now - c.first_grant_sent() >= lease / 2;
}

/// Whether a majority of voters named another head's lease, and it has not ended yet.
bool leader_known_live(const election_state& st, lease_time now) {
  if (st.leading || st.known_leader.empty() || st.known_leader == st.opts.id || now >= st.leader_seen_until)
    return false;
  const auto naming = std::count(st.held_by.begin(), st.held_by.end(), std::make_pair(st.known_leader, st.known_term));
  return static_cast<std::size_t>(naming) >= st.candidate->majority();
}

/// Asks voter `v` for its lease's state only (a head that knows a live leader).
void peek(self_ptr self, std::size_t v) {
  auto& link = self->state.voters[v];
  if (!link.handle) {
    if (!link.connecting) connect(self, v);
    return;
  }
  ++self->state.peeks_pending;
  self->request(link.handle, self->state.opts.timing.renew_interval(), status_atom::value)
      .then(
          [=](const lease_reply& r) {
            --self->state.peeks_pending;
            on_status(self, v, r);
          },
          [=](caf::error&) { --self->state.peeks_pending; });
}

/// Gives the current term's grants back and starts a campaign for a higher term: at once,
/// or after a random backoff when the last campaign lost or split. Its first round only
/// looks at the voters (a pre-vote): when a majority names a live leader, the head follows
/// it instead of asking, so a voter the leader does not hold is not taken from under it.
void start_campaign(self_ptr self, lease_time now, bool back_off) {
  auto& st = self->state;
  auto& c = *st.candidate;
  const auto lease = st.opts.timing.lease_duration;
  release_grants(self);
  c.campaign(now);
  st.step_down_detail.clear();
  if (st.opts.metrics) st.opts.metrics->head_term.set(static_cast<double>(c.highest_seen()));
  st.prevote_due = true;
  schedule_round(self, back_off ? jitter(self, milliseconds(1), lease / 3) : milliseconds(0));
}

/// One round: renew while leading; while another head's lease is known to last, only look
/// at the voters (a campaign could take a voter the leader does not hold yet from under
/// it); otherwise ask for the campaign's term, or start a new campaign (after a random
/// backoff when the last one lost or split).
void round(self_ptr self) {
  auto& st = self->state;
  auto& c = *st.candidate;
  const auto& t = st.opts.timing;
  const lease_time now = lease_clock::now();
  const bool leads = c.leads(now);
  const milliseconds probe = jitter(self, t.lease_duration / 6, t.renew_interval());
  st.watching = leader_known_live(st, now);
  if (st.watching) {
    if (!c.granted_voters().empty()) {  // give the leader back what this campaign took
      release_grants(self);
      c.campaign(now);
    }
    for (std::size_t v = 0; v < st.voters.size(); ++v) peek(self, v);
    schedule_round(self, probe);
    return;
  }
  if (!leads && needs_new_campaign(c, now, t.lease_duration)) {
    start_campaign(self, now, c.hopeless() || !c.granted_voters().empty());
    return;
  }
  if (!leads && st.prevote_due) {
    st.prevote_due = false;
    for (std::size_t v = 0; v < st.voters.size(); ++v) peek(self, v);
    schedule_round(self, jitter(self, milliseconds(2), milliseconds(5)));
    return;
  }
  if (!leads && st.peeks_pending > 0) {  // the pre-vote's answers first (each has a timeout)
    schedule_round(self, jitter(self, milliseconds(2), milliseconds(5)));
    return;
  }
  for (std::size_t v = 0; v < st.voters.size(); ++v) ask(self, v);
  schedule_round(self, leads ? t.renew_interval() : probe);
}

void become_leader(self_ptr self, lease_time now) {
  auto& st = self->state;
  const auto& c = *st.candidate;
  st.leading = true;
  if (auto* m = st.opts.metrics) {
    m->head_is_leader.set(1);
    m->head_term.set(static_cast<double>(c.term()));
    if (st.leader_existed) {
      m->head_takeovers.inc();
      m->head_takeover_seconds.observe(
          std::max(0.0, std::chrono::duration<double>(now - st.leader_seen_until).count()));
    }
  }
  st.leader_existed = true;
  st.known_leader = st.opts.id;
  st.known_term = c.term();
  report(self, election_role::leader, c.term(), st.opts.id,
         std::to_string(c.granted_voters().size()) + " of " + std::to_string(c.voters()) + " voters granted");
  schedule_round(self, st.opts.timing.renew_interval());
}

void step_down(self_ptr self, lease_time now) {
  auto& st = self->state;
  const auto& c = *st.candidate;
  st.leading = false;
  st.leader_seen_until = now;
  st.known_leader.clear();
  if (st.opts.metrics) st.opts.metrics->head_is_leader.set(0);
  std::string why = st.step_down_detail;
  if (why.empty()) {
    std::size_t valid = 0;
    for (std::size_t v = 0; v < c.voters(); ++v) valid += c.holds_grant(v, now) ? 1 : 0;
    why = "renewals reached " + std::to_string(valid) + " of " + std::to_string(c.voters()) +
          " voters (a majority is " + std::to_string(c.majority()) + ") before the lease ended";
  }
  report(self, election_role::stepped_down, c.term(), "", why);
  schedule_round(self, jitter(self, milliseconds(1), st.opts.timing.lease_duration / 6));
}

/// Reports a transition when leadership changed at `now`; keeps an expiry check pending.
void evaluate(self_ptr self, lease_time now) {
  auto& st = self->state;
  const auto& c = *st.candidate;
  const bool leads = c.leads(now);
  if (leads && !st.leading) become_leader(self, now);
  else if (!leads && st.leading) step_down(self, now);
  if (st.leading) self->delayed_send(self, c.lease_end() - now, expire_atom::value);
}

/// What a voter's answer says about when to ask again, and about another head holding the
/// lease: once a majority of voters name the same holder and term with time left, that
/// head leads.
void learn_holder(self_ptr self, std::size_t v, const lease_reply& r, lease_time now) {
  auto& st = self->state;
  const bool names_lease = r.verdict == lease_verdict::held || r.verdict == lease_verdict::term_taken ||
                           r.verdict == lease_verdict::stale_term;
  const bool live = names_lease && r.remaining_ms > 0 && !r.holder.empty() && r.holder != st.opts.id;
  st.held_by[v] = live ? std::make_pair(r.holder, r.term) : std::make_pair(std::string(), uint64_t{0});
  if (st.leading) return;
  if (r.verdict == lease_verdict::vacant && st.watching && now + st.opts.timing.lease_duration / 10 < st.next_round)
    schedule_round(self, jitter(self, milliseconds(1), st.opts.timing.lease_duration / 10));  // free now
  if (!(live || r.verdict == lease_verdict::restarting)) return;
  const auto ends = now + milliseconds(r.remaining_ms);
  const auto retry = ends + jitter(self, milliseconds(1), st.opts.timing.lease_duration / 10);
  if (retry < st.next_round)  // ask again as soon as that lease (or quiet period) is due to end
    schedule_round(self, std::chrono::ceil<milliseconds>(retry - now));
  if (!live) return;
  const auto naming = std::count(st.held_by.begin(), st.held_by.end(), st.held_by[v]);
  if (static_cast<std::size_t>(naming) < st.candidate->majority()) return;
  st.leader_seen_until = std::max(st.leader_seen_until, ends);
  if (r.holder == st.known_leader && r.term == st.known_term) {
    // Named again a while later: it renewed, so it led (a head that briefly held a majority
    // of grants at start-up and gave them back at once did not).
    if (now - st.known_since >= st.opts.timing.lease_duration / 6) st.leader_existed = true;
    return;
  }
  st.known_leader = r.holder;
  st.known_term = r.term;
  st.known_since = now;
  report(self, election_role::follower, r.term, r.holder, r.reason);
}

/// A voter's status (peek): the term it has seen, and who holds its lease.
void on_status(self_ptr self, std::size_t v, const lease_reply& r) {
  auto& st = self->state;
  st.candidate->saw_term(r.term);
  if (st.opts.metrics) st.opts.metrics->head_term.set(static_cast<double>(st.candidate->highest_seen()));
  learn_holder(self, v, r, lease_clock::now());
}

/// A split vote: another candidate holds voters of the same term, and neither leads. Both
/// give their grants back and campaign again; the smaller id first, the other after a
/// longer backoff, so the next round does not split again.
void yield_split(self_ptr self, const std::string& rival, lease_time now) {
  auto& st = self->state;
  const auto lease = st.opts.timing.lease_duration;
  start_campaign(self, now, false);
  if (st.opts.id > rival) schedule_round(self, jitter(self, lease / 4, lease / 2));
}

void on_reply(self_ptr self, std::size_t v, uint64_t term, const lease_reply& r, lease_time sent) {
  auto& st = self->state;
  auto& c = *st.candidate;
  const lease_time now = lease_clock::now();
  c.on_reply(v, term, r, sent);
  if (r.verdict == lease_verdict::term_taken && st.leading && now + milliseconds(20) < st.next_round)
    schedule_round(self, jitter(self, milliseconds(5), milliseconds(20)));  // the rival gives it back soon
  if (r.verdict == lease_verdict::term_taken && term == c.term() && !c.leads(now) && !c.hopeless() &&
      !c.granted_voters().empty()) {
    yield_split(self, r.holder, now);
    return;
  }
  if (st.opts.metrics && r.term > 0)  // its own term while it leads, even past a voter that saw a later one
    st.opts.metrics->head_term.set(static_cast<double>(st.leading && c.leads(now) ? c.term() : c.highest_seen()));
  if (st.leading && r.term > term && term == c.term()) {
    const std::string seen = "voter " + st.voters[v].address + " has seen term " + std::to_string(r.term) +
                             " (held by " + r.holder + ")";
    if (!c.leads(now))
      st.step_down_detail = seen + ": another head won a later term";
    else if (st.voters[v].higher_term_logged != r.term) {
      st.voters[v].higher_term_logged = r.term;
      logger()->warn("head election: {}; this head leads on the other voters' grants", seen);
    }
  }
  learn_holder(self, v, r, now);
  evaluate(self, now);
}

head_election_actor::behavior_type election(self_ptr self, head_election_options opts) {
  auto& st = self->state;
  st.candidate.emplace(opts.id, opts.voters.size(), opts.timing);
  for (const auto& address : opts.voters) {
    auto [host, port] = parse_host_port(address, "voter");
    st.voters.push_back(voter_link{address, host, port, {}, false, {}});
  }
  st.held_by.resize(opts.voters.size());
  st.opts = std::move(opts);
  if (st.opts.metrics) st.opts.metrics->head_is_leader.set(0);
  self->set_down_handler([=](caf::down_msg& dm) {
    for (auto& l : self->state.voters)
      if (l.handle && l.handle.address() == dm.source) {
        logger()->warn("head election: voter {} is down: {}", l.address, self->home_system().render(dm.reason));
        l.handle = nullptr;
      }
  });
  schedule_round(self, jitter(self, milliseconds(0), st.opts.timing.renew_interval()));
  return {
      [=](elect_atom, uint64_t generation) {
        if (generation == self->state.generation) round(self);
      },
      [=](expire_atom) { evaluate(self, lease_clock::now()); },
  };
}

}  // namespace

head_election_actor spawn_head_election(caf::actor_system& sys, head_election_options opts) {
  check_election_options(opts);
  return sys.spawn(election, std::move(opts));
}

}  // namespace troupe
