// The head's state on disk (actors/leadership/head_state_store.h): saves are atomic and
// keep the previous state, a crash in the middle of a save or a torn main file loses
// nothing, and a store with no good state left is an error, never an empty cluster.
#include <spdlog/sinks/ringbuffer_sink.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <fstream>

#include "actors/actor_system_config.h"
#include "actors/leadership/head_state_store.h"
#include "test_support.h"
#include "tests/actors/leadership/sample_state.h"

namespace {

using namespace troupe;
using Catch::Contains;
namespace fs = std::filesystem;

std::string read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_bytes(const fs::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << bytes;
}

/// The message of the exception load() throws ("" when none).
std::string store_error(const head_state_store& store) {
  try {
    store.load();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

/// Collects the log lines written while it lives.
struct log_capture {
  std::shared_ptr<spdlog::sinks::ringbuffer_sink_mt> sink = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(64);
  log_capture() { logger()->sinks().push_back(sink); }
  ~log_capture() {
    auto& sinks = logger()->sinks();
    sinks.erase(std::remove(sinks.begin(), sinks.end(), sink), sinks.end());
  }
  bool saw(const std::string& text) const {
    const auto lines = sink->last_formatted();
    return std::any_of(lines.begin(), lines.end(), [&](const std::string& l) { return l.find(text) != std::string::npos; });
  }
};

}  // namespace

TEST_CASE("a fresh store loads nothing, and each save keeps the one before as .prev", "[actors][leadership]") {
  const auto dir = test::scratch_dir("leadership/store_saves") / "state";  // created by the first save
  head_state_store store({dir, "head_state.bin"});
  CHECK_FALSE(store.load());
  const auto first = test::sample_state(3, 41), second = test::sample_state(3, 42);
  store.save(first);
  CHECK(fs::exists(store.main_path()));
  CHECK_FALSE(fs::exists(store.previous_path()));
  auto loaded = store.load();
  REQUIRE(loaded);
  CHECK(loaded->state == first);
  CHECK(loaded->from == store.main_path());
  CHECK_FALSE(loaded->fell_back);
  store.save(second);
  loaded = store.load();
  REQUIRE(loaded);
  CHECK(loaded->state == second);
  CHECK(decode(read_bytes(store.previous_path()), "prev") == first);
  CHECK_FALSE(fs::exists(store.temp_path()));
  CHECK_FALSE(fs::exists(store.previous_path().string() + ".tmp"));
  CHECK(read_bytes(store.main_path()) == encode(second));
}

TEST_CASE("a temp file left by a crashed save changes neither load nor the next save", "[actors][leadership]") {
  const auto dir = test::scratch_dir("leadership/store_crash");
  head_state_store store({dir, "head_state.bin"});
  const auto saved = test::sample_state(3, 41);
  store.save(saved);
  const auto half = encode(test::sample_state(3, 42));
  write_bytes(store.temp_path(), half.substr(0, half.size() / 2));  // the crash: before the rename
  write_bytes(store.previous_path().string() + ".tmp", "torn");
  auto loaded = store.load();
  REQUIRE(loaded);
  CHECK(loaded->state == saved);
  CHECK_FALSE(loaded->fell_back);
  const auto next = test::sample_state(4, 43);
  store.save(next);
  loaded = store.load();
  REQUIRE(loaded);
  CHECK(loaded->state == next);
  CHECK(decode(read_bytes(store.previous_path()), "prev") == saved);
  CHECK_FALSE(fs::exists(store.temp_path()));
}

TEST_CASE("a truncated main file falls back to .prev and logs which file it used", "[actors][leadership]") {
  const auto dir = test::scratch_dir("leadership/store_torn");
  head_state_store store({dir, "head_state.bin"});
  const auto older = test::sample_state(3, 41), newer = test::sample_state(3, 42);
  store.save(older);
  store.save(newer);
  const auto bytes = read_bytes(store.main_path());
  write_bytes(store.main_path(), bytes.substr(0, bytes.size() - 10));  // a torn write
  log_capture log;
  auto loaded = store.load();
  REQUIRE(loaded);
  CHECK(loaded->state == older);
  CHECK(loaded->from == store.previous_path());
  CHECK(loaded->fell_back);
  CHECK_THAT(loaded->why, Contains(store.main_path().string() + ": truncated: the payload has "));
  CHECK(log.saw("head state: " + store.main_path().string() + ": truncated: "));
  CHECK(log.saw("loaded the previous state " + store.previous_path().string() + " instead (term 3, sequence 41)"));
  // The next save replaces the torn file and keeps the good .prev (not the torn file).
  const auto next = test::sample_state(3, 43);
  store.save(next);
  CHECK(store.load()->state == next);
  CHECK(decode(read_bytes(store.previous_path()), "prev") == older);
  // A deleted main file falls back too.
  fs::remove(store.main_path());
  loaded = store.load();
  REQUIRE(loaded);
  CHECK(loaded->fell_back);
  CHECK(loaded->why == store.main_path().string() + ": missing");
}

TEST_CASE("a store whose files are all damaged is an error naming each file, never an empty cluster",
          "[actors][leadership]") {
  const auto dir = test::scratch_dir("leadership/store_corrupt");
  head_state_store store({dir, "head_state.bin"});
  write_bytes(store.main_path(), "not a state");
  CHECK(store_error(store) == "no good head state in " + dir.string() + ": " + store.main_path().string() +
                                 ": not a troupe head state (bad magic: the first bytes are 6e6f742061207374, "
                                 "expected 5452504845414400); and " + store.previous_path().string() +
                                 " to fall back to is missing");
  auto bytes = encode(test::sample_state());
  bytes[bytes.size() - 1] = static_cast<char>(bytes.back() ^ 1);
  write_bytes(store.previous_path(), bytes);
  CHECK_THAT(store_error(store), Contains("; and " + store.previous_path().string() + ": checksum mismatch"));
}

TEST_CASE("a store that cannot create its directory names it", "[actors][leadership]") {
  const auto dir = test::scratch_dir("leadership/store_blocked");
  write_bytes(dir / "file", "x");
  head_state_store store({dir / "file" / "state", "head_state.bin"});
  try {
    store.save(test::sample_state());
    FAIL("save into a path under a regular file succeeded");
  } catch (const std::runtime_error& e) {
    CHECK_THAT(e.what(), Contains("head state store: cannot create the directory " + (dir / "file" / "state").string()));
  }
  CHECK_THROWS_WITH(head_state_store({dir, "a/b"}), Contains("file name 'a/b' must be a plain, non-empty file name"));
  CHECK_THROWS_WITH(head_state_store({"", "x"}), Contains("no directory given"));
}
