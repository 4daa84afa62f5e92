// The message types' inspect functions carry every field across a process boundary: a
// shard spec serialized as the head sends it to a node arrives with each value it was given,
// none at its default (a field left out of inspect once kept node processes from warming up
// their decode graphs).
#include <caf/binary_deserializer.hpp>
#include <caf/binary_serializer.hpp>
#include <catch2/catch.hpp>

#include "actors/messages.h"

using namespace troupe;

namespace {

/// `x` serialized and read back, as a remote message is.
template <class T>
T round_trip(T x) {
  std::vector<char> buf;
  caf::binary_serializer sink{nullptr, buf};
  REQUIRE_FALSE(sink(x));
  T y;
  caf::binary_deserializer source{nullptr, buf};
  REQUIRE_FALSE(source(y));
  return y;
}

/// Context parameters with every field away from its default.
context_params unusual_context() {
  context_params p;
  p.n_blocks = 1001;
  p.block_size = 32;
  p.max_batch_tokens = 777;
  p.max_logit_rows = 99;
  p.cuda_graphs = !p.cuda_graphs;
  p.graph_warmup_context = 4096;
  p.keep_stage_inputs = !p.keep_stage_inputs;
  p.time_steps = !p.time_steps;
  p.batch_invariant = !p.batch_invariant;
  return p;
}

}  // namespace

TEST_CASE("a serialized context_params arrives with every field it was given", "[messages]") {
  const context_params sent = unusual_context();
  const context_params got = round_trip(sent);
  const context_params defaults;
  CHECK(got.n_blocks == sent.n_blocks);
  CHECK(got.block_size == sent.block_size);
  CHECK(got.max_batch_tokens == sent.max_batch_tokens);
  CHECK(got.max_logit_rows == sent.max_logit_rows);
  CHECK(got.cuda_graphs == sent.cuda_graphs);
  CHECK(got.graph_warmup_context == sent.graph_warmup_context);
  CHECK(got.keep_stage_inputs == sent.keep_stage_inputs);
  CHECK(got.time_steps == sent.time_steps);
  CHECK(got.batch_invariant == sent.batch_invariant);
  // The test itself: every field it sends differs from the default, so a field inspect
  // leaves out cannot pass by arriving at its default.
  CHECK(sent.graph_warmup_context != defaults.graph_warmup_context);
  CHECK(sent.time_steps != defaults.time_steps);
  CHECK(sent.cuda_graphs != defaults.cuda_graphs);
}

TEST_CASE("a serialized shard_spec arrives with its context and every other field", "[messages]") {
  shard_spec s;
  s.model_path = "/models/x.gguf";
  s.stage = 1;
  s.n_stages = 2;
  s.layers = parallel::layer_range{3, 7};
  s.tp_rank = 1;
  s.tp_size = 2;
  s.allow_uneven_heads = true;
  s.context = unusual_context();
  s.threads = 3;
  s.device = "cuda:1";
  s.weight_type = "f16";
  s.random_weights = true;
  s.kv_fraction = 0.5;
  s.timeout_ms = 1234;
  s.stage_timeout_ms = 4321;
  s.stall_timeout_ms = 555;
  s.release_wait_ms = 666;
  const shard_spec got = round_trip(s);
  CHECK(got.model_path == s.model_path);
  CHECK(got.stage == s.stage);
  CHECK(got.n_stages == s.n_stages);
  CHECK(got.layers.begin == s.layers.begin);
  CHECK(got.layers.end == s.layers.end);
  CHECK(got.tp_rank == s.tp_rank);
  CHECK(got.tp_size == s.tp_size);
  CHECK(got.allow_uneven_heads == s.allow_uneven_heads);
  CHECK(got.context.graph_warmup_context == s.context.graph_warmup_context);
  CHECK(got.context.n_blocks == s.context.n_blocks);
  CHECK(got.threads == s.threads);
  CHECK(got.device == s.device);
  CHECK(got.weight_type == s.weight_type);
  CHECK(got.random_weights == s.random_weights);
  CHECK(got.kv_fraction == s.kv_fraction);
  CHECK(got.timeout_ms == s.timeout_ms);
  CHECK(got.stage_timeout_ms == s.stage_timeout_ms);
  CHECK(got.stall_timeout_ms == s.stall_timeout_ms);
  CHECK(got.release_wait_ms == s.release_wait_ms);
}
