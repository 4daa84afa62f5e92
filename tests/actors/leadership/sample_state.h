#pragma once
/// A rich head state for the leadership tests: three nodes in different states (one
/// drained, one restarting), a tensor 2 x pipeline 2 replica, a re-planned one, a parked
/// one and a retired one, and an autoscaler target.
#include <cstdint>

#include "actors/leadership/head_state.h"

namespace troupe::test {

/// Shards of `replica` with shape `tensor` x `pipeline` over `places` ((node, device) per
/// shard, stage then rank), the 30 layers of SmolLM2-135M split evenly.
inline std::vector<shard_state> sample_shards(int32_t replica, int32_t tensor, int32_t pipeline,
                                              const std::vector<std::pair<std::string, std::string>>& places) {
  std::vector<shard_state> out;
  for (int32_t stage = 0; stage < pipeline; ++stage)
    for (int32_t rank = 0; rank < tensor; ++rank) {
      const auto& [node, device] = places.at(static_cast<size_t>(stage * tensor + rank));
      out.push_back({shard_name(replica, stage, rank), node, device, stage, rank, 30 * stage / pipeline,
                     30 * (stage + 1) / pipeline});
    }
  return out;
}

/// The state at `term`, `sequence`.
inline head_state sample_state(uint64_t term = 3, uint64_t sequence = 41) {
  head_state s;
  s.term = term;
  s.sequence = sequence;
  s.config_digest = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
  member_state n0{"n0", "10.0.0.1", 7101, {"cuda:0", "cuda:1", "cuda:2", "cuda:3"}, 4, node_state::registered,
                  4242, true, 1, "heartbeat missed for 1.2 s", std::nullopt};
  member_state n1{"n1", "10.0.0.2", 7102, {"cuda:0", "cuda:1"}, 2, node_state::stopped, 0, false, 0, "", std::nullopt};
  n1.drain = drain_state{true, true, {1}, 7, "drained: 7 requests moved at the deadline"};
  member_state n2{"n2", "10.0.0.3", 7103, {"cpu"}, 1, node_state::restarting, 5150, true, 2, "exited with 137",
                  std::nullopt};
  s.members = {n0, n1, n2};
  replica_state r0{0, 2, 2, false, 0, {}};
  r0.shards = sample_shards(0, 2, 2, {{"n0", "cuda:0"}, {"n0", "cuda:1"}, {"n0", "cuda:2"}, {"n0", "cuda:3"}});
  replica_state r1{1, 1, 1, false, 3, {}};  // re-planned from 2 x 2 when n1 was drained
  r1.shards = sample_shards(1, 1, 1, {{"n2", "cpu"}});
  replica_state r2{2, 2, 2, true, 0, {}};   // parked by the autoscaler
  replica_state r3{3, 0, 0, false, 5, {}};  // retired: no devices left
  s.replicas = {r0, r1, r2, r3};
  s.autoscale = autoscale_state{2, 3};
  return s;
}

}  // namespace troupe::test
