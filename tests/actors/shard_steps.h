#pragma once
/// Shard-level test helpers shared by the shard, fault and adoption tests: the default
/// model split in two pipeline stages, one sequence's greedy prefill step, and one
/// "process" of a test that joins several actor systems.
#include <caf/all.hpp>
#include <chrono>
#include <cstdint>
#include <utility>
#include <vector>

#include "actors/actor_system_config.h"
#include "actors/messages.h"
#include "engine_fixture.h"

namespace troupe::test {

/// Stage `stage` of the default model split in two pipeline stages (layers [0,15), [15,30)).
inline shard_spec pipeline_spec(int stage) {
  shard_spec s;
  s.model_path = default_model();
  s.stage = stage;
  s.n_stages = 2;
  s.layers = stage == 0 ? parallel::layer_range{0, 15} : parallel::layer_range{15, 30};
  s.context.n_blocks = 64;
  s.context.block_size = 16;
  s.context.max_batch_tokens = 128;
  s.context.max_logit_rows = 4;
  s.timeout_ms = 5000;
  return s;
}

/// The prefill step `step_id` of one sequence holding `prompt` (64 blocks of KV), sampled
/// greedily at its last row.
inline step_request prefill_step(const std::vector<int32_t>& prompt, uint64_t step_id = 7) {
  const auto n = static_cast<int32_t>(prompt.size());
  step_request r;
  r.step_id = step_id;
  r.batch.tokens = prompt;
  for (int32_t i = 0; i < n; ++i) r.batch.positions.push_back(i);
  r.batch.slots = r.batch.positions;
  r.batch.query_start = {0, n};
  r.batch.context_len = {n};
  r.batch.max_blocks = 64;
  for (int32_t b = 0; b < 64; ++b) r.batch.block_tables.push_back(b);
  r.batch.logit_rows = {n - 1};
  sample_request s;
  s.id = 1;
  s.params.temperature = 0.0f;
  s.params.max_tokens = 1;
  s.history = prompt;
  s.n_prompt = n;
  r.samples.push_back(s);
  return r;
}

/// The answer of `h` to `xs...` asked from `self` (20 s at most), or the error.
template <class T, class Handle, class... Ts>
caf::expected<T> ask(caf::scoped_actor& self, const Handle& h, Ts&&... xs) {
  caf::expected<T> out{caf::make_error(caf::sec::runtime_error, "no answer")};
  self->request(h, std::chrono::seconds(20), std::forward<Ts>(xs)...)
      .receive([&](T& x) { out = std::move(x); }, [&](caf::error& e) { out = std::move(e); });
  return out;
}

/// One process of a test that joins several actor systems: an actor system, a scoped actor
/// and the actors it owns, killed when it ends (a failed REQUIRE cannot leave the system
/// waiting for them).
struct actor_process {
  system_config cfg{fault_tolerance_section{}};
  caf::actor_system sys{cfg};
  caf::scoped_actor self{sys};
  std::vector<caf::actor> owned;

  template <class Handle>
  Handle own(Handle h) {
    owned.push_back(caf::actor_cast<caf::actor>(h));
    return h;
  }
  ~actor_process() {
    for (auto& a : owned) self->send_exit(a, caf::exit_reason::kill);
  }

  /// The answer of `h` to `xs...`, or the error.
  template <class T, class Handle, class... Ts>
  caf::expected<T> ask(const Handle& h, Ts&&... xs) {
    return test::ask<T>(self, h, std::forward<Ts>(xs)...);
  }
};

}  // namespace troupe::test
