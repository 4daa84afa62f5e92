// Talks to a running troupe cluster from a C++ program with its own actor system.
//
//   troupe serve --config cluster-config/examples/pipeline2.yaml      # elsewhere
//   example_embedded_client 127.0.0.1 7100 "The capital of France is"
//
// First the blocking wrapper (one call, the whole answer), then the actor API: an
// event-based actor of this program submits the same prompt through a client actor
// and prints the tokens as they stream in. Both are greedy, so both print the same.
#include <iostream>
#include <string>

#include "actors/actor_system_config.h"
#include "actors/client.h"

namespace {

/// An actor that submits one request and prints its events until it finishes.
caf::behavior printer(caf::event_based_actor* self, troupe::client_actor client, troupe::generate_request req) {
  self->send(client, troupe::generate_atom::value, uint64_t{1}, std::move(req), caf::actor_cast<caf::actor>(self));
  return {
      [self, client](troupe::token_atom, const troupe::token_msg& m) {
        std::cout << m.text << std::flush;
        if (!m.finished) return;
        std::cout << "\n[actor API] finished: " << m.finish_reason << (m.error.empty() ? "" : " (" + m.error + ")")
                  << "\n";
        self->send_exit(client, caf::exit_reason::user_shutdown);
        self->quit();
      },
  };
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::cerr << "usage: " << argv[0] << " HEAD_HOST HEAD_PORT PROMPT\n";
    return 2;
  }
  troupe::client_options opts;
  opts.host = argv[1];
  opts.port = static_cast<uint16_t>(std::stoi(argv[2]));
  troupe::sampling_params greedy;
  greedy.temperature = 0;
  greedy.max_tokens = 16;
  greedy.ignore_eos = true;
  try {
    // 1. The blocking wrapper.
    troupe::blocking_client blocking(opts);
    auto r = blocking.generate(argv[3], greedy);
    std::cout << "[blocking] " << r.text << "\n[blocking] tokens:";
    for (int32_t t : r.tokens) std::cout << ' ' << t;
    std::cout << "\n";

    // 2. The actor API, from this program's own actor system.
    troupe::fault_tolerance_section ft;
    troupe::system_config cfg(ft, 2);
    caf::actor_system sys{cfg};
    auto client = troupe::spawn_client(sys, troupe::connect_to_cluster(sys, opts));
    std::cout << "[actor API] ";
    sys.spawn(printer, client, troupe::generate_request{blocking.encode(argv[3], false), greedy});
    sys.await_all_actors_done();
  } catch (const std::exception& e) {
    std::cerr << "example_embedded_client: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
