// tools/check_inspect.py: every data member of a struct that actors/messages.h inspects is in
// its inspect, so nothing crosses a process at its default (the check that would have caught
// graph_warmup_context reaching node processes as 0). Run on this tree, and on a small tree
// with a member left out.
#include <catch2/catch.hpp>
#include <fstream>

#include "tools/troupe_process.h"

using namespace troupe::test;
namespace fs = std::filesystem;

namespace {

/// Runs the check over the tree at `root`; stderr goes through `dir`/check.err.
cli_result run_check(const fs::path& root, const fs::path& dir) {
  return run_command("python3 " + (source_dir() / "tools" / "check_inspect.py").string() + " --root " + root.string(),
                     dir / "check.err");
}

/// A tree with one inspected struct `probe` (members a, b and a local c) whose inspect names
/// `named`.
fs::path probe_tree(const std::string& name, const std::string& named) {
  const fs::path root = scratch_dir(name);
  fs::create_directories(root / "actors");
  fs::create_directories(root / "runtime");
  std::ofstream(root / "runtime" / "probe.h") << "#pragma once\n"
                                                 "struct probe {\n"
                                                 "  int a = 0;  ///< sent\n"
                                                 "  std::vector<int> b;\n"
                                                 "  int c = 0;  // inspect: local\n"
                                                 "  int size() const { return a; }\n"
                                                 "};\n";
  std::ofstream(root / "actors" / "messages.h") << "template <class Inspector>\n"
                                                   "typename Inspector::result_type inspect(Inspector& f, probe& x) {\n"
                                                   "  return f(caf::meta::type_name(\"probe\"), "
                                                << named << ");\n}\n";
  return root;
}

}  // namespace

TEST_CASE("every member of every struct actors/messages.h inspects is in its inspect", "[messages]") {
  const auto dir = scratch_dir("check_inspect_tree");
  const auto r = run_check(source_dir(), dir);
  INFO(r.err);
  CHECK(r.code == 0);
  CHECK(r.out.find("every member inspected") != std::string::npos);
}

TEST_CASE("check_inspect names a member left out of an inspect with its file and line", "[messages]") {
  const auto root = probe_tree("check_inspect_missing", "x.a");
  const auto r = run_check(root, root);
  CHECK(r.code == 1);
  CHECK(r.err.find("runtime/probe.h:4: probe::b is not in its inspect") != std::string::npos);
  CHECK(r.err.find("probe::a") == std::string::npos);
  CHECK(r.err.find("probe::c") == std::string::npos);  // marked local
}

TEST_CASE("check_inspect passes a struct whose inspect names every member but the local one", "[messages]") {
  const auto root = probe_tree("check_inspect_complete", "x.a, x.b");
  const auto r = run_check(root, root);
  INFO(r.err);
  CHECK(r.code == 0);
  CHECK(r.out.find("1 structs, every member inspected") != std::string::npos);
}
