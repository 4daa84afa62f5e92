// The lease's pure logic (actors/leadership/lease.h) with explicit times: what a voter
// grants and refuses, renewal and expiry, majorities, a restarted voter's quiet period,
// and that a leader's own view of its lease always ends before any voter frees it.
#include <catch2/catch.hpp>

#include "actors/leadership/lease.h"

using namespace troupe::leadership;
using namespace std::chrono_literals;

namespace {

const lease_timing timing{2000ms, 200ms};
const lease_time t0 = lease_time{} + 10h;

/// A voter that started long before t0 (its quiet period is over).
lease_voter settled_voter() { return lease_voter(timing, t0 - 1h); }

bool mentions(const std::string& text, const std::string& what) { return text.find(what) != std::string::npos; }

}  // namespace

TEST_CASE("a voter grants a higher term and refuses another candidate while the lease is held", "[leadership]") {
  auto v = settled_voter();
  const auto a = v.on_request("head-a", 1, t0);
  CHECK(a.verdict == lease_verdict::granted);
  CHECK(a.term == 1);
  CHECK(a.holder == "head-a");
  CHECK(a.remaining_ms == 2000);
  CHECK(v.expiry() == t0 + 2000ms);
  const auto b = v.on_request("head-b", 2, t0 + 1999ms);
  CHECK(b.verdict == lease_verdict::held);
  CHECK(b.term == 1);
  CHECK(b.holder == "head-a");
  CHECK(b.remaining_ms == 1);
  CHECK(mentions(b.reason, "the lease is held by head-a (term 1) for 1 ms more"));
  CHECK(v.term() == 1);  // a refused higher term is not remembered: it would depose the holder
  const auto later = v.on_request("head-b", 2, t0 + 2000ms);
  CHECK(later.verdict == lease_verdict::granted);
  CHECK(later.term == 2);
  CHECK(v.holder() == "head-b");
}

TEST_CASE("a voter refuses a stale term and a term it already granted to another candidate", "[leadership]") {
  auto v = settled_voter();
  REQUIRE(v.on_request("head-a", 5, t0).verdict == lease_verdict::granted);
  const auto stale = v.on_request("head-b", 4, t0 + 3s);
  CHECK(stale.verdict == lease_verdict::stale_term);
  CHECK(stale.term == 5);
  CHECK(stale.holder == "head-a");
  CHECK(mentions(stale.reason, "stale term, this voter has seen term 5"));
  const auto taken = v.on_request("head-c", 5, t0 + 3s);
  CHECK(taken.verdict == lease_verdict::term_taken);
  CHECK(taken.term == 5);
  CHECK(taken.holder == "head-a");
  CHECK(mentions(taken.reason, "term 5 was granted to head-a"));
  CHECK(v.holder() == "head-a");
  CHECK(v.expiry() == t0 + 2s);  // refusals change nothing
}

TEST_CASE("the holder renews its own term and the expiry moves with each renewal", "[leadership]") {
  auto v = settled_voter();
  REQUIRE(v.on_request("head-a", 1, t0).verdict == lease_verdict::granted);
  const auto renewed = v.on_request("head-a", 1, t0 + 1s);
  CHECK(renewed.verdict == lease_verdict::granted);
  CHECK(renewed.term == 1);
  CHECK(v.expiry() == t0 + 3s);
  CHECK(v.on_request("head-b", 2, t0 + 2500ms).verdict == lease_verdict::held);
  CHECK(v.on_request("head-b", 2, t0 + 3s).verdict == lease_verdict::granted);
}

TEST_CASE("once the lease expires a new term is granted and the old holder is refused as stale", "[leadership]") {
  auto v = settled_voter();
  REQUIRE(v.on_request("head-a", 1, t0).verdict == lease_verdict::granted);
  REQUIRE(v.on_request("head-b", 2, t0 + 2s).verdict == lease_verdict::granted);
  const auto old = v.on_request("head-a", 1, t0 + 2s + 1ms);
  CHECK(old.verdict == lease_verdict::stale_term);
  CHECK(old.term == 2);
  CHECK(old.holder == "head-b");
  // Nor can the old holder win the voter back with a higher term while b holds it.
  const auto again = v.on_request("head-a", 3, t0 + 3s);
  CHECK(again.verdict == lease_verdict::held);
  CHECK(again.holder == "head-b");
}

TEST_CASE("a released lease ends at once, only for its holder and term, and the term may go to another", "[leadership]") {
  auto v = settled_voter();
  REQUIRE(v.on_request("head-a", 1, t0).verdict == lease_verdict::granted);
  CHECK_FALSE(v.on_release("head-b", 1, t0 + 1ms));
  CHECK_FALSE(v.on_release("head-a", 2, t0 + 1ms));
  CHECK(v.on_request("head-b", 2, t0 + 2ms).verdict == lease_verdict::held);
  CHECK(v.on_release("head-a", 1, t0 + 3ms));
  CHECK(v.holder().empty());
  CHECK(v.on_request("head-b", 2, t0 + 3ms).verdict == lease_verdict::granted);
  // A term given back may go to another candidate (one that holds it elsewhere).
  auto w = settled_voter();
  REQUIRE(w.on_request("head-a", 4, t0).verdict == lease_verdict::granted);
  CHECK(w.on_request("head-b", 4, t0 + 1ms).verdict == lease_verdict::term_taken);
  CHECK(w.on_release("head-a", 4, t0 + 2ms));
  CHECK(w.on_request("head-b", 4, t0 + 3ms).verdict == lease_verdict::granted);
  CHECK(w.holder() == "head-b");
  CHECK(w.expiry() == t0 + 3ms + 2s);
}

TEST_CASE("a voter's status names the holder and its time left and grants nothing", "[leadership]") {
  lease_voter fresh(timing, t0);
  const auto quiet = fresh.peek(t0 + 500ms);
  CHECK(quiet.verdict == lease_verdict::restarting);
  CHECK(quiet.remaining_ms == 1500);
  auto v = settled_voter();
  CHECK(v.peek(t0).verdict == lease_verdict::vacant);
  REQUIRE(v.on_request("head-a", 3, t0).verdict == lease_verdict::granted);
  const auto held = v.peek(t0 + 500ms);
  CHECK(held.verdict == lease_verdict::held);
  CHECK(held.holder == "head-a");
  CHECK(held.term == 3);
  CHECK(held.remaining_ms == 1500);
  const auto after = v.peek(t0 + 2s);
  CHECK(after.verdict == lease_verdict::vacant);
  CHECK(after.term == 3);
  CHECK(v.expiry() == t0 + 2s);
  CHECK(v.term() == 3);
}

TEST_CASE("a restarted voter refuses every grant for one lease_duration after it starts", "[leadership]") {
  lease_voter v(timing, t0);
  const auto first = v.on_request("head-a", 1, t0);
  CHECK(first.verdict == lease_verdict::restarting);
  CHECK(first.remaining_ms == 2000);
  CHECK(mentions(first.reason, "may have granted a lease it no longer remembers"));
  const auto last = v.on_request("head-a", 7, t0 + 1999ms);
  CHECK(last.verdict == lease_verdict::restarting);
  CHECK(last.remaining_ms == 1);
  CHECK(v.term() == 0);
  const auto after = v.on_request("head-a", 7, t0 + 2000ms);
  CHECK(after.verdict == lease_verdict::granted);
  CHECK(after.term == 7);
}

TEST_CASE("a majority is more than half of 1, 2, 3 and 5 voters", "[leadership]") {
  CHECK(lease_candidate::majority_of(1) == 1);
  CHECK(lease_candidate::majority_of(2) == 2);
  CHECK(lease_candidate::majority_of(3) == 2);
  CHECK(lease_candidate::majority_of(4) == 3);
  CHECK(lease_candidate::majority_of(5) == 3);
  for (std::size_t n : {1u, 2u, 3u, 5u}) {
    lease_candidate c("head-a", n, timing);
    const uint64_t term = c.campaign(t0);
    CHECK(term == 1);
    std::vector<lease_voter> voters(n, settled_voter());
    CHECK_FALSE(c.leads(t0));
    for (std::size_t v = 0; v < n; ++v) {
      c.on_reply(v, term, voters[v].on_request("head-a", term, t0), t0);
      INFO(n << " voters, " << v + 1 << " granted");
      CHECK(c.leads(t0) == (v + 1 >= lease_candidate::majority_of(n)));
    }
  }
}

TEST_CASE("a candidate campaigns for the highest term it has seen plus one", "[leadership]") {
  auto v = settled_voter();
  REQUIRE(v.on_request("head-b", 9, t0).verdict == lease_verdict::granted);
  lease_candidate c("head-a", 1, timing);
  const uint64_t first = c.campaign(t0 + 3s);
  CHECK(first == 1);
  c.on_reply(0, first, v.on_request("head-a", first, t0 + 3s), t0 + 3s);
  CHECK_FALSE(c.leads(t0 + 3s));
  CHECK(c.hopeless());
  CHECK(c.highest_seen() == 9);
  const uint64_t second = c.campaign(t0 + 3s);
  CHECK(second == 10);
  c.on_reply(0, second, v.on_request("head-a", second, t0 + 3s), t0 + 3s);
  CHECK(c.leads(t0 + 3s));
  CHECK_FALSE(c.hopeless());
}

TEST_CASE("a leader's view of its lease ends drift_margin before the voters free it", "[leadership]") {
  lease_candidate c("head-a", 3, timing);
  std::vector<lease_voter> voters(3, settled_voter());
  const uint64_t term = c.campaign(t0);
  const std::vector<std::chrono::milliseconds> delay = {5ms, 40ms, 1ms};  // request transit times
  for (std::size_t v = 0; v < 3; ++v) c.on_reply(v, term, voters[v].on_request("head-a", term, t0 + delay[v]), t0);
  REQUIRE(c.leads(t0 + 40ms));
  CHECK(c.lease_end() == t0 + 1800ms);
  // Renew once through voters 0 and 1, then nothing reaches any voter again.
  const lease_time renew = t0 + 600ms;
  for (std::size_t v = 0; v < 2; ++v)
    c.on_reply(v, term, voters[v].on_request("head-a", term, renew + delay[v]), renew);
  CHECK(c.lease_end() == renew + 1800ms);
  // At every millisecond: while the leader counts itself leading, no voter of a majority
  // would grant another candidate any term.
  bool stepped_down = false;
  for (auto t = t0; t < t0 + 5s; t += 1ms) {
    std::size_t would_grant = 0;
    for (auto v : voters) would_grant += v.on_request("head-b", term + 1, t).verdict == lease_verdict::granted;
    const bool rival_could_lead = would_grant >= c.majority();
    INFO("t = t0 + " << std::chrono::duration_cast<std::chrono::milliseconds>(t - t0).count() << " ms");
    REQUIRE_FALSE((c.leads(t) && rival_could_lead));
    if (!c.leads(t) && !stepped_down) {
      stepped_down = true;
      CHECK(t == renew + 1800ms);
    }
  }
  CHECK(stepped_down);
  // A rival could first win 205 ms after the step-down (the margin, then voter 0's expiry:
  // its renewal arrived 5 ms after it was sent).
  auto granting = [&](lease_time t) {
    std::size_t n = 0;
    for (auto v : voters) n += v.on_request("head-b", term + 1, t).verdict == lease_verdict::granted;
    return n;
  };
  CHECK(granting(renew + 2004ms) == 1);
  CHECK(granting(renew + 2005ms) == 2);
}

TEST_CASE("a refusal that names a higher term costs a leader only that voter while the others' grants make a "
          "majority, and it steps down when they end",
          "[leadership]") {
  lease_candidate c("head-a", 3, timing);
  std::vector<lease_voter> voters(3, settled_voter());
  const uint64_t term = c.campaign(t0);
  for (std::size_t v = 0; v < 3; ++v) c.on_reply(v, term, voters[v].on_request("head-a", term, t0), t0);
  // The renewal reaches voters 0 and 1 only; voter 2's grant runs out and it grants head-b a
  // later term (one voter of three: head-b does not lead).
  const lease_time renew = t0 + 1500ms;
  for (std::size_t v = 0; v < 2; ++v) c.on_reply(v, term, voters[v].on_request("head-a", term, renew), renew);
  REQUIRE(voters[2].on_request("head-b", term + 1, t0 + 2s).verdict == lease_verdict::granted);
  const lease_time late = t0 + 2100ms;
  REQUIRE(c.leads(late));
  const auto refusal = voters[2].on_request("head-a", term, late);
  REQUIRE(refusal.verdict == lease_verdict::stale_term);
  c.on_reply(2, term, refusal, late);
  CHECK(c.leads(late));  // voters 0 and 1 hold its grants: head-b cannot win them first
  CHECK_FALSE(c.hopeless());
  CHECK(c.granted_voters() == std::vector<std::size_t>{0, 1});
  CHECK(c.highest_seen() == term + 1);
  // head-b's request for term + 1 at the voters head-a holds: refused while they hold it.
  CHECK(voters[0].on_request("head-b", term + 1, late).verdict == lease_verdict::held);
  // Renewals keep it leading on two voters; without them its view ends first, before any voter frees it.
  const lease_time renew2 = t0 + 3000ms;
  for (std::size_t v = 0; v < 2; ++v) c.on_reply(v, term, voters[v].on_request("head-a", term, renew2), renew2);
  CHECK(c.leads(renew2 + 1799ms));
  CHECK_FALSE(c.leads(renew2 + 1800ms));
  CHECK(voters[0].expiry() > renew2 + 1800ms);
  CHECK(c.campaign(renew2 + 1800ms) == term + 2);
}

TEST_CASE("a refusal that names a higher term deposes a candidate whose grants make no majority", "[leadership]") {
  lease_candidate c("head-a", 3, timing);
  std::vector<lease_voter> voters(3, settled_voter());
  REQUIRE(voters[2].on_request("head-b", 5, t0).verdict == lease_verdict::granted);
  REQUIRE(voters[2].on_release("head-b", 5, t0 + 1ms));
  c.saw_term(3);
  const uint64_t term = c.campaign(t0 + 10ms);  // term 4: below what voter 2 has seen
  c.on_reply(0, term, voters[0].on_request("head-a", term, t0 + 10ms), t0 + 10ms);
  REQUIRE(c.granted_voters() == std::vector<std::size_t>{0});
  const auto refusal = voters[2].on_request("head-a", term, t0 + 20ms);
  REQUIRE(refusal.verdict == lease_verdict::stale_term);
  c.on_reply(2, term, refusal, t0 + 20ms);
  CHECK(c.hopeless());
  CHECK_FALSE(c.holds_grant(0, t0 + 20ms));
  CHECK(c.granted_voters() == std::vector<std::size_t>{0});  // to give back: voter 0 holds term 4 for it
  CHECK(voters[0].on_release("head-a", term, t0 + 25ms));
  CHECK(voters[0].on_request("head-b", 6, t0 + 25ms).verdict == lease_verdict::granted);
  CHECK(c.highest_seen() == 5);
  // A grant of the deposed term that arrives late changes nothing.
  c.on_reply(1, term, voters[1].on_request("head-a", term, t0 + 30ms), t0 + 30ms);
  CHECK_FALSE(c.leads(t0 + 30ms));
  CHECK(c.granted_voters() == std::vector<std::size_t>{0});
  CHECK(c.campaign(t0 + 40ms) == 6);
  CHECK(c.granted_voters().empty());
}

TEST_CASE("a campaign is hopeless once a majority refused its term to give it to another", "[leadership]") {
  lease_candidate c("head-a", 3, timing);
  std::vector<lease_voter> voters(3, settled_voter());
  for (std::size_t v = 0; v < 2; ++v) REQUIRE(voters[v].on_request("head-b", 1, t0).verdict == lease_verdict::granted);
  const uint64_t term = c.campaign(t0);
  c.on_reply(2, term, voters[2].on_request("head-a", term, t0), t0);
  CHECK(c.granted_voters() == std::vector<std::size_t>{2});
  CHECK(c.first_grant_sent() == t0);
  c.on_reply(0, term, voters[0].on_request("head-a", term, t0), t0);
  CHECK_FALSE(c.hopeless());  // one refusal: the other two could still make a majority
  c.on_reply(1, term, voters[1].on_request("head-a", term, t0), t0);
  CHECK(c.hopeless());
  CHECK_FALSE(c.leads(t0));
  // A reply to an earlier term's request is ignored.
  lease_candidate d("head-c", 1, timing);
  d.campaign(t0);
  d.campaign(t0);
  auto fresh = settled_voter();
  d.on_reply(0, 1, fresh.on_request("head-c", 1, t0), t0);
  CHECK_FALSE(d.leads(t0));
}
