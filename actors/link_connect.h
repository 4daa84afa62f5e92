#pragma once
/// Connecting to a published actor with a deadline. `connect_link` (link_security.h) waits
/// for the handshake as long as it takes: a process that is paused (SIGSTOP, a hung host)
/// still accepts the TCP connection in its kernel and never answers, so a caller that tries
/// several heads in turn must bound each attempt.
#include <caf/all.hpp>
#include <set>
#include <string>

#include "actors/link_security.h"

namespace troupe {

/// Connects to the actor published at host:port (TLS when this system's links are), giving
/// up after `timeout` with sec::request_timeout; sec::no_actor_published_at_port when
/// nothing is published there, sec::unexpected_actor_messaging_interface when it is not a
/// `Handle`.
template <class Handle>
caf::expected<Handle> connect_link_within(caf::actor_system& sys, const std::string& host, uint16_t port,
                                          caf::timespan timeout) {
  auto mm = links_are_tls(sys) ? sys.openssl_manager().actor_handle() : sys.middleman().actor_handle();
  caf::scoped_actor self{sys};
  caf::expected<Handle> out{caf::make_error(caf::sec::request_timeout)};
  self->request(mm, timeout, caf::connect_atom::value, host, port)
      .receive(
          [&](const caf::node_id&, caf::strong_actor_ptr& ptr, const std::set<std::string>& ifs) {
            if (!ptr)
              out = caf::make_error(caf::sec::no_actor_published_at_port);
            else if (!sys.assignable<Handle>(ifs))
              out = caf::make_error(caf::sec::unexpected_actor_messaging_interface);
            else
              out = caf::actor_cast<Handle>(std::move(ptr));
          },
          [&](caf::error& e) { out = std::move(e); });
  return out;
}

}  // namespace troupe
