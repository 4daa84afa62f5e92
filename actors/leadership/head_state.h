#pragma once
/// The head's replicated state (issue 15, "No single point of failure"): what a standby head
/// needs to take over without re-placing anything, and what a cold restart of every head
/// reads back from disk. Plain structs that mirror what the supervisor (membership, drains),
/// the replica manager (placement, plans, rebuilds, parked replicas) and the autoscaler
/// (its target) hold, plus the leader's `term` and a `sequence` that grows with every change.
///
/// encode() wraps a cereal portable binary archive (little-endian on every host, with
/// cereal class versions) in a versioned, checksummed envelope:
///
///     offset  size  field
///          0     8  magic "TRPHEAD\0"
///          8     4  format version (little-endian; this build writes and reads up to 1)
///         12     8  payload length in bytes (little-endian)
///         20    32  SHA-256 of the payload
///         52     -  payload: the cereal archive of head_state
///
/// decode() refuses anything else with a head_state_error naming where the bytes came
/// from and what is wrong: truncated, bad magic, a newer format or class version, a
/// checksum mismatch, trailing bytes, or a state that contradicts itself (validate()).
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "actors/messages.h"

namespace troupe {

/// The envelope's format version this build writes; it reads every version up to it.
inline constexpr uint32_t head_state_format_version = 1;
/// The envelope's first 8 bytes.
inline constexpr char head_state_magic[8] = {'T', 'R', 'P', 'H', 'E', 'A', 'D', '\0'};
/// Bytes before the payload: magic, format version, payload length, SHA-256.
inline constexpr size_t head_state_header_size = 8 + 4 + 8 + 32;

/// Bytes that are not a head state this build can read, or a state that contradicts itself.
class head_state_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A graceful drain of one node (the supervisor's drain record), kept until the node
/// registers again.
struct drain_state {
  bool done = false;              ///< drained: its process was asked to stop
  bool replace = false;           ///< its shards may move to free devices
  std::vector<int32_t> replicas;  ///< replicas with a shard on the node
  int32_t migrated = -1;          ///< requests moved at the deadline (-1 = not drained yet)
  std::string detail;             ///< progress, for operators
};

/// One node as the leader tracks it (the supervisor's member and node_status).
struct member_state {
  std::string name;                  ///< the node's name in the cluster file
  std::string host;                  ///< where its node agent is reachable
  uint16_t port = 0;                 ///< its node agent's port
  std::vector<std::string> devices;  ///< "cpu", "cuda:0", ...
  uint64_t incarnation = 0;          ///< registrations accepted so far (0 = never registered)
  node_state state = node_state::starting;  ///< see node_state
  int32_t pid = 0;                   ///< its process id (0 = none known)
  bool launched = false;             ///< the head started (and may restart) its process
  int32_t restarts = 0;              ///< processes launched after the first
  std::string last_error;            ///< why it was last lost ("" = never)
  std::optional<drain_state> drain;  ///< a drain in progress or done
};

/// One shard's place (the replica manager's shard slot, with its layers).
struct shard_state {
  std::string name;         ///< "r0.s1.t0": replica, pipeline stage, tensor rank
  std::string node;         ///< the member it runs on
  std::string device;       ///< "cpu", "cuda:0", ...
  int32_t stage = 0;        ///< pipeline stage
  int32_t rank = 0;         ///< tensor-parallel rank within the stage
  int32_t first_layer = 0;  ///< first layer of its stage
  int32_t end_layer = 0;    ///< one past its stage's last layer
};

/// One replica: its shape (the replica manager's plan) and its shards.
struct replica_state {
  int32_t index = 0;     ///< its position in head_state::replicas
  int32_t tensor = 1;    ///< tensor-parallel ranks per stage (0 with pipeline 0: retired)
  int32_t pipeline = 1;  ///< pipeline stages (0 with tensor 0: retired)
  bool parked = false;   ///< parked by the autoscaler: shards stopped, devices free
  int32_t rebuilds = 0;  ///< times its shards were spawned again after a failure
  std::vector<shard_state> shards;  ///< stage, then rank (none when parked or retired)
};

/// The autoscaler's decisions.
struct autoscale_state {
  int32_t target = -1;  ///< active replicas last asked of the replica manager (-1 = none yet)
  int32_t wanted = -1;  ///< the policy's target before it was clamped to what is available
};

/// Everything a standby needs to lead without re-placing anything.
struct head_state {
  uint64_t term = 0;      ///< the leader's lease term when it wrote this state
  uint64_t sequence = 0;  ///< grows by one with every change the leader replicates
  std::string config_digest;  ///< SHA-256 (hex) of the cluster file it was made for ("" = unknown)
  std::vector<member_state> members;    ///< cluster-file order
  std::vector<replica_state> replicas;  ///< by index
  autoscale_state autoscale;            ///< the autoscaler's target
};

/// Member-wise equality (tests, and "did anything change" checks).
bool operator==(const drain_state& a, const drain_state& b);
bool operator==(const member_state& a, const member_state& b);
bool operator==(const shard_state& a, const shard_state& b);
bool operator==(const replica_state& a, const replica_state& b);
bool operator==(const autoscale_state& a, const autoscale_state& b);
bool operator==(const head_state& a, const head_state& b);
/// Not equal.
inline bool operator!=(const head_state& a, const head_state& b) { return !(a == b); }

/// "r0.s1.t0".
std::string shard_name(int32_t replica, int32_t stage, int32_t rank);

/// Throws head_state_error, prefixed with `where`, when `s` contradicts itself: a member
/// name twice or empty, a replica whose index is not its position, a shape that is
/// negative or half retired, shards that do not fill the shape (none when parked or
/// retired), a shard on a node that is not a member, a stage or rank outside the shape,
/// or an empty layer range.
void validate(const head_state& s, const std::string& where);

/// The envelope of `s` (see the top of this file).
std::string encode(const head_state& s);

/// The state in `bytes`; `where` names their origin in errors ("/var/lib/troupe/head_state.bin",
/// "the leader's message"). Throws head_state_error (see the top of this file).
head_state decode(const std::string& bytes, const std::string& where);

}  // namespace troupe
