#pragma once
/// Paths shared by the tests: the source tree, the goldens and the default model.
#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <string>

namespace troupe::test {

inline std::filesystem::path source_dir() { return TROUPE_SOURCE_DIR; }
inline std::filesystem::path binary_dir() { return TROUPE_BINARY_DIR; }
inline std::filesystem::path goldens_dir() { return source_dir() / "tests" / "goldens"; }

/// The cache folder tools/fetch_model.sh fills ($TROUPE_CACHE or ~/.cache/troupe).
inline std::filesystem::path cache_dir() {
  if (const char* c = std::getenv("TROUPE_CACHE"); c && *c) return c;
  const char* home = std::getenv("HOME");
  return std::filesystem::path(home ? home : "/root") / ".cache" / "troupe";
}

/// The default model (SmolLM2-135M-Instruct Q4_1). Fails loudly when it was not fetched.
inline std::string default_model() {
  auto p = cache_dir() / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf";
  if (!std::filesystem::exists(p))
    throw std::runtime_error("default model missing at " + p.string() +
                             ": run tools/fetch_model.sh (or tools/setup.sh --test)");
  return p.string();
}

/// A fresh empty scratch folder under the build tree.
inline std::filesystem::path scratch_dir(const std::string& name) {
  auto p = binary_dir() / "test-scratch" / name;
  std::filesystem::remove_all(p);
  std::filesystem::create_directories(p);
  return p;
}

}  // namespace troupe::test
