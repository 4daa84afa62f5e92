#pragma once
/// Explicit skips. A test case that cannot run on this machine (no GPU, no privilege to
/// build network namespaces) calls skip_case(why) and returns: the case prints
/// "TROUPE-SKIPPED: <case>: <why>" and the test binary (tests/main.cpp) then exits with
/// skip_exit_code, which ctest reports as skipped. A run with any failed assertion exits 1,
/// skip or not, so a skip can never hide a failure and a failure can never look like a skip.
#include <atomic>
#include <catch2/catch.hpp>
#include <cstdio>
#include <string>

namespace troupe::test {

/// The exit status of a run in which nothing failed and at least one case skipped
/// (ctest's SKIP_RETURN_CODE). A failed run exits 1, never this.
constexpr int skip_exit_code = 77;

/// The prefix of the line a skip prints.
constexpr const char* skip_marker = "TROUPE-SKIPPED";

/// The number of skips recorded in this process.
inline std::atomic<int>& skip_count() {
  static std::atomic<int> n{0};
  return n;
}

/// Records that the current test case cannot run here because of `why` and prints the
/// skip marker; the caller returns right after. Assertions that fail before or after it
/// still fail the run.
inline void skip_case(const std::string& why) {
  ++skip_count();
  const std::string name = Catch::getResultCapture().getCurrentTestName();
  std::printf("%s: %s: %s\n", skip_marker, name.c_str(), why.c_str());
  std::fflush(stdout);
}

}  // namespace troupe::test
