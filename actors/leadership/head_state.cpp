// The head's replicated state (head_state.h): equality, validation and the cereal envelope.
#include "actors/leadership/head_state.h"

#include <openssl/sha.h>

#include <algorithm>
#include <array>
#include <cereal/archives/portable_binary.hpp>
#include <cereal/types/optional.hpp>
#include <cereal/types/string.hpp>
#include <cereal/types/vector.hpp>
#include <cstring>
#include <set>
#include <sstream>

namespace troupe {
namespace {

/// The cereal class versions this build writes and reads (CEREAL_CLASS_VERSION below).
constexpr uint32_t drain_state_version = 1;
constexpr uint32_t member_state_version = 1;
constexpr uint32_t shard_state_version = 1;
constexpr uint32_t replica_state_version = 1;
constexpr uint32_t autoscale_state_version = 1;
constexpr uint32_t head_state_version = 1;

/// Refuses a class written by a newer build: its fields may mean something this one cannot know.
void check_version(const char* type, uint32_t got, uint32_t known) {
  if (got > known)
    throw head_state_error(std::string(type) + " was written with class version " + std::to_string(got) +
                           "; this build reads class versions up to " + std::to_string(known));
}

}  // namespace

template <class Archive>
void serialize(Archive& ar, drain_state& d, const std::uint32_t version) {
  check_version("drain_state", version, drain_state_version);
  ar(d.done, d.replace, d.replicas, d.migrated, d.detail);
}

template <class Archive>
void serialize(Archive& ar, member_state& m, const std::uint32_t version) {
  check_version("member_state", version, member_state_version);
  auto state = static_cast<uint8_t>(m.state);
  ar(m.name, m.host, m.port, m.devices, m.incarnation, state, m.pid, m.launched, m.restarts, m.last_error,
     m.drain);
  if (Archive::is_loading::value && state > static_cast<uint8_t>(node_state::stopped))
    throw head_state_error("member " + m.name + " has node state " + std::to_string(state) +
                           ", which is none of starting, registered, lost, restarting, stopped");
  m.state = static_cast<node_state>(state);
}

template <class Archive>
void serialize(Archive& ar, shard_state& s, const std::uint32_t version) {
  check_version("shard_state", version, shard_state_version);
  ar(s.name, s.node, s.device, s.stage, s.rank, s.first_layer, s.end_layer);
}

template <class Archive>
void serialize(Archive& ar, replica_state& r, const std::uint32_t version) {
  check_version("replica_state", version, replica_state_version);
  ar(r.index, r.tensor, r.pipeline, r.parked, r.rebuilds, r.shards);
}

template <class Archive>
void serialize(Archive& ar, autoscale_state& a, const std::uint32_t version) {
  check_version("autoscale_state", version, autoscale_state_version);
  ar(a.target, a.wanted);
}

template <class Archive>
void serialize(Archive& ar, head_state& s, const std::uint32_t version) {
  check_version("head_state", version, head_state_version);
  ar(s.term, s.sequence, s.config_digest, s.members, s.replicas, s.autoscale);
}

}  // namespace troupe

CEREAL_CLASS_VERSION(troupe::drain_state, troupe::drain_state_version)
CEREAL_CLASS_VERSION(troupe::member_state, troupe::member_state_version)
CEREAL_CLASS_VERSION(troupe::shard_state, troupe::shard_state_version)
CEREAL_CLASS_VERSION(troupe::replica_state, troupe::replica_state_version)
CEREAL_CLASS_VERSION(troupe::autoscale_state, troupe::autoscale_state_version)
CEREAL_CLASS_VERSION(troupe::head_state, troupe::head_state_version)

namespace troupe {

bool operator==(const drain_state& a, const drain_state& b) {
  return a.done == b.done && a.replace == b.replace && a.replicas == b.replicas && a.migrated == b.migrated &&
         a.detail == b.detail;
}

bool operator==(const member_state& a, const member_state& b) {
  return a.name == b.name && a.host == b.host && a.port == b.port && a.devices == b.devices &&
         a.incarnation == b.incarnation && a.state == b.state && a.pid == b.pid && a.launched == b.launched &&
         a.restarts == b.restarts && a.last_error == b.last_error && a.drain == b.drain;
}

bool operator==(const shard_state& a, const shard_state& b) {
  return a.name == b.name && a.node == b.node && a.device == b.device && a.stage == b.stage && a.rank == b.rank &&
         a.first_layer == b.first_layer && a.end_layer == b.end_layer;
}

bool operator==(const replica_state& a, const replica_state& b) {
  return a.index == b.index && a.tensor == b.tensor && a.pipeline == b.pipeline && a.parked == b.parked &&
         a.rebuilds == b.rebuilds && a.shards == b.shards;
}

bool operator==(const autoscale_state& a, const autoscale_state& b) {
  return a.target == b.target && a.wanted == b.wanted;
}

bool operator==(const head_state& a, const head_state& b) {
  return a.term == b.term && a.sequence == b.sequence && a.config_digest == b.config_digest &&
         a.members == b.members && a.replicas == b.replicas && a.autoscale == b.autoscale;
}

std::string shard_name(int32_t replica, int32_t stage, int32_t rank) {
  return "r" + std::to_string(replica) + ".s" + std::to_string(stage) + ".t" + std::to_string(rank);
}

namespace {

void validate_shard(const replica_state& r, const shard_state& sh, const std::set<std::string>& members,
                    const std::string& where) {
  const auto at = where + ": replica " + std::to_string(r.index) + " shard " + sh.name + ": ";
  if (!members.count(sh.node)) throw head_state_error(at + "node '" + sh.node + "' is not a member");
  if (sh.stage < 0 || sh.stage >= r.pipeline || sh.rank < 0 || sh.rank >= r.tensor)
    throw head_state_error(at + "stage " + std::to_string(sh.stage) + " rank " + std::to_string(sh.rank) +
                           " is outside its replica's tensor " + std::to_string(r.tensor) + " x pipeline " +
                           std::to_string(r.pipeline));
  if (sh.first_layer < 0 || sh.end_layer <= sh.first_layer)
    throw head_state_error(at + "layers [" + std::to_string(sh.first_layer) + ", " + std::to_string(sh.end_layer) +
                           ") are empty or negative");
}

void validate_replica(const replica_state& r, size_t position, const std::set<std::string>& members,
                      const std::string& where) {
  const auto at = where + ": replica at position " + std::to_string(position) + ": ";
  if (r.index != static_cast<int32_t>(position))
    throw head_state_error(at + "has index " + std::to_string(r.index));
  const bool retired = r.tensor == 0 && r.pipeline == 0;
  if (!retired && (r.tensor < 1 || r.pipeline < 1))
    throw head_state_error(at + "shape tensor " + std::to_string(r.tensor) + " x pipeline " +
                           std::to_string(r.pipeline) + " is neither a plan nor retired (0 x 0)");
  const size_t want = (retired || r.parked) ? 0 : static_cast<size_t>(r.tensor) * static_cast<size_t>(r.pipeline);
  if (r.shards.size() != want)
    throw head_state_error(at + "has " + std::to_string(r.shards.size()) + " shards where its shape" +
                           (r.parked ? " (parked)" : retired ? " (retired)" : "") + " needs " +
                           std::to_string(want));
  for (const auto& sh : r.shards) validate_shard(r, sh, members, where);
}

}  // namespace

void validate(const head_state& s, const std::string& where) {
  std::set<std::string> members;
  for (const auto& m : s.members) {
    if (m.name.empty()) throw head_state_error(where + ": a member has an empty name");
    if (!members.insert(m.name).second) throw head_state_error(where + ": member '" + m.name + "' appears twice");
  }
  for (size_t i = 0; i < s.replicas.size(); ++i) validate_replica(s.replicas[i], i, members, where);
}

namespace {

using digest = std::array<unsigned char, SHA256_DIGEST_LENGTH>;

digest sha256(const char* data, size_t size) {
  digest d{};
  SHA256(reinterpret_cast<const unsigned char*>(data), size, d.data());
  return d;
}

std::string hex(const unsigned char* p, size_t n) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < n; ++i) {
    out += digits[p[i] >> 4];
    out += digits[p[i] & 15];
  }
  return out;
}

template <class T>
void put_le(std::string& out, T v) {
  for (size_t i = 0; i < sizeof(T); ++i) out += static_cast<char>((v >> (8 * i)) & 0xff);
}

template <class T>
T get_le(const std::string& in, size_t at) {
  T v = 0;
  for (size_t i = 0; i < sizeof(T); ++i) v |= static_cast<T>(static_cast<unsigned char>(in[at + i])) << (8 * i);
  return v;
}

/// Checks the envelope of `bytes` and returns the payload's length.
size_t check_envelope(const std::string& bytes, const std::string& where) {
  const auto prefix = std::min(bytes.size(), sizeof head_state_magic);
  if (std::memcmp(bytes.data(), head_state_magic, prefix) != 0)
    throw head_state_error(where + ": not a troupe head state (bad magic: the first bytes are " +
                           hex(reinterpret_cast<const unsigned char*>(bytes.data()), prefix) + ", expected " +
                           hex(reinterpret_cast<const unsigned char*>(head_state_magic), sizeof head_state_magic) +
                           ")");
  if (bytes.size() < head_state_header_size)
    throw head_state_error(where + ": truncated: " + std::to_string(bytes.size()) + " bytes, the header alone is " +
                           std::to_string(head_state_header_size));
  const auto version = get_le<uint32_t>(bytes, 8);
  if (version > head_state_format_version)
    throw head_state_error(where + ": written in head state format version " + std::to_string(version) +
                           "; this build reads format versions up to " + std::to_string(head_state_format_version));
  if (version == 0) throw head_state_error(where + ": format version 0 does not exist (corrupt header)");
  const auto length = get_le<uint64_t>(bytes, 12);
  const auto have = bytes.size() - head_state_header_size;
  if (have < length)
    throw head_state_error(where + ": truncated: the payload has " + std::to_string(have) + " of the " +
                           std::to_string(length) + " bytes its header announces");
  if (have > length)
    throw head_state_error(where + ": " + std::to_string(have - length) + " trailing bytes after the " +
                           std::to_string(length) + "-byte payload its header announces");
  const auto got = sha256(bytes.data() + head_state_header_size, length);
  const auto* want = reinterpret_cast<const unsigned char*>(bytes.data() + 20);
  if (std::memcmp(got.data(), want, got.size()) != 0)
    throw head_state_error(where + ": checksum mismatch: the payload's SHA-256 is " + hex(got.data(), got.size()) +
                           ", the header says " + hex(want, got.size()));
  return length;
}

}  // namespace

std::string encode(const head_state& s) {
  std::ostringstream payload_stream(std::ios::binary);
  {
    cereal::PortableBinaryOutputArchive ar(payload_stream);
    ar(s);
  }
  const auto payload = payload_stream.str();
  std::string out(head_state_magic, sizeof head_state_magic);
  put_le<uint32_t>(out, head_state_format_version);
  put_le<uint64_t>(out, payload.size());
  const auto d = sha256(payload.data(), payload.size());
  out.append(reinterpret_cast<const char*>(d.data()), d.size());
  out += payload;
  return out;
}

head_state decode(const std::string& bytes, const std::string& where) {
  const auto length = check_envelope(bytes, where);
  std::istringstream in(bytes.substr(head_state_header_size, length), std::ios::binary);
  head_state s;
  try {
    cereal::PortableBinaryInputArchive ar(in);
    ar(s);
  } catch (const head_state_error& e) {
    throw head_state_error(where + ": " + e.what());
  } catch (const std::exception& e) {
    throw head_state_error(where + ": the payload does not decode as a head state: " + e.what());
  }
  const auto used = static_cast<size_t>(in.tellg());
  if (used != length)
    throw head_state_error(where + ": the head state ends after " + std::to_string(used) + " of the payload's " +
                           std::to_string(length) + " bytes");
  validate(s, where);
  return s;
}

}  // namespace troupe
