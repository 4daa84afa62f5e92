// The Catch2 main of troupe_tests and troupe_cuda_tests. Catch2 v2 exits with the number
// of failed assertions, so a case with exactly N failures would read as exit code N (a case
// with 4 once read as ctest's skip code). Here the exit status says one thing each:
//   0   every case that ran passed and none skipped
//   1   an assertion failed, a case threw, or the test spec matched no case
//   77  nothing failed and at least one case skipped (tests/skip.h; ctest: SKIP_RETURN_CODE)
// Listing (--list-test-names-only and friends) keeps Catch2's own status (the number of
// cases listed), which catch_discover_tests relies on.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
#include <cstdio>

#include "skip.h"

namespace {

/// The totals of the last test run in this process.
Catch::Totals run_totals;

/// Keeps the run's totals for main (Catch2's own exit status folds them into one number).
struct totals_listener : Catch::TestEventListenerBase {
  using TestEventListenerBase::TestEventListenerBase;
  void testRunEnded(const Catch::TestRunStats& stats) override { run_totals = stats.totals; }
};

}  // namespace

CATCH_REGISTER_LISTENER(totals_listener)

int main(int argc, char* argv[]) {
  Catch::Session session;
  if (const int rc = session.applyCommandLine(argc, argv); rc != 0) return rc;
  const auto& cfg = session.configData();
  const bool listing = cfg.listTests || cfg.listTestNamesOnly || cfg.listTags || cfg.listReporters;
  const int rc = session.run();
  if (listing || cfg.showHelp || cfg.libIdentify) return rc;
  if (rc != 0 || run_totals.assertions.failed > 0 || run_totals.testCases.failed > 0) return 1;
  if (run_totals.testCases.total() == 0) {
    std::fprintf(stderr, "troupe tests: no test case matched the test spec\n");
    return 1;
  }
  if (troupe::test::skip_count() > 0) {
    std::printf("%s: %d skip(s) in this run; exit status %d\n", troupe::test::skip_marker,
                troupe::test::skip_count().load(), troupe::test::skip_exit_code);
    return troupe::test::skip_exit_code;
  }
  return 0;
}
