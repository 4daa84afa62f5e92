// The head's replicated state (actors/leadership/head_state.h): a rich state survives
// encode and decode unchanged, and every kind of damaged or foreign bytes is refused with
// an error that names where the bytes came from and what is wrong.
#include <openssl/sha.h>

#include <catch2/catch.hpp>
#include <cstring>

#include "actors/leadership/head_state.h"
#include "tests/actors/leadership/sample_state.h"

namespace {

using namespace troupe;
using Catch::Contains;

const std::string where = "/var/lib/troupe/head_state.bin";

/// The message of the head_state_error that decoding `bytes` throws ("" when none).
std::string decode_error(const std::string& bytes) {
  try {
    decode(bytes, where);
  } catch (const head_state_error& e) {
    return e.what();
  }
  return "";
}

template <class T>
void put_le(std::string& bytes, size_t at, T v) {
  for (size_t i = 0; i < sizeof(T); ++i) bytes[at + i] = static_cast<char>((v >> (8 * i)) & 0xff);
}

/// `payload` in the documented envelope (head_state.h), at format version `version`.
std::string envelope(const std::string& payload, uint32_t version) {
  std::string out(head_state_header_size, '\0');
  std::memcpy(out.data(), "TRPHEAD", 8);
  put_le<uint32_t>(out, 8, version);
  put_le<uint64_t>(out, 12, payload.size());
  SHA256(reinterpret_cast<const unsigned char*>(payload.data()), payload.size(),
         reinterpret_cast<unsigned char*>(out.data() + 20));
  return out + payload;
}

}  // namespace

TEST_CASE("a rich head state survives encode and decode unchanged", "[actors][leadership]") {
  const auto s = test::sample_state();
  const auto bytes = encode(s);
  const auto back = decode(bytes, where);
  CHECK(back == s);
  CHECK(back.members.size() == 3);
  REQUIRE(back.members[1].drain);
  CHECK(back.members[1].drain->migrated == 7);
  CHECK(back.members[2].state == node_state::restarting);
  CHECK(back.replicas[0].shards.size() == 4);
  CHECK(back.replicas[0].shards[3].name == "r0.s1.t1");
  CHECK(back.replicas[0].shards[3].first_layer == 15);
  CHECK(back.replicas[2].parked);
  CHECK(back.replicas[3].tensor == 0);
  CHECK(back.autoscale.target == 2);
  CHECK(encode(back) == bytes);  // deterministic: the same state, the same bytes
  CHECK(bytes.compare(0, 8, std::string("TRPHEAD\0", 8)) == 0);
  CHECK(decode(encode(head_state{}), where) == head_state{});
}

TEST_CASE("a head state truncated at any offset is refused as truncated, naming where", "[actors][leadership]") {
  const auto bytes = encode(test::sample_state());
  for (size_t n = 0; n < bytes.size(); ++n) {
    const auto err = decode_error(bytes.substr(0, n));
    INFO("truncated to " << n << " of " << bytes.size() << " bytes: " << err);
    CHECK_THAT(err, Contains(where + ": truncated: "));
  }
}

TEST_CASE("a flipped payload byte is refused with a checksum mismatch", "[actors][leadership]") {
  const auto bytes = encode(test::sample_state());
  for (size_t at = head_state_header_size; at < bytes.size(); ++at) {
    auto damaged = bytes;
    damaged[at] = static_cast<char>(damaged[at] ^ 0x10);
    const auto err = decode_error(damaged);
    INFO("byte " << at << " flipped: " << err);
    CHECK_THAT(err, Contains(where + ": checksum mismatch: the payload's SHA-256 is "));
  }
  auto damaged = bytes;
  damaged[25] = static_cast<char>(damaged[25] ^ 1);  // in the header's SHA-256
  CHECK_THAT(decode_error(damaged), Contains("checksum mismatch"));
  damaged = bytes;
  put_le<uint64_t>(damaged, 12, bytes.size());  // a payload length larger than the file
  CHECK_THAT(decode_error(damaged), Contains(where + ": truncated: the payload has "));
}

TEST_CASE("bytes without the magic are refused as not a head state", "[actors][leadership]") {
  auto bytes = encode(test::sample_state());
  bytes[0] = 'X';
  CHECK_THAT(decode_error(bytes),
             Contains(where + ": not a troupe head state (bad magic: the first bytes are 58525048454144") &&
                 Contains("expected 5452504845414400"));
  CHECK_THAT(decode_error("{\"nodes\": []}"), Contains("bad magic"));
  CHECK_THAT(decode_error(encode(test::sample_state()) + "xyz"),
             Contains(where + ": 3 trailing bytes after the "));
}

TEST_CASE("a head state of a newer format version is refused naming both versions", "[actors][leadership]") {
  auto bytes = encode(test::sample_state());
  put_le<uint32_t>(bytes, 8, head_state_format_version + 1);
  CHECK(decode_error(bytes) == where + ": written in head state format version 2; this build reads format "
                                       "versions up to 1");
  put_le<uint32_t>(bytes, 8, 0);
  CHECK_THAT(decode_error(bytes), Contains("format version 0 does not exist"));
}

TEST_CASE("a payload of a newer cereal class version is refused naming both versions", "[actors][leadership]") {
  // The portable binary archive starts with its endianness byte, then head_state's class version.
  auto payload = encode(test::sample_state()).substr(head_state_header_size);
  put_le<uint32_t>(payload, 1, 2);
  CHECK(decode_error(envelope(payload, 1)) ==
        where + ": head_state was written with class version 2; this build reads class versions up to 1");
  // The member's node state is a byte past the last node_state.
  auto s = test::sample_state();
  s.members[0].state = static_cast<node_state>(9);
  CHECK_THAT(decode_error(encode(s)), Contains(where + ": member n0 has node state 9, which is none of"));
}

TEST_CASE("a head state that contradicts itself is refused naming the replica and shard", "[actors][leadership]") {
  auto s = test::sample_state();
  s.replicas[0].shards[2].node = "n9";
  CHECK(decode_error(encode(s)) == where + ": replica 0 shard r0.s1.t0: node 'n9' is not a member");
  s = test::sample_state();
  s.replicas[1].shards.clear();
  CHECK(decode_error(encode(s)) == where + ": replica at position 1: has 0 shards where its shape needs 1");
  s = test::sample_state();
  s.replicas[0].shards[1].rank = 2;
  CHECK_THAT(decode_error(encode(s)), Contains("stage 0 rank 2 is outside its replica's tensor 2 x pipeline 2"));
  s = test::sample_state();
  s.members.push_back(s.members[0]);
  CHECK(decode_error(encode(s)) == where + ": member 'n0' appears twice");
  s = test::sample_state();
  s.replicas[3].tensor = 1;
  CHECK_THAT(decode_error(encode(s)), Contains("shape tensor 1 x pipeline 0 is neither a plan nor retired"));
  s = test::sample_state();
  s.replicas[0].shards[0].end_layer = 0;
  CHECK_THAT(decode_error(encode(s)), Contains("layers [0, 0) are empty or negative"));
}
