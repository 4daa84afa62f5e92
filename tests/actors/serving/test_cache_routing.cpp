// Cache-aware routing (router.policy cache_aware) in front of two real CPU replicas of the
// default model: a request goes where the longest prefix of its tokens is cached (the
// replicas' prefix summaries tell the router about blocks it never saw, such as a reply's
// tokens), a replica far busier than the other loses that claim, unknown prompts go to the
// least loaded replica, and least_loaded ignores the caches.
#include <catch2/catch.hpp>
#include <chrono>
#include <map>
#include <thread>

#include "actors/actor_system_config.h"
#include "actors/cluster/placement.h"
#include "actors/serving/replica.h"
#include "actors/serving/router.h"
#include "engine_fixture.h"

using namespace troupe;
using namespace std::chrono_literals;

namespace {

cluster_config small_cluster() {
  cluster_config c;
  c.model.path = test::default_model();
  c.scheduler.kv_tokens = 4096;
  c.scheduler.max_seqs = 4;
  c.scheduler.max_batch_tokens = 256;
  return c;
}

/// Two ready replicas (one CPU shard each) behind a router with `policy`; every replica
/// and the router report to `metrics`.
struct two_replicas {
  cluster_config c = small_cluster();
  metrics::registry registry;  // outlives the actor system (the actors report to it)
  std::shared_ptr<troupe_metrics> metrics = std::make_shared<troupe_metrics>(registry);
  system_config cfg{c.fault_tolerance, 2};
  caf::actor_system sys{cfg};
  caf::scoped_actor self{sys};
  std::vector<shard_actor> shards;
  std::vector<replica_actor> replicas;
  router_actor router;

  explicit two_replicas(router_section policy) {
    auto ready = std::make_shared<std::atomic<int>>(0);
    for (int r = 0; r < 2; ++r) {
      replica_options o;
      o.index = r;
      o.config = c;
      o.meta = test::shared_default_model();
      o.metrics = metrics;
      o.shards.push_back(spawn_shard(
          sys, make_shard_spec(c, test::shared_default_model()->config(), shard_slot{r, 0, 0, "n", "cpu"})));
      shards.push_back(o.shards.front());
      o.on_state = [ready](int, bool ok, const std::string&) { *ready += ok ? 1 : 0; };
      replicas.push_back(spawn_replica(sys, o));
    }
    for (int i = 0; i < 1200 && *ready < 2; ++i) std::this_thread::sleep_for(50ms);
    REQUIRE(*ready == 2);
    c.router = policy;
    router = spawn_router(sys, replicas, 30s, 3, router_limits{}, routing_of(c, metrics));
    bool both = false;
    for (int i = 0; i < 500 && !both; ++i) {
      self->request(router, 5s, status_atom::value)
          .receive([&](router_status& s) { both = s.ready == 2; }, [](caf::error&) {});
      if (!both) std::this_thread::sleep_for(10ms);
    }
    REQUIRE(both);
  }
  ~two_replicas() {
    self->send_exit(router, caf::exit_reason::user_shutdown);
    for (auto& r : replicas) self->send_exit(r, caf::exit_reason::user_shutdown);
    for (auto& s : shards) self->send_exit(s, caf::exit_reason::user_shutdown);
  }

  /// Sends request `id` (greedy, exactly `n` tokens) through the router; events come to self.
  void send(uint64_t id, const std::vector<int32_t>& prompt, int n) {
    self->send(router, generate_atom::value, id, generate_request{prompt, test::greedy(n)},
               caf::actor_cast<caf::actor>(self));
  }
  /// Waits until `count` requests finished; returns each one's tokens by request id.
  std::map<uint64_t, std::vector<int32_t>> finish(size_t count) {
    std::map<uint64_t, std::vector<int32_t>> tokens;
    size_t done = 0;
    while (done < count) {
      bool got = false;
      self->receive(
          [&](token_atom, token_msg& m) {
            got = true;
            if (m.token >= 0) tokens[m.request].push_back(m.token);
            if (m.finished) {
              CHECK(m.finish_reason == "length");
              ++done;
            }
          },
          caf::after(120s) >> [] {});
      REQUIRE(got);
    }
    return tokens;
  }
  /// Requests routed to `replica` for `reason` (troupe_router_routed_total).
  double routed(int replica, const std::string& reason) {
    return metrics->router_routed.with({std::to_string(replica), reason}).value();
  }
  /// Prompt tokens replica `replica` found in its own prefix cache.
  double cache_hits(int replica) { return metrics->prefix_cache_hits.with({std::to_string(replica)}).value(); }
  double matched(int replica) { return metrics->router_matched_tokens.with({std::to_string(replica)}).value(); }
};

/// The tokens of `text` at the start of a prompt (with BOS when the model adds one).
std::vector<int32_t> encode(const std::string& text) {
  return test::shared_default_model()->tokenizer().encode(text, true, false);
}

/// The tokens of `text` that continue a prompt (no BOS).
std::vector<int32_t> more(const std::string& text) {
  return test::shared_default_model()->tokenizer().encode(text, false, false);
}

std::vector<int32_t> concat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

/// A system prompt of well over a hundred tokens, shared by the conversation's turns.
const std::string system_text =
    "You are a careful assistant for a hardware store. Answer questions about tools, paint, lumber, "
    "plumbing and garden supplies. Keep answers short and friendly, name the aisle where the item is, "
    "suggest one related product, and never invent prices. If a customer asks about something the store "
    "does not sell, say so politely and suggest where they might find it instead. Aisles: one is paint, "
    "two is lumber, three is plumbing, four is electrical, five is garden, six is hand tools.";

router_section policy(const std::string& name, int abs_threshold = 2, double rel_threshold = 1.5) {
  router_section p;
  p.policy = name;
  p.balance_abs_threshold = abs_threshold;
  p.balance_rel_threshold = rel_threshold;
  return p;
}

}  // namespace

TEST_CASE("a follow-up turn goes to the replica that served the conversation, its reply blocks included",
          "[router][cache-routing]") {
  two_replicas t(policy("cache_aware"));
  // An unrelated request keeps replica 0 busy, so the first turn goes to replica 1.
  t.send(1, encode("Write a long poem about the sea and the ships that sail on it."), 48);
  const auto turn1 = encode(system_text + "\nCustomer: where is the blue paint?\nAssistant:");
  t.send(2, turn1, 40);
  auto out = t.finish(2);
  CHECK(t.routed(0, "least_loaded") == 1);
  CHECK(t.routed(1, "least_loaded") == 1);

  // Both replicas are idle now (least_loaded would pick replica 0). The second turn holds
  // the first turn's prompt, its reply and a new question: it goes to replica 1, which
  // finds the prefix in its cache. The router never saw the reply's tokens as a prompt:
  // only replica 1's prefix summary tells it that those blocks are cached too.
  std::this_thread::sleep_for(100ms);  // a few summary intervals
  const double hits_before = t.cache_hits(1);
  const auto turn2 = concat(concat(turn1, out[2]), more("\nCustomer: and a brush for it?\nAssistant:"));
  t.send(3, turn2, 8);
  t.finish(1);
  CHECK(t.routed(1, "cache") == 1);
  CHECK(t.routed(0, "cache") == 0);
  const double prompt_blocks_tokens = double(((turn1.size() - 1) / 16) * 16);
  CHECK(t.matched(1) > prompt_blocks_tokens);  // reply blocks matched: known from the summary only
  CHECK(t.cache_hits(1) - hits_before >= t.matched(1));  // the replica really reused them
  CHECK(t.cache_hits(0) == 0);
}

TEST_CASE("a replica far busier than the least loaded loses its prefix claim", "[router][cache-routing]") {
  // Claims hold up to 1 request beyond the least loaded replica's (and 1.5 times it).
  two_replicas t(policy("cache_aware", 1, 1.5));
  const auto prefix = encode(system_text);
  t.send(1, concat(prefix, more("\nCustomer: hello")), 4);
  t.finish(1);
  CHECK(t.routed(0, "least_loaded") == 1);
  std::this_thread::sleep_for(100ms);

  // Three requests with the cached prefix at once: replica 0 keeps its claim for two of
  // them (1 then 2 requests against 0), the third finds it 2 requests ahead and goes to
  // replica 1.
  t.send(2, concat(prefix, more("\nCustomer: where are the hammers?")), 24);
  t.send(3, concat(prefix, more("\nCustomer: do you sell seeds?")), 24);
  t.send(4, concat(prefix, more("\nCustomer: what about pipes?")), 24);
  t.finish(3);
  CHECK(t.routed(0, "cache") == 2);
  CHECK(t.routed(1, "balance") == 1);
  CHECK(t.routed(1, "cache") == 0);
  // Both requests that kept the claim reused every full block of the prefix.
  CHECK(t.cache_hits(0) >= 2 * double((prefix.size() / 16) * 16));
}

TEST_CASE("prompts no replica has cached go to the least loaded replica", "[router][cache-routing]") {
  two_replicas t(policy("cache_aware"));
  t.send(1, encode("Tell me about the history of bridges in three sentences please, with dates."), 32);
  t.send(2, encode("List five birds that live near rivers and what each of them eats in winter."), 8);
  t.finish(2);
  CHECK(t.routed(0, "least_loaded") == 1);
  CHECK(t.routed(1, "least_loaded") == 1);
  CHECK(t.routed(0, "cache") + t.routed(1, "cache") == 0);
  CHECK(t.routed(0, "balance") + t.routed(1, "balance") == 0);
  CHECK(t.matched(0) + t.matched(1) == 0);
}

TEST_CASE("least_loaded routing ignores the prefix caches", "[router][cache-routing]") {
  two_replicas t(policy("least_loaded"));
  t.send(1, encode("Write a long poem about the sea and the ships that sail on it."), 48);
  const auto turn1 = encode(system_text + "\nCustomer: where is the blue paint?\nAssistant:");
  t.send(2, turn1, 8);
  t.finish(2);
  std::this_thread::sleep_for(100ms);
  t.send(3, concat(turn1, more(" Aisle one.\nCustomer: thanks!\nAssistant:")), 4);
  t.finish(1);
  // Both were idle: the follow-up went to replica 0, whose cache did not hold its prefix.
  CHECK(t.routed(0, "least_loaded") == 2);
  CHECK(t.routed(1, "least_loaded") == 1);
  CHECK(t.routed(0, "cache") + t.routed(1, "cache") == 0);
  CHECK(t.metrics->router_index_keys.value() == 0);
}
