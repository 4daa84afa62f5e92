// The shard actor in one process: a scoped_actor plays the replica, drives two pipeline
// stages of the default model over real UCX links, aborts a blocked step, sees a load
// failure, spawns a shard through a node agent, and fences the steps of an older term.
#include <algorithm>
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <spdlog/sinks/ringbuffer_sink.h>
#include <sstream>
#include <thread>

#include "actors/actor_system_config.h"
#include "actors/cluster/node_agent.h"
#include "actors/cluster/supervisor.h"
#include "actors/serving/compute_priority.h"
#include "actors/serving/shard.h"
#include "actors/shard_steps.h"
#include "engine_fixture.h"

namespace {

using namespace troupe;
using test::pipeline_spec;
using test::prefill_step;
using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

/// An actor system with troupe's configuration, a scoped actor as the replica, and every
/// shard spawned through it stopped at the end (a shard with pending replies stays alive).
struct shard_fixture {
  system_config cfg{fault_tolerance_section{}};
  caf::actor_system sys{cfg};
  caf::scoped_actor self{sys};
  std::vector<shard_actor> spawned;

  shard_actor spawn(const shard_spec& spec) {
    spawned.push_back(spawn_shard(sys, spec));
    return spawned.back();
  }

  ~shard_fixture() {
    for (auto& s : spawned) self->send_exit(s, caf::exit_reason::user_shutdown);
  }

  /// The answer of `h` to `xs...`, or the error.
  template <class T, class Handle, class... Ts>
  caf::expected<T> ask(const Handle& h, Ts&&... xs) {
    return test::ask<T>(self, h, std::forward<Ts>(xs)...);
  }

  std::string render(const caf::error& e) { return sys.render(e); }
};

std::vector<int32_t> prompt_tokens() {
  return test::shared_default_model()->tokenizer().encode("The capital of France is", false, false);
}

/// The single-process engine's first greedy token for `prompt`.
int32_t engine_first_token(const std::vector<int32_t>& prompt) {
  auto e = test::make_engine();
  auto out = e->generate({prompt}, test::greedy(1));
  REQUIRE(out.size() == 1);
  REQUIRE(out[0].tokens.size() == 1);
  return out[0].tokens[0];
}

/// Gets both stages' addresses and connects them to each other (as the head of term `t`).
void connect_pipeline(shard_fixture& f, const shard_actor& s0, const shard_actor& s1, head_term t = {}) {
  auto a0 = f.ask<shard_addresses>(s0, addresses_atom::value);
  auto a1 = f.ask<shard_addresses>(s1, addresses_atom::value);
  REQUIRE(a0);
  REQUIRE(a1);
  CHECK(a0->prev.empty());
  CHECK(!a0->next.empty());
  CHECK(!a1->prev.empty());
  CHECK(a1->next.empty());
  shard_peers p0, p1;
  p0.next = a1->prev;
  p1.prev = a0->next;
  // Both connects must be in flight together: each side waits for the other.
  auto h0 = f.self->request(s0, 20s, connect_atom::value, t, p0);
  auto h1 = f.self->request(s1, 20s, connect_atom::value, t, p1);
  bool ok0 = false, ok1 = false;
  h0.receive([&](caf::ok_atom) { ok0 = true; }, [&](caf::error& e) { FAIL("stage 0 connect: " << f.render(e)); });
  h1.receive([&](caf::ok_atom) { ok1 = true; }, [&](caf::error& e) { FAIL("stage 1 connect: " << f.render(e)); });
  REQUIRE(ok0);
  REQUIRE(ok1);
}

/// The threads of this process whose nice value is `nice` (/proc/self/task/T/stat, field 19).
size_t threads_with_nice(int nice) {
  size_t n = 0;
  for (const auto& t : std::filesystem::directory_iterator("/proc/self/task")) {
    std::ifstream in(t.path() / "stat");
    std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const auto close = stat.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream fields(stat.substr(close + 2));  // from field 3 (state) on
    std::string f;
    for (int i = 3; i <= 19 && fields >> f; ++i)
      if (i == 19 && std::stoi(f) == nice) ++n;
  }
  return n;
}

}  // namespace

TEST_CASE("two pipeline shard actors sample the single engine's first greedy token", "[actors][shard][slow]") {
  shard_fixture f;
  auto s0 = f.spawn(pipeline_spec(0));
  auto s1 = f.spawn(pipeline_spec(1));
  connect_pipeline(f, s0, s1);
  const auto prompt = prompt_tokens();
  REQUIRE(prompt.size() > 1);
  auto step = prefill_step(prompt);
  auto h0 = f.self->request(s0, 20s, step_atom::value, head_term{}, step);
  auto h1 = f.self->request(s1, 20s, step_atom::value, head_term{}, step);
  std::optional<step_output> o0, o1;
  h0.receive([&](step_output& o) { o0 = std::move(o); }, [&](caf::error& e) { FAIL("stage 0: " << f.render(e)); });
  h1.receive([&](step_output& o) { o1 = std::move(o); }, [&](caf::error& e) { FAIL("stage 1: " << f.render(e)); });
  REQUIRE(o0);
  REQUIRE(o1);
  CHECK(o0->step_id == 7);
  CHECK(o0->samples.empty());  // only the last stage samples
  CHECK(o1->step_id == 7);
  REQUIRE(o1->samples.size() == 1);
  CHECK(o1->samples[0].token == engine_first_token(prompt));
}

TEST_CASE("abort releases a shard waiting for activations that never come, and it stays alive",
          "[actors][shard][slow]") {
  shard_fixture f;
  auto s0 = f.spawn(pipeline_spec(0));
  auto s1 = f.spawn(pipeline_spec(1));
  connect_pipeline(f, s0, s1);
  auto handle = f.self->request(s1, 20s, step_atom::value, head_term{}, prefill_step(prompt_tokens()));
  std::this_thread::sleep_for(100ms);  // stage 1 is now blocked receiving from stage 0
  const auto t0 = clock_type::now();
  f.self->send(s1, abort_atom::value);
  std::string error;
  handle.receive([](step_output&) { FAIL("the step succeeded without its activations"); },
                 [&](caf::error& e) { error = f.render(e); });
  INFO(error);
  CHECK(clock_type::now() - t0 < 500ms);
  CHECK(error.find("shard s1r0: step 7 failed") != std::string::npos);
  // The shard is still there (the replica decides what to do with it).
  auto again = f.ask<shard_addresses>(s1, addresses_atom::value);
  CHECK(again);
}

TEST_CASE("a new head's adoption cuts short the old owner's step waiting for activations that never come and its "
          "queued steps: the adoption answers at once and the shard runs the new owner's steps",
          "[actors][shard][term][slow]") {
  shard_fixture f;
  auto s0 = f.spawn(pipeline_spec(0));
  auto s1 = f.spawn(pipeline_spec(1));
  connect_pipeline(f, s0, s1);
  // Term 0's head sends stage 1 two steps and dies before stage 0 gets one: the first
  // blocks receiving (up to the spec's 5 s timeout), the second waits behind it.
  auto blocked = f.self->request(s1, 30s, step_atom::value, head_term{}, prefill_step(prompt_tokens(), 7));
  auto queued = f.self->request(s1, 30s, step_atom::value, head_term{}, prefill_step(prompt_tokens(), 8));
  std::this_thread::sleep_for(100ms);  // stage 1 is now blocked receiving from stage 0
  const auto t0 = clock_type::now();
  auto adopted = f.ask<shard_addresses>(s1, adopt_atom::value, head_term{1});
  INFO((adopted ? std::string() : f.render(adopted.error())));
  REQUIRE(adopted);
  CHECK(clock_type::now() - t0 < 1s);  // not after the blocked step's timeout
  for (auto* h : {&blocked, &queued}) {
    std::string error;
    h->receive([](step_output&) { FAIL("a step of the old owner succeeded without its activations"); },
               [&](caf::error& e) { error = f.render(e); });
    INFO(error);
    CHECK(error.find("shard s1r0") != std::string::npos);
  }
  // The new owner connects the pipeline afresh (stage 0 adopted too) and steps run again.
  REQUIRE(f.ask<shard_addresses>(s0, adopt_atom::value, head_term{1}));
  connect_pipeline(f, s0, s1, head_term{1});
  const auto step = prefill_step(prompt_tokens(), 9);
  auto h0 = f.self->request(s0, 20s, step_atom::value, head_term{1}, step);
  auto h1 = f.self->request(s1, 20s, step_atom::value, head_term{1}, step);
  std::optional<step_output> o1;
  h0.receive([](step_output&) {}, [&](caf::error& e) { FAIL("stage 0: " << f.render(e)); });
  h1.receive([&](step_output& o) { o1 = std::move(o); }, [&](caf::error& e) { FAIL("stage 1: " << f.render(e)); });
  REQUIRE(o1);
  REQUIRE(o1->samples.size() == 1);
  CHECK(o1->samples[0].token == engine_first_token(prompt_tokens()));
}

TEST_CASE("a shard stopped while its step waits for a peer terminates at once and answers the step",
          "[actors][shard][slow]") {
  shard_fixture f;
  auto s0 = f.spawn(pipeline_spec(0));
  auto s1 = f.spawn(pipeline_spec(1));
  connect_pipeline(f, s0, s1);
  auto handle = f.self->request(s1, 20s, step_atom::value, head_term{}, prefill_step(prompt_tokens()));
  std::this_thread::sleep_for(100ms);
  f.self->monitor(s1);
  const auto t0 = clock_type::now();
  f.self->send_exit(s1, caf::exit_reason::user_shutdown);
  std::string error;
  handle.receive([](step_output&) { FAIL("the step succeeded without its activations"); },
                 [&](caf::error& e) { error = f.render(e); });
  INFO(error);
  CHECK(error.find("shard s1r0") != std::string::npos);
  bool down = false;
  f.self->receive([&](caf::down_msg&) { down = true; }, caf::after(2s) >> [] {});
  CHECK(down);
  CHECK(clock_type::now() - t0 < 500ms);
}

TEST_CASE("a shard with a bad model path answers every request with an error naming the shard and path",
          "[actors][shard]") {
  shard_fixture f;
  auto spec = pipeline_spec(1);
  spec.model_path = "/nonexistent/troupe/missing-model.gguf";
  auto s = f.spawn(spec);
  // Asked while loading (pending) and after the failure (later): all get the error.
  auto pending = f.self->request(s, 20s, connect_atom::value, head_term{}, shard_peers{});
  auto addresses = f.ask<shard_addresses>(s, addresses_atom::value);
  REQUIRE(!addresses);
  const auto why = f.render(addresses.error());
  INFO(why);
  CHECK(why.find("shard s1r0") != std::string::npos);
  CHECK(why.find("/nonexistent/troupe/missing-model.gguf") != std::string::npos);
  std::string pending_error;
  pending.receive([](caf::ok_atom) { FAIL("connect succeeded without a model"); },
                  [&](caf::error& e) { pending_error = f.render(e); });
  CHECK(pending_error == why);
  auto later = f.ask<step_output>(s, step_atom::value, head_term{}, step_request{});
  REQUIRE(!later);
  CHECK(f.render(later.error()) == why);
}

TEST_CASE("a node agent spawns a shard, logs its progress and stops it on stop", "[actors][shard][slow]") {
  auto sink = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(256);
  logger()->sinks().push_back(sink);
  shard_fixture f;
  node_agent_options opts;
  opts.info.name = "n0";
  opts.model_path = pipeline_spec(0).model_path;
  opts.fault_tolerance.compute_nice = 7;  // the CPU shard's worker thread yields to the control plane
  struct nice_reset {
    ~nice_reset() { set_compute_nice(0); }  // the shards of later cases in this process as started
  } reset;
  REQUIRE(threads_with_nice(7) == 0);
  auto agent = spawn_node_agent(f.sys, opts);
  shard_spec spec = pipeline_spec(0);
  spec.n_stages = 1;
  spec.layers = {0, 30};
  auto shard = f.ask<shard_actor>(agent, spawn_shard_atom::value, head_term{}, spec);
  REQUIRE(shard);
  auto addresses = f.ask<shard_addresses>(*shard, addresses_atom::value);
  REQUIRE(addresses);
  CHECK(threads_with_nice(7) >= 1);  // the worker (and any OpenMP threads it started)
  REQUIRE(f.ask<caf::ok_atom>(*shard, connect_atom::value, head_term{}, shard_peers{}));
  const auto prompt = prompt_tokens();
  auto out = f.ask<step_output>(*shard, step_atom::value, head_term{}, prefill_step(prompt));
  REQUIRE(out);
  REQUIRE(out->samples.size() == 1);
  CHECK(out->samples[0].token == engine_first_token(prompt));

  f.self->monitor(*shard);
  REQUIRE(f.ask<caf::ok_atom>(agent, stop_atom::value, head_term{}));
  caf::error reason = caf::sec::runtime_error;
  f.self->receive([&](caf::down_msg& dm) { reason = dm.reason; },
                  caf::after(5s) >> [] { FAIL("the shard did not stop"); });
  CHECK(reason == caf::exit_reason::user_shutdown);
  f.self->send_exit(agent, caf::exit_reason::user_shutdown);

  auto lines = sink->last_formatted();
  auto logged = [&](const std::string& text) {
    return std::any_of(lines.begin(), lines.end(),
                       [&](const std::string& l) { return l.find(text) != std::string::npos; });
  };
  CHECK(logged("shard s0r0: loading"));
  CHECK(logged("shard s0r0: loaded"));
  CHECK(logged("shard s0r0: connected"));
  CHECK(!logged("shard s0r0: failed"));
  auto& sinks = logger()->sinks();
  sinks.erase(std::remove(sinks.begin(), sinks.end(), sink), sinks.end());
}

TEST_CASE("a node agent logs a shard's load failure", "[actors][shard]") {
  auto sink = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(256);
  logger()->sinks().push_back(sink);
  shard_fixture f;
  shard_spec spec = pipeline_spec(0);
  spec.model_path = "/nonexistent/troupe/other-model.gguf";
  node_agent_options opts;
  opts.model_path = spec.model_path;  // the cluster file names it; loading it fails
  auto agent = spawn_node_agent(f.sys, opts);
  auto shard = f.ask<shard_actor>(agent, spawn_shard_atom::value, head_term{}, spec);
  REQUIRE(shard);
  REQUIRE(!f.ask<shard_addresses>(*shard, addresses_atom::value));
  REQUIRE(f.ask<caf::ok_atom>(agent, stop_atom::value, head_term{}));
  f.self->send_exit(agent, caf::exit_reason::user_shutdown);
  auto lines = sink->last_formatted();
  CHECK(std::any_of(lines.begin(), lines.end(), [](const std::string& l) {
    return l.find("shard s0r0: failed: /nonexistent/troupe/other-model.gguf") != std::string::npos;
  }));
  auto& sinks = logger()->sinks();
  sinks.erase(std::remove(sinks.begin(), sinks.end(), sink), sinks.end());
}

TEST_CASE("a shard spawned through a remote node agent is driven over the middleman", "[actors][shard][slow]") {
  shard_fixture node;    // the node process: publishes its agent
  shard_fixture client;  // the head / replica process
  // The head's supervisor knows node n0; the agent attaches to it from its own process, which
  // is what lets the head's actors spawn shards there.
  auto config = default_cluster_config();
  config.nodes.front().name = "n0";
  supervisor_options so;
  so.config = config;
  so.launch_local_nodes = false;
  auto sup = spawn_supervisor(client.sys, so);
  auto sup_port = client.sys.middleman().publish(sup, 0, "127.0.0.1");
  REQUIRE(sup_port);
  auto head = node.sys.middleman().remote_actor<supervisor_actor>("127.0.0.1", *sup_port);
  REQUIRE(head);
  node_agent_options ao;
  ao.info.name = "n0";
  ao.model_path = pipeline_spec(0).model_path;
  auto agent = spawn_node_agent(node.sys, ao);
  node.self->send(agent, attach_atom::value, *head);
  bool registered = false;
  for (int i = 0; i < 200 && !registered; ++i, std::this_thread::sleep_for(10ms)) {
    auto st = client.ask<cluster_status>(sup, status_atom::value);
    registered = st && st->nodes.size() == 1 && st->nodes[0].state == node_state::registered;
  }
  REQUIRE(registered);
  auto port = node.sys.middleman().publish(agent, 0, "127.0.0.1");
  REQUIRE(port);
  auto remote = client.sys.middleman().remote_actor<node_agent_actor>("127.0.0.1", *port);
  REQUIRE(remote);
  shard_spec spec = pipeline_spec(0);
  spec.n_stages = 1;
  spec.layers = {0, 30};
  auto shard = client.ask<shard_actor>(*remote, spawn_shard_atom::value, head_term{}, spec);
  REQUIRE(shard);
  CHECK(shard->node() == node.sys.node());
  REQUIRE(client.ask<shard_addresses>(*shard, addresses_atom::value));
  REQUIRE(client.ask<caf::ok_atom>(*shard, connect_atom::value, head_term{}, shard_peers{}));
  const auto prompt = prompt_tokens();
  auto out = client.ask<step_output>(*shard, step_atom::value, head_term{}, prefill_step(prompt));
  REQUIRE(out);
  REQUIRE(out->samples.size() == 1);
  CHECK(out->samples[0].token == engine_first_token(prompt));
  REQUIRE(client.ask<caf::ok_atom>(*remote, stop_atom::value, head_term{}));
  node.self->send_exit(agent, caf::exit_reason::user_shutdown);
  client.sys.middleman().unpublish(sup, *sup_port);
  client.self->send_exit(sup, caf::exit_reason::user_shutdown);
}

TEST_CASE("a shard adopted by a head of a newer term refuses the older term's steps, connects and adoptions, "
          "naming both terms, and runs the newer term's steps",
          "[actors][shard][term]") {
  shard_fixture f;
  shard_spec spec = pipeline_spec(0);
  spec.n_stages = 1;
  spec.layers = {0, 30};
  f.spawned.push_back(spawn_shard(f.sys, spec, {}, head_term{1}));
  const auto s = f.spawned.back();
  REQUIRE(f.ask<shard_addresses>(s, addresses_atom::value));
  REQUIRE(f.ask<caf::ok_atom>(s, connect_atom::value, head_term{1}, shard_peers{}));
  const auto prompt = prompt_tokens();
  auto before = f.ask<step_output>(s, step_atom::value, head_term{1}, prefill_step(prompt, 7));
  REQUIRE(before);
  REQUIRE(before->samples.size() == 1);
  const auto refused = [&](const caf::error& e, const std::string& what) {
    const auto why = f.render(e);
    INFO(why);
    return why.find("shard s0r0: refused " + what + " of term 1: its owner leads term 2") != std::string::npos;
  };

  // A head of term 2 adopts the shard: from now on the old leader's steps do nothing.
  REQUIRE(f.ask<shard_addresses>(s, adopt_atom::value, head_term{2}));
  auto stale_step = f.ask<step_output>(s, step_atom::value, head_term{1}, prefill_step(prompt, 8));
  REQUIRE_FALSE(stale_step);
  CHECK(refused(stale_step.error(), "step 8"));
  auto stale_connect = f.ask<caf::ok_atom>(s, connect_atom::value, head_term{1}, shard_peers{});
  REQUIRE_FALSE(stale_connect);
  CHECK(refused(stale_connect.error(), "a connect"));
  auto stale_adopt = f.ask<shard_addresses>(s, adopt_atom::value, head_term{1});
  REQUIRE_FALSE(stale_adopt);
  CHECK(refused(stale_adopt.error(), "an adoption"));

  // The new owner's connect and step run, and sample what the old owner's did.
  REQUIRE(f.ask<caf::ok_atom>(s, connect_atom::value, head_term{2}, shard_peers{}));
  auto after = f.ask<step_output>(s, step_atom::value, head_term{2}, prefill_step(prompt, 9));
  REQUIRE(after);
  REQUIRE(after->samples.size() == 1);
  CHECK(after->samples[0].token == before->samples[0].token);
}
