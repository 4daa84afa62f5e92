// Head election over real sockets: three actor systems in this process, each a head with
// a lease voter published on a loopback port (CAF middleman) and an election that asks all
// three voters. Short leases (300 ms, drift margin 90 ms) keep each case to a few seconds.
#include <catch2/catch.hpp>

#include <algorithm>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

#include "actors/actor_system_config.h"
#include "actors/leadership/head_election.h"
#include "actors/leadership/lease_voter_actor.h"
#include "actors/link_security.h"
#include "tcp_relay.h"

namespace {

using namespace troupe;
using namespace std::chrono_literals;
using leadership::lease_clock;
using leadership::lease_time;

const leadership::lease_timing fast{300ms, 90ms};

/// Every head's reported transitions, in the order they were reported.
class event_log {
 public:
  void add(const std::string& head, const election_event& e) {
    std::lock_guard<std::mutex> lock(m_);
    events_.emplace_back(head, e);
  }
  std::vector<std::pair<std::string, election_event>> snapshot() const {
    std::lock_guard<std::mutex> lock(m_);
    return events_;
  }
  /// The `leader` events (head, event).
  std::vector<std::pair<std::string, election_event>> leaders() const {
    std::vector<std::pair<std::string, election_event>> out;
    for (auto& [h, e] : snapshot())
      if (e.role == election_role::leader) out.emplace_back(h, e);
    return out;
  }

 private:
  mutable std::mutex m_;
  std::vector<std::pair<std::string, election_event>> events_;
};

/// One head: an actor system with the middleman, its published voter, its election.
struct head {
  explicit head(std::string n) : name(std::move(n)) {
    voter = spawn_lease_voter(*sys, fast);
    auto p = publish_link(*sys, voter, 0, "127.0.0.1");
    REQUIRE(p);
    port = *p;
  }
  head(const head&) = delete;
  head& operator=(const head&) = delete;
  ~head() { stop(); }

  void elect(const std::vector<std::string>& voters, event_log& log) {
    head_election_options o;
    o.id = name;
    o.voters = voters;
    o.timing = fast;
    o.metrics = &metrics;
    o.on_event = [&log, n = name](const election_event& e) { log.add(n, e); };
    election = spawn_head_election(*sys, o);
  }
  /// Ends this head as a crash would for its peers: its actors and its middleman go away.
  void stop() {
    if (!sys) return;
    caf::anon_send_exit(election, caf::exit_reason::kill);
    caf::anon_send_exit(voter, caf::exit_reason::kill);
    election = nullptr;
    voter = nullptr;
    sys.reset();
  }

  std::string name;
  system_config cfg{fault_tolerance_section{}, 2};
  std::unique_ptr<caf::actor_system> sys = std::make_unique<caf::actor_system>(cfg);
  metrics::registry registry;
  troupe_metrics metrics{registry};
  lease_voter_actor voter;
  uint16_t port = 0;
  head_election_actor election;
};

std::string local(uint16_t port) { return "127.0.0.1:" + std::to_string(port); }

/// Waits up to `limit` for `pred`; returns whether it held.
template <class Pred>
bool wait_for(Pred pred, std::chrono::milliseconds limit) {
  const auto end = lease_clock::now() + limit;
  while (!pred()) {
    if (lease_clock::now() > end) return false;
    std::this_thread::sleep_for(5ms);
  }
  return true;
}

/// Three heads named h0, h1, h2 (not electing yet).
std::vector<std::unique_ptr<head>> three_heads() {
  std::vector<std::unique_ptr<head>> heads;
  for (int i = 0; i < 3; ++i) heads.push_back(std::make_unique<head>("h" + std::to_string(i)));
  return heads;
}

std::size_t index_of(const std::string& name) { return static_cast<std::size_t>(name.at(1) - '0'); }

/// Checks that no two heads' leaderships overlap: each runs from its `leader` event to that
/// head's next `stepped_down` event, or to when the head was stopped (`stopped`), or to now.
void check_no_overlap(const event_log& log, const std::map<std::string, lease_time>& stopped = {}) {
  std::map<std::string, lease_time> open;
  std::vector<std::pair<lease_time, lease_time>> spans;
  for (auto& [h, e] : log.snapshot()) {
    if (e.role == election_role::leader) open[h] = e.at;
    if (e.role == election_role::stepped_down && open.count(h)) {
      spans.emplace_back(open[h], e.at);
      open.erase(h);
    }
  }
  for (auto& [h, start] : open)
    spans.emplace_back(start, stopped.count(h) ? stopped.at(h) : lease_clock::now());
  std::sort(spans.begin(), spans.end());
  for (std::size_t i = 1; i < spans.size(); ++i) {
    INFO("leadership " << i << " starts "
                       << std::chrono::duration_cast<std::chrono::microseconds>(spans[i - 1].second - spans[i].first).count()
                       << " us before the previous one ended");
    CHECK(spans[i].first >= spans[i - 1].second);
  }
}

}  // namespace

TEST_CASE("three heads over real sockets elect exactly one leader and the others follow it", "[actors][leadership]") {
  event_log log;
  auto heads = three_heads();
  std::vector<std::string> voters;
  for (auto& h : heads) voters.push_back(local(h->port));
  for (auto& h : heads) h->elect(voters, log);

  REQUIRE(wait_for([&] { return !log.leaders().empty(); }, 3s));
  std::this_thread::sleep_for(3 * fast.lease_duration);  // renewals keep the same leader
  const auto leaders = log.leaders();
  REQUIRE(leaders.size() == 1);
  const auto& [leader, won] = leaders.front();
  CHECK(won.leader == leader);
  CHECK(won.term >= 1);
  for (auto& [h, e] : log.snapshot()) CHECK(e.role != election_role::stepped_down);
  for (auto& h : heads) {
    INFO(h->name);
    if (h->name == leader) {
      CHECK(h->metrics.head_is_leader.value() == 1);
      CHECK(h->metrics.head_term.value() == static_cast<double>(won.term));
      continue;
    }
    CHECK(h->metrics.head_is_leader.value() == 0);
    std::optional<election_event> last;
    for (auto& [name, e] : log.snapshot())
      if (name == h->name && e.role == election_role::follower) last = e;
    REQUIRE(last);
    CHECK(last->leader == leader);
    CHECK(last->term == won.term);
  }
  for (auto& h : heads) CHECK(h->metrics.head_takeovers.value() == 0);
}

TEST_CASE("when the leader's process goes away another head leads a higher term within two leases",
          "[actors][leadership]") {
  event_log log;
  auto heads = three_heads();
  std::vector<std::string> voters;
  for (auto& h : heads) voters.push_back(local(h->port));
  for (auto& h : heads) h->elect(voters, log);
  REQUIRE(wait_for([&] { return !log.leaders().empty(); }, 3s));
  std::this_thread::sleep_for(fast.lease_duration);
  REQUIRE(log.leaders().size() == 1);
  const auto [old_leader, old] = log.leaders().front();

  const lease_time killed = lease_clock::now();
  heads[index_of(old_leader)]->stop();
  REQUIRE(wait_for([&] { return log.leaders().size() >= 2; }, 3s));
  const auto [new_leader, taken] = log.leaders().back();
  const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(taken.at - killed);
  INFO(new_leader << " took over term " << taken.term << " after " << took.count() << " ms");
  CHECK(new_leader != old_leader);
  CHECK(taken.term > old.term);
  CHECK(took <= 2 * fast.lease_duration);
  std::this_thread::sleep_for(2 * fast.lease_duration);
  CHECK(log.leaders().size() == 2);  // the new leader keeps its lease; the third head follows
  auto& winner = *heads[index_of(new_leader)];
  CHECK(winner.metrics.head_is_leader.value() == 1);
  CHECK(winner.metrics.head_takeovers.value() == 1);
  const auto text = winner.registry.render();
  CHECK(text.find("troupe_head_takeover_seconds_count 1") != std::string::npos);
  check_no_overlap(log, {{old_leader, killed}});
}

TEST_CASE("a leader whose renewals cannot reach a majority steps down before another head is elected",
          "[actors][leadership]") {
  event_log log;
  auto heads = three_heads();
  // Head i reaches its own voter directly and voter j != i through relay [i][j].
  std::map<std::pair<std::size_t, std::size_t>, std::unique_ptr<test::tcp_relay>> relays;
  for (std::size_t i = 0; i < 3; ++i) {
    std::vector<std::string> voters;
    for (std::size_t j = 0; j < 3; ++j) {
      if (i == j) {
        voters.push_back(local(heads[j]->port));
        continue;
      }
      relays[{i, j}] = std::make_unique<test::tcp_relay>(heads[j]->port);
      voters.push_back(local(relays[{i, j}]->port()));
    }
    heads[i]->elect(voters, log);
  }
  REQUIRE(wait_for([&] { return !log.leaders().empty(); }, 3s));
  std::this_thread::sleep_for(fast.lease_duration);
  REQUIRE(log.leaders().size() == 1);
  const auto [old_leader, old] = log.leaders().front();
  const std::size_t cut_off = index_of(old_leader);

  for (auto& [ends, relay] : relays)  // a partition: the leader and the others hear nothing of each other
    if (ends.first == cut_off || ends.second == cut_off) relay->cut();
  const lease_time cut = lease_clock::now();
  REQUIRE(wait_for([&] { return log.leaders().size() >= 2; }, 3s));
  const auto [new_leader, taken] = log.leaders().back();
  CHECK(new_leader != old_leader);
  CHECK(taken.term > old.term);

  std::optional<election_event> down;
  for (auto& [h, e] : log.snapshot())
    if (h == old_leader && e.role == election_role::stepped_down) down = e;
  REQUIRE(down);
  INFO("stepped down " << std::chrono::duration_cast<std::chrono::milliseconds>(down->at - cut).count()
                       << " ms after the cut, the new leader came "
                       << std::chrono::duration_cast<std::chrono::milliseconds>(taken.at - down->at).count()
                       << " ms later");
  CHECK(down->at < taken.at);
  CHECK(down->term == old.term);
  CHECK_THAT(down->detail, Catch::Contains("renewals reached 1 of 3 voters"));
  CHECK(heads[cut_off]->metrics.head_is_leader.value() == 0);
  check_no_overlap(log);
  for (auto& h : heads) h->stop();  // before the relays close their sockets
}
