#pragma once
/// Counter-based random numbers (Philox4x32-10, Salmon et al., SC'11 / Random123).
///
/// Sampling randomness is a pure function of (request seed, token index, sub-stream): no
/// generator state is carried between tokens, so a draw does not depend on batch
/// composition, on the replica that serves a request, or on a failure in between. Every
/// function here is header-only and usable from host code and from CUDA device code.
#include <cstdint>

#ifdef __CUDACC__
#define TROUPE_HOST_DEVICE __host__ __device__
#else
#define TROUPE_HOST_DEVICE
#endif

namespace troupe {

/// A Philox4x32 counter block (four 32-bit words); also the type of one output block.
struct philox4x32_ctr {
  uint32_t v[4];  // [4] counter words, v[0] least significant
};

/// A Philox4x32 key (two 32-bit words).
struct philox4x32_key {
  uint32_t v[2];  // [2] key words, v[0] least significant
};

namespace detail {

constexpr uint32_t philox_m0 = 0xD2511F53u;  // round multiplier for words 0/1
constexpr uint32_t philox_m1 = 0xCD9E8D57u;  // round multiplier for words 2/3
constexpr uint32_t philox_w0 = 0x9E3779B9u;  // key schedule increment (golden ratio)
constexpr uint32_t philox_w1 = 0xBB67AE85u;  // key schedule increment (sqrt(3) - 1)

/// One Philox4x32 round: two 32x32->64 multiplies, then a word permutation with key mixing.
TROUPE_HOST_DEVICE inline philox4x32_ctr philox4x32_round(philox4x32_ctr c, philox4x32_key k) {
  const uint64_t p0 = static_cast<uint64_t>(philox_m0) * c.v[0];
  const uint64_t p1 = static_cast<uint64_t>(philox_m1) * c.v[2];
  const uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
  const uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
  philox4x32_ctr out;
  out.v[0] = hi1 ^ c.v[1] ^ k.v[0];
  out.v[1] = lo1;
  out.v[2] = hi0 ^ c.v[3] ^ k.v[1];
  out.v[3] = lo0;
  return out;
}

}  // namespace detail

/// Philox4x32 with 10 rounds: the block cipher output for `ctr` under `key`
/// (bit-identical to Random123's philox4x32_R(10, ctr, key)).
TROUPE_HOST_DEVICE inline philox4x32_ctr philox4x32_10(philox4x32_ctr ctr, philox4x32_key key) {
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      key.v[0] += detail::philox_w0;
      key.v[1] += detail::philox_w1;
    }
    ctr = detail::philox4x32_round(ctr, key);
  }
  return ctr;
}

/// The four random words for (seed, token_index, sub_stream): key = seed, counter =
/// {token_index (low, high word), sub_stream (low, high word)}.
TROUPE_HOST_DEVICE inline philox4x32_ctr random_block(uint64_t seed, uint64_t token_index,
                                                      uint64_t sub_stream = 0) {
  philox4x32_ctr ctr;
  ctr.v[0] = static_cast<uint32_t>(token_index);
  ctr.v[1] = static_cast<uint32_t>(token_index >> 32);
  ctr.v[2] = static_cast<uint32_t>(sub_stream);
  ctr.v[3] = static_cast<uint32_t>(sub_stream >> 32);
  philox4x32_key key;
  key.v[0] = static_cast<uint32_t>(seed);
  key.v[1] = static_cast<uint32_t>(seed >> 32);
  return philox4x32_10(ctr, key);
}

/// Maps a 32-bit random word to a float in [0, 1) with 24 bits of resolution (exact).
TROUPE_HOST_DEVICE inline float word_to_uniform01(uint32_t word) {
  return static_cast<float>(word >> 8) * (1.0f / 16777216.0f);
}

/// A uniform float in [0, 1): a pure function of (seed, token_index, sub_stream).
TROUPE_HOST_DEVICE inline float uniform01(uint64_t seed, uint64_t token_index,
                                          uint64_t sub_stream) {
  return word_to_uniform01(random_block(seed, token_index, sub_stream).v[0]);
}

/// A uniform float in [0, 1) for the token at `token_index` of a request seeded with
/// `seed` (sub-stream 0): a pure function of its inputs.
TROUPE_HOST_DEVICE inline float uniform01(uint64_t seed, uint64_t token_index) {
  return uniform01(seed, token_index, 0);
}

}  // namespace troupe
