// A shard whose worker is stuck for real (TROUPE_FAULT_HANG: the worker sleeps in a step,
// without progress beats and deaf to abort): the stall watchdog finds it within
// fault_tolerance.stall_timeout while a long prefill that advances is left alone; a shard
// stopped while its worker is stuck terminates at once, and a new shard on the same device
// loads only once the stuck worker has ended (or refuses after release_wait).
#include <stdlib.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <spdlog/sinks/ringbuffer_sink.h>

#include "actors/actor_system_config.h"
#include "actors/serving/shard.h"
#include "actors/shard_steps.h"
#include "engine_fixture.h"

namespace {

using namespace troupe;
using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

/// Sets TROUPE_FAULT_HANG for the test's lifetime (each test uses its own value: the fault
/// fires once per process and value) and watches the log for the hang to begin.
struct hang_env {
  std::shared_ptr<spdlog::sinks::ringbuffer_sink_mt> sink = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(256);

  explicit hang_env(const std::string& value) {
    ::setenv("TROUPE_FAULT_HANG", value.c_str(), 1);
    logger()->sinks().push_back(sink);
  }
  ~hang_env() {
    ::unsetenv("TROUPE_FAULT_HANG");
    auto& sinks = logger()->sinks();
    sinks.erase(std::remove(sinks.begin(), sinks.end(), sink), sinks.end());
  }
  /// Waits until a worker has begun to hang (its log line); false after 10 s.
  bool wait_until_hanging() {
    for (int i = 0; i < 1000; ++i) {
      for (const auto& line : sink->last_formatted())
        if (line.find("TROUPE_FAULT_HANG: the worker hangs") != std::string::npos) return true;
      std::this_thread::sleep_for(10ms);
    }
    return false;
  }
};

struct fault_fixture {
  system_config cfg{fault_tolerance_section{}};
  caf::actor_system sys{cfg};
  caf::scoped_actor self{sys};
  std::vector<shard_actor> spawned;

  ~fault_fixture() {
    for (auto& s : spawned) self->send_exit(s, caf::exit_reason::user_shutdown);
  }

  shard_actor spawn(const shard_spec& spec) {
    spawned.push_back(spawn_shard(sys, spec));
    return spawned.back();
  }

  /// Loads and connects a one-stage shard (no peers).
  shard_actor spawn_connected(const shard_spec& spec) {
    auto s = spawn(spec);
    bool ok = false;
    self->request(s, 20s, addresses_atom::value)
        .receive([](shard_addresses&) {}, [&](caf::error& e) { FAIL("load: " << sys.render(e)); });
    self->request(s, 20s, connect_atom::value, head_term{}, shard_peers{})
        .receive([&](caf::ok_atom) { ok = true; }, [&](caf::error& e) { FAIL("connect: " << sys.render(e)); });
    REQUIRE(ok);
    return s;
  }
};

/// The whole default model as one shard, at most `tokens` per step.
shard_spec whole_model(int tokens) {
  shard_spec s;
  s.model_path = test::default_model();
  s.layers = parallel::layer_range{0, 30};
  s.context.n_blocks = 64;
  s.context.block_size = 16;
  s.context.max_batch_tokens = tokens;
  s.context.max_logit_rows = 4;
  return s;
}

/// A prefill of `n` tokens of one sequence, sampled greedily at its last row.
step_request prefill(int32_t n) {
  std::vector<int32_t> tokens;
  for (int32_t i = 0; i < n; ++i) tokens.push_back(100 + i % 50);
  return test::prefill_step(tokens, 3);
}

int64_t ms_since(clock_type::time_point t0) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(clock_type::now() - t0).count();
}

}  // namespace

TEST_CASE("a shard whose worker hangs in a step is stalled within stall_timeout: the step fails and the shard stops",
          "[actors][shard][stall]") {
  hang_env hang{"s0r0:1:4000"};
  fault_fixture f;
  auto spec = whole_model(32);
  spec.stall_timeout_ms = 500;
  auto s = f.spawn_connected(spec);
  f.self->monitor(s);
  const auto t0 = clock_type::now();
  std::string error;
  f.self->request(s, 20s, step_atom::value, head_term{}, prefill(8))
      .receive([](step_output&) { FAIL("the hung step succeeded"); }, [&](caf::error& e) { error = f.sys.render(e); });
  const auto failed_ms = ms_since(t0);
  INFO(error << " after " << failed_ms << " ms");
  CHECK(error.find("shard s0r0: step 3 made no progress") != std::string::npos);
  CHECK(error.find("fault_tolerance.stall_timeout") != std::string::npos);
  CHECK(failed_ms >= 500);
  CHECK(failed_ms < 1500);  // the hang lasts 4000 ms: only the watchdog answers this early
  std::string down;
  f.self->receive([&](caf::down_msg& dm) { down = f.sys.render(dm.reason); }, caf::after(2s) >> [] {});
  CHECK(down.find("made no progress") != std::string::npos);
}

TEST_CASE("a long prefill that advances layer by layer is not a stall", "[actors][shard][stall]") {
  fault_fixture f;
  auto spec = whole_model(128);
  // The prefill's time T without a watchdog (warm: its second run); then the first run of
  // the same prefill on a shard with stall_timeout T / 4: the step takes at least 4 stall
  // timeouts, each of its 30 layers (about T / 30, a cold one a few times that) well below one.
  const auto timed_prefill = [&](const shard_actor& s, bool& ok) {
    const auto t0 = clock_type::now();
    f.self->request(s, 60s, step_atom::value, head_term{}, prefill(128))
        .receive([&](step_output& out) { ok = out.samples.size() == 1; },
                 [&](caf::error& e) { FAIL("the advancing prefill failed: " << f.sys.render(e)); });
    return ms_since(t0);
  };
  bool ok = false;
  auto unwatched_shard = f.spawn_connected(spec);
  timed_prefill(unwatched_shard, ok);
  // The machine's load may change between the two timings; when the watched prefill was
  // not longer than its stall timeout (it proves nothing then), measure again (3 times at most).
  bool meaningful = false;
  for (int attempt = 0; attempt < 3 && !meaningful; ++attempt) {
    ok = false;
    const auto unwatched = timed_prefill(unwatched_shard, ok);
    REQUIRE(ok);
    auto watched_spec = spec;
    watched_spec.stall_timeout_ms = std::max<int64_t>(unwatched / 4, 10);
    ok = false;
    const auto watched = timed_prefill(f.spawn_connected(watched_spec), ok);
    INFO("the prefill took " << unwatched << " ms, then " << watched << " ms with stall_timeout "
                             << watched_spec.stall_timeout_ms << " ms");
    REQUIRE(ok);
    meaningful = watched > watched_spec.stall_timeout_ms;
  }
  CHECK(meaningful);  // else this test would prove nothing
}

TEST_CASE("a shard stopped while its worker hangs terminates at once, and a new shard on its device loads only "
          "after the hung worker ended",
          "[actors][shard][release]") {
  hang_env hang{"s0r0:1:2500"};
  fault_fixture f;
  auto spec = whole_model(32);
  auto s = f.spawn_connected(spec);
  const auto step_sent = clock_type::now();
  auto step = f.self->request(s, 20s, step_atom::value, head_term{}, prefill(8));
  REQUIRE(hang.wait_until_hanging());
  f.self->monitor(s);
  const auto t0 = clock_type::now();
  f.self->send_exit(s, caf::exit_reason::user_shutdown);
  std::string error;
  step.receive([](step_output&) { FAIL("the step of a stopped shard succeeded"); },
               [&](caf::error& e) { error = f.sys.render(e); });
  bool down = false;
  f.self->receive([&](caf::down_msg&) { down = true; }, caf::after(5s) >> [] {});
  const auto stop_ms = ms_since(t0);
  INFO(error << "; down after " << stop_ms << " ms");
  CHECK(down);
  CHECK(error.find("shard s0r0 stopped") != std::string::npos);
  CHECK(stop_ms < 500);  // the stop does not wait for the hung worker on a scheduler thread
  auto fresh = f.spawn(spec);
  bool loaded = false;
  f.self->request(fresh, 20s, addresses_atom::value)
      .receive([&](shard_addresses&) { loaded = true; }, [&](caf::error& e) { FAIL(f.sys.render(e)); });
  const auto loaded_ms = ms_since(step_sent);
  INFO("the new shard loaded " << loaded_ms << " ms after the hung step began");
  CHECK(loaded);
  CHECK(loaded_ms >= 2500);
}

TEST_CASE("a new shard refuses to load when a stopped shard's worker holds its device past release_wait",
          "[actors][shard][release]") {
  hang_env hang{"s0r0:1:2000"};
  fault_fixture f;
  auto spec = whole_model(32);
  auto s = f.spawn_connected(spec);
  f.self->send(s, step_atom::value, head_term{}, prefill(8));
  REQUIRE(hang.wait_until_hanging());
  // A replacement is spawned once the stopped shard is down (as the supervisor does): only
  // then has it handed its busy worker's device to the release registry.
  f.self->monitor(s);
  f.self->send_exit(s, caf::exit_reason::user_shutdown);
  bool down = false;
  f.self->receive([&](caf::down_msg&) { down = true; }, caf::after(5s) >> [] {});
  REQUIRE(down);
  auto impatient = spec;
  impatient.release_wait_ms = 300;
  const auto t0 = clock_type::now();
  std::string error;
  f.self->request(f.spawn(impatient), 20s, addresses_atom::value)
      .receive([](shard_addresses&) { FAIL("loaded while the device was held"); },
               [&](caf::error& e) { error = f.sys.render(e); });
  const auto took = ms_since(t0);
  INFO(error << " after " << took << " ms");
  CHECK(error.find("shard s0r0") != std::string::npos);
  CHECK(error.find("device cpu is still held by a stopped shard's worker after 300 ms") != std::string::npos);
  CHECK(error.find("fault_tolerance.release_wait") != std::string::npos);
  CHECK(took < 1500);
  // Once the hung worker ends, the device is free again.
  bool loaded = false;
  f.self->request(f.spawn(spec), 20s, addresses_atom::value)
      .receive([&](shard_addresses&) { loaded = true; }, [&](caf::error& e) { FAIL(f.sys.render(e)); });
  CHECK(loaded);
}

TEST_CASE("a malformed TROUPE_FAULT_HANG fails the load naming the variable", "[actors][shard]") {
  hang_env hang{"s0r0:zero:100"};
  fault_fixture f;
  std::string error;
  f.self->request(f.spawn(whole_model(32)), 20s, addresses_atom::value)
      .receive([](shard_addresses&) { FAIL("loaded with a malformed fault"); },
               [&](caf::error& e) { error = f.sys.render(e); });
  INFO(error);
  CHECK(error.find("TROUPE_FAULT_HANG: expected <shard>:<step>:<ms>") != std::string::npos);
  CHECK(error.find("'s0r0:zero:100'") != std::string::npos);
}
