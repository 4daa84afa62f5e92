#pragma once
/// The `troupe` command's sub-commands. Each takes the arguments after its name and
/// returns the process exit code (0 ok, 1 runtime error, 2 usage error).
#include <stdexcept>
#include <string>
#include <vector>

#include "cluster-config/cluster_config.h"

namespace troupe::cli {

int run_generate(const std::vector<std::string>& args);
int run_info(const std::vector<std::string>& args);
/// `troupe serve`: the head (or, under mpirun/srun, the rank's role).
int run_serve(const std::vector<std::string>& args);
/// `troupe node`: one node process.
int run_node(const std::vector<std::string>& args);

/// Loads a cluster file and applies `--set` overrides; the result is validated.
cluster_config load_cluster(const std::string& path, const std::vector<std::string>& overrides);

/// Thrown for a wrong flag or value; main prints it with a pointer to --help.
struct usage_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace troupe::cli
