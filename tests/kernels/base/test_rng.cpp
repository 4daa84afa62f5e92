#include <catch2/catch.hpp>

#include <set>

#include "kernels/base/rng.h"

using troupe::philox4x32_10;
using troupe::philox4x32_ctr;
using troupe::philox4x32_key;

namespace {

/// One line of Random123's tests/kat_vectors: counter, key, expected output.
struct kat {
  philox4x32_ctr ctr;
  philox4x32_key key;
  philox4x32_ctr expected;
};

}  // namespace

TEST_CASE("Philox4x32-10 reproduces Random123's known-answer vectors", "[sampler]") {
  const kat vectors[] = {
      {{{0, 0, 0, 0}}, {{0, 0}}, {{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}}},
      {{{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}},
       {{0xffffffff, 0xffffffff}},
       {{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}}},
      {{{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}},
       {{0xa4093822, 0x299f31d0}},
       {{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}}},
  };
  for (const kat& v : vectors) {
    const philox4x32_ctr out = philox4x32_10(v.ctr, v.key);
    for (int i = 0; i < 4; ++i) CHECK(out.v[i] == v.expected.v[i]);
  }
}

TEST_CASE("uniform01 is a pure function of seed and token index and lies in 0 to 1", "[sampler]") {
  for (uint64_t i = 0; i < 1000; ++i) {
    const float u = troupe::uniform01(42, i);
    REQUIRE(u >= 0.0f);
    REQUIRE(u < 1.0f);
    REQUIRE(u == troupe::uniform01(42, i));
  }
  CHECK(troupe::word_to_uniform01(0xffffffffu) < 1.0f);
  CHECK(troupe::word_to_uniform01(0u) == 0.0f);
}

TEST_CASE("uniform01 uses the high words of the seed, the token index and the sub-stream", "[sampler]") {
  const float base = troupe::uniform01(7, 3, 0);
  CHECK(base == troupe::uniform01(7, 3));
  CHECK(base != troupe::uniform01(7 + (uint64_t{1} << 32), 3, 0));
  CHECK(base != troupe::uniform01(7, 3 + (uint64_t{1} << 32), 0));
  CHECK(base != troupe::uniform01(7, 3, 1));
  CHECK(base != troupe::uniform01(7, 3, uint64_t{1} << 32));
}

TEST_CASE("uniform01 over consecutive token indices is spread evenly over 0 to 1", "[sampler]") {
  constexpr int n = 100000;
  constexpr int bins = 10;
  int count[bins] = {};
  double sum = 0.0;
  std::set<float> distinct;
  for (int i = 0; i < n; ++i) {
    const float u = troupe::uniform01(123456789, static_cast<uint64_t>(i));
    sum += u;
    ++count[static_cast<int>(u * bins)];
    distinct.insert(u);
  }
  CHECK(sum / n == Approx(0.5).margin(0.005));
  double chi2 = 0.0;
  for (int c : count) chi2 += (c - n / bins) * double(c - n / bins) / (n / bins);
  CHECK(chi2 < 27.88);  // 9 degrees of freedom, p = 0.001
  CHECK(distinct.size() > n * 99 / 100);
}
