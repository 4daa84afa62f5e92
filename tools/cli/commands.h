#pragma once
/// The `troupe` command's sub-commands. Each takes the arguments after its name and
/// returns the process exit code (0 ok, 1 runtime error, 2 usage error).
#include <stdexcept>
#include <string>
#include <vector>

#include <boost/program_options.hpp>

#include "cluster-config/cluster_config.h"

namespace troupe::cli {

/// Parses `args` against `desc` into `vm`. Prints the help and returns false for
/// --help; throws boost's errors (main turns them into usage errors) otherwise.
bool parse_command_line(const std::vector<std::string>& args,
                        const boost::program_options::options_description& desc,
                        boost::program_options::variables_map& vm);

int run_generate(const std::vector<std::string>& args);
int run_info(const std::vector<std::string>& args);
/// `troupe serve`: the head (or, under mpirun/srun, the rank's role).
int run_serve(const std::vector<std::string>& args);
/// `troupe node`: one node process.
int run_node(const std::vector<std::string>& args);
/// `troupe gateway`: one HTTP gateway apart from the head (gateways[I] of the file).
int run_gateway(const std::vector<std::string>& args);
/// `troupe drain`: graceful drain of a node of a running cluster.
int run_drain(const std::vector<std::string>& args);

/// Loads a cluster file and applies `--set` overrides; the result is validated.
cluster_config load_cluster(const std::string& path, const std::vector<std::string>& overrides);

/// Thrown for a wrong flag or value; main prints it with a pointer to --help.
struct usage_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace troupe::cli
