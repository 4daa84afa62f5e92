// safetensors headers as untrusted input: the real header of the SmolLM2 export's first
// shard (tools/export_hf.py, as tools/setup.sh --test makes it), mutated as bytes and as
// JSON values, either parses (and small tensors decode) or raises a load_error naming the
// file. The data section is a sparse file of the real size.
#include <catch2/catch.hpp>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "fuzz_support.h"
#include "runtime/model/model_loader.h"
#include "runtime/model/safetensors.h"
#include "test_support.h"

using namespace troupe;
using namespace troupe::test;
using namespace troupe::test::fuzz;
using nlohmann::json;

namespace {

/// The JSON header of the real first shard and the size of its data section.
struct shard_header {
  std::string text;
  uint64_t data_size = 0;
};

shard_header real_header() {
  const auto path = cache_dir() / "models" / "SmolLM2-135M-Instruct-hf" / "model-00001-of-00002.safetensors";
  INFO("the Hugging Face export of the default model (tools/setup.sh --test makes it)");
  REQUIRE(std::filesystem::exists(path));
  std::ifstream in(path, std::ios::binary);
  uint64_t n = 0;
  in.read(reinterpret_cast<char*>(&n), 8);
  REQUIRE(n < (1u << 20));
  shard_header h;
  h.text.resize(n);
  in.read(h.text.data(), static_cast<std::streamsize>(n));
  h.data_size = std::filesystem::file_size(path) - 8 - n;
  return h;
}

/// Writes a shard: the 8-byte length (of `text`, unless `length` is given), the header,
/// and a sparse data section of `data_size` bytes.
void write_shard(const std::filesystem::path& path, const std::string& text, uint64_t data_size,
                 std::optional<uint64_t> length = std::nullopt) {
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    const uint64_t n = length.value_or(text.size());
    out.write(reinterpret_cast<const char*>(&n), 8);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
  }
  std::filesystem::resize_file(path, 8 + text.size() + data_size);
}

/// JSON values at the edges: huge and negative sizes, wrong types, 2^61 (times 8 bytes
/// wraps to 0), empty shapes.
const std::vector<json>& boundary_values() {
  static const std::vector<json> v = {
      json(-1), json(0), json(1), json(2305843009213693952ull), json(4611686018427387904ull),
      json(9223372036854775807ll), json(18446744073709551615ull), json(0.5), json(""), json("F32"), json("BF16"),
      json("F64"), json("I8"), json("Q4"), json(nullptr), json::array(), json::array({0, 0}),
      json::array({2305843009213693952ull}), json::array({4611686018427387904ull, 2}), json::object(), json(true)};
  return v;
}

/// A structure-aware edit: one field of one tensor entry (dtype, shape, a dimension,
/// data_offsets, an offset) becomes a boundary value, the entry gets a size that wraps
/// around 2^64 bytes, or the entry is dropped.
std::string mutate_entry(const json& header, rng& r) {
  json h = header;
  std::vector<std::string> names;
  for (const auto& [k, v] : h.items()) names.push_back(k);
  json& e = h[r.pick(names)];
  const json& b = r.pick(boundary_values());
  if (!e.is_object()) {
    e = b;
    return dump(h);
  }
  switch (r.below(7)) {
    case 0: e["dtype"] = b; break;
    case 1: e["shape"] = b; break;
    case 2:
      if (e.contains("shape") && e["shape"].is_array() && !e["shape"].empty()) e["shape"][r.below(e["shape"].size())] = b;
      break;
    case 3: e["data_offsets"] = b; break;
    case 4:
      if (e.contains("data_offsets") && e["data_offsets"].is_array()) e["data_offsets"][r.below(2)] = b;
      break;
    case 5: {  // a size that wraps to the bytes it holds: 2^61 x 8 bytes, 2^62 x 4 bytes
      const bool f64 = r.below(2) == 0;
      const uint64_t begin = e.contains("data_offsets") && e["data_offsets"].is_array() &&
                                     !e["data_offsets"].empty() && e["data_offsets"][0].is_number_unsigned()
                                 ? e["data_offsets"][0].get<uint64_t>()
                                 : 0;
      e["dtype"] = f64 ? "F64" : "F32";
      e["shape"] = json::array({f64 ? 2305843009213693952ull : 4611686018427387904ull});
      e["data_offsets"] = json::array({begin, begin});
      break;
    }
    default: h.erase(r.pick(names)); break;
  }
  return dump(h);
}

/// Whether an accepted entry's bytes are exactly its element count times its dtype's size
/// (without wrapping around).
bool holds_its_shape(const safetensors_entry& e) {
  const size_t es = safetensors_dtype_size(e.dtype);
  if (es == 0) return true;
  uint64_t need = 0;
  return !__builtin_mul_overflow(static_cast<uint64_t>(e.numel()), es, &need) && need == e.bytes;
}

}  // namespace

TEST_CASE("mutated SmolLM2 safetensors headers load or raise a load_error naming the file",
          "[loader][safetensors][fuzz]") {
  const shard_header h = real_header();
  const json parsed = json::parse(h.text);
  const auto path = scratch_dir("safetensors-fuzz") / "fuzz.safetensors";
  rng r(0x73616665);
  tally t;
  for (int c = 0; c < 1500; ++c) {
    std::string text;
    std::optional<uint64_t> length;
    switch (r.below(3)) {
      case 0: text = mutate(h.text, r, true); break;
      case 1: text = mutate_entry(parsed, r); break;
      default:
        text = h.text;
        length = r.below(2) ? r.next() : h.text.size() + r.below(64) - 32;
    }
    write_shard(path, text, h.data_size, length);
    expect_clear<load_error>(
        t, "case " + std::to_string(c) + ":\n" + text.substr(0, 2000),
        [&] {
          safetensors_file f(path.string());
          const safetensors_entry* small = nullptr;  // one decoded per case: each decode is a parallel region
          for (const auto& [name, e] : f.entries()) {
            INFO("tensor " << name);
            CHECK(holds_its_shape(e));
            if (e.numel() < 4096 && (!small || r.below(4) == 0)) small = &e;
          }
          if (small) safetensors_to_f32(*small, path.string());
        },
        [&](const load_error& e) { return std::string(e.what()).find(path.string()) != std::string::npos; });
  }
  INFO("loaded " << t.parsed << ", rejected " << t.rejected);
  CHECK(t.parsed + t.rejected == 1500);
  CHECK(t.parsed > 50);
  CHECK(t.rejected > 500);
}
