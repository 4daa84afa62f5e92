// GGUF headers as untrusted input: the real SmolLM2 header (its metadata and tensor infos,
// the tokenizer arrays cut to their first entries so a case parses in microseconds),
// mutated byte by byte and field by field (every count, length, type id, dimension and
// offset the header holds), either parses (and loads its config and
// tokenizer) or raises a load_error naming the file. The data section is a sparse file of
// the real size, so a header that still fits places every tensor.
#include <catch2/catch.hpp>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "fuzz_support.h"
#include "runtime/model/gguf.h"
#include "runtime/model/model_loader.h"
#include "test_support.h"

using namespace troupe;
using namespace troupe::test;
using namespace troupe::test::fuzz;

namespace {

constexpr size_t k_kept_array_entries = 300;

/// Where a count, length, type id or offset lies in the header, and its width.
struct field {
  size_t at = 0;
  size_t bytes = 0;
};

/// Writes GGUF v3 values little-endian, and remembers where every structural field lies.
class emitter {
 public:
  template <class T>
  void put(T v) {
    char b[sizeof(T)];
    std::memcpy(b, &v, sizeof(T));
    out_.append(b, sizeof(T));
  }
  /// put() of a count, length, type id or offset.
  template <class T>
  void put_field(T v) {
    fields_.push_back({out_.size(), sizeof(T)});
    put<T>(v);
  }
  void str(const std::string& s) {
    put_field<uint64_t>(s.size());
    out_ += s;
  }
  void scalar(gguf_type t, int64_t i, double f, const std::string& s) {
    switch (t) {
      case gguf_type::uint8: case gguf_type::int8: case gguf_type::boolean: put<uint8_t>(static_cast<uint8_t>(i)); break;
      case gguf_type::uint16: case gguf_type::int16: put<uint16_t>(static_cast<uint16_t>(i)); break;
      case gguf_type::uint32: case gguf_type::int32: put<uint32_t>(static_cast<uint32_t>(i)); break;
      case gguf_type::uint64: case gguf_type::int64: put<int64_t>(i); break;
      case gguf_type::float32: put<float>(static_cast<float>(f)); break;
      case gguf_type::float64: put<double>(f); break;
      case gguf_type::string: str(s); break;
      case gguf_type::array: break;
    }
  }
  void value(const gguf_value& v) {
    if (v.type != gguf_type::array) {  // integer scalars (block count, head counts, ids) are fields too
      const size_t at = out_.size();
      scalar(v.type, v.i, v.f, v.s);
      if (v.type != gguf_type::string && v.type != gguf_type::float32 && v.type != gguf_type::float64)
        fields_.push_back({at, out_.size() - at});
      return;
    }
    const size_t n = std::min<size_t>(v.length, k_kept_array_entries);
    put_field<uint32_t>(static_cast<uint32_t>(v.elem_type));
    put_field<uint64_t>(n);
    for (size_t k = 0; k < n; ++k) {
      if (v.elem_type == gguf_type::array) {
        value(v.arrays[k]);
      } else {
        const int64_t i = k < v.ints.size() ? v.ints[k] : 0;
        const double f = k < v.floats.size() ? v.floats[k] : 0.0;
        scalar(v.elem_type, i, f, k < v.strings.size() ? v.strings[k] : std::string());
      }
    }
  }
  std::string& bytes() { return out_; }
  const std::vector<field>& fields() const { return fields_; }

 private:
  std::string out_;
  std::vector<field> fields_;
};

/// The real model's header re-emitted with the arrays cut, and the size of the whole file.
struct header {
  std::string bytes;
  uint64_t file_size = 0;
  std::vector<field> fields;  ///< every count, length, type id and offset
};

header trimmed_real_header() {
  const gguf_file g(default_model());
  emitter e;
  e.bytes() = "GGUF";
  e.put_field<uint32_t>(3);
  e.put_field<uint64_t>(g.tensors().size());
  e.put_field<uint64_t>(g.metadata().size());
  for (const auto& [key, v] : g.metadata()) {
    e.str(key);
    e.put_field<uint32_t>(static_cast<uint32_t>(v.type));
    e.value(v);
  }
  uint64_t data_end = 0;
  for (const auto& t : g.tensors()) {
    e.str(t.name);
    e.put_field<uint32_t>(static_cast<uint32_t>(t.dims.size()));
    for (int64_t d : t.dims) e.put_field<uint64_t>(static_cast<uint64_t>(d));
    e.put_field<uint32_t>(static_cast<uint32_t>(t.type));
    e.put_field<uint64_t>(t.offset);
    data_end = std::max<uint64_t>(data_end, t.offset + t.bytes);
  }
  header h;
  h.bytes = e.bytes();
  h.fields = e.fields();
  const uint64_t a = g.alignment();
  h.file_size = (h.bytes.size() + a - 1) / a * a + data_end;
  return h;
}

/// Writes `bytes` to `path` and extends it (sparse) to `size`.
void write_sparse(const std::filesystem::path& path, const std::string& bytes, uint64_t size) {
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }
  std::filesystem::resize_file(path, std::max<uint64_t>(size, bytes.size()));
}

/// A structure-aware edit: one count, length, type id, dimension or offset of the header
/// becomes a boundary value of its width (0, 1, all ones, the top bit, a random value,
/// or its old value plus or minus one).
std::string mutate_field(std::string s, const std::vector<field>& fields, rng& r) {
  const field f = r.pick(fields);
  uint64_t v = 0;
  std::memcpy(&v, s.data() + f.at, f.bytes);
  const uint64_t top = uint64_t{1} << (8 * f.bytes - 1);
  const uint64_t choices[] = {0, 1, ~uint64_t{0}, top, top - 1, r.next(), v + 1, v - 1, v * 2, v >> 1};
  v = choices[r.below(10)];
  std::memcpy(s.data() + f.at, &v, f.bytes);
  return s;
}

}  // namespace

TEST_CASE("mutated SmolLM2 GGUF headers load or raise a load_error naming the file", "[loader][gguf][fuzz]") {
  const header h = trimmed_real_header();
  const auto path = scratch_dir("gguf-fuzz") / "fuzz.gguf";
  write_sparse(path, h.bytes, h.file_size);
  REQUIRE(gguf_file(path.string()).tensors().size() == 272);
  rng r(0x67677566);
  tally t;
  for (int c = 0; c < 1000; ++c) {
    const std::string bytes = r.below(2) ? mutate(h.bytes, r, false) : mutate_field(h.bytes, h.fields, r);
    write_sparse(path, bytes, h.file_size);
    expect_clear<load_error>(
        t, "case " + std::to_string(c),
        [&] {
          gguf_file g(path.string());
          load_model_metadata(path.string());
        },
        [&](const load_error& e) { return std::string(e.what()).find(path.string()) != std::string::npos; });
  }
  INFO("loaded " << t.parsed << ", rejected " << t.rejected);
  CHECK(t.parsed + t.rejected == 1000);
  CHECK(t.parsed > 50);
  CHECK(t.rejected > 300);
}
