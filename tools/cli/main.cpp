/// troupe: the command-line entry point.
#include <boost/program_options.hpp>
#include <iostream>
#include <string>
#include <vector>

#include "tools/cli/commands.h"

namespace troupe::cli {

bool parse_command_line(const std::vector<std::string>& args,
                        const boost::program_options::options_description& desc,
                        boost::program_options::variables_map& vm) {
  namespace po = boost::program_options;
  po::store(po::command_line_parser(args).options(desc).run(), vm);
  if (vm.count("help")) {
    std::cout << desc;
    return false;
  }
  po::notify(vm);
  return true;
}

}  // namespace troupe::cli

namespace {

const char* kUsage =
    "usage: troupe <command> [options]\n"
    "\n"
    "commands:\n"
    "  generate   generate text from a prompt with a local model\n"
    "  info       describe a model file (architecture, sizes, tensor types, tokenizer, template)\n"
    "  serve      run the head of a cluster and start its local nodes (--config FILE)\n"
    "  node       run one node of a cluster (--config FILE --name NODE)\n"
    "  gateway    run one HTTP gateway of a cluster apart from its head (--config FILE --index I)\n"
    "  drain      drain a node of a running cluster (--head HOST:PORT --node NAME [--wait])\n"
    "\n"
    "Run 'troupe <command> --help' for the options of a command.\n";

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    std::cout << kUsage;
    return args.empty() ? 2 : 0;
  }
  const std::string cmd = args[0];
  args.erase(args.begin());
  try {
    if (cmd == "generate") return troupe::cli::run_generate(args);
    if (cmd == "info") return troupe::cli::run_info(args);
    if (cmd == "serve") return troupe::cli::run_serve(args);
    if (cmd == "node") return troupe::cli::run_node(args);
    if (cmd == "gateway") return troupe::cli::run_gateway(args);
    if (cmd == "drain") return troupe::cli::run_drain(args);
    std::cerr << "troupe: unknown command '" << cmd << "'\n\n" << kUsage;
    return 2;
  } catch (const troupe::cli::usage_error& e) {
    std::cerr << "troupe " << cmd << ": " << e.what() << " (see 'troupe " << cmd << " --help')\n";
    return 2;
  } catch (const boost::program_options::error& e) {
    std::cerr << "troupe " << cmd << ": " << e.what() << " (see 'troupe " << cmd << " --help')\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "troupe " << cmd << ": error: " << e.what() << "\n";
    return 1;
  }
}
