#pragma once
/// The `troupe` command's sub-commands. Each takes the arguments after its name and
/// returns the process exit code (0 ok, 1 runtime error, 2 usage error).
#include <string>
#include <vector>

namespace troupe::cli {

int run_generate(const std::vector<std::string>& args);
int run_info(const std::vector<std::string>& args);

/// Thrown for a wrong flag or value; main prints it with a pointer to --help.
struct usage_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace troupe::cli
