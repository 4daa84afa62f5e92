#pragma once
/// Connecting to a published actor with a deadline. `connect_link` (link_security.h) waits
/// for the handshake as long as it takes: a process that is paused (SIGSTOP, a hung host)
/// still accepts the TCP connection in its kernel and never answers, so a caller that tries
/// several heads in turn must bound each attempt. An event-based actor connects without
/// blocking a thread through `connect_link_async`.
#include <caf/all.hpp>
#include <set>
#include <string>
#include <utility>

#include "actors/link_security.h"

namespace troupe {

namespace link_connect_detail {

/// The middleman that connects this system's links (the TLS one when they are TLS).
inline caf::io::middleman_actor connector(caf::actor_system& sys) {
  return links_are_tls(sys) ? sys.openssl_manager().actor_handle() : sys.middleman().actor_handle();
}

/// The middleman's answer to connect_atom as a `Handle`, or the error saying why not.
template <class Handle>
caf::expected<Handle> handle_from(caf::actor_system& sys, caf::strong_actor_ptr& ptr,
                                  const std::set<std::string>& ifs) {
  if (!ptr) return caf::make_error(caf::sec::no_actor_published_at_port);
  if (!sys.assignable<Handle>(ifs)) return caf::make_error(caf::sec::unexpected_actor_messaging_interface);
  return caf::actor_cast<Handle>(std::move(ptr));
}

}  // namespace link_connect_detail

/// Connects to the actor published at host:port (TLS when this system's links are), giving
/// up after `timeout` with sec::request_timeout; sec::no_actor_published_at_port when
/// nothing is published there, sec::unexpected_actor_messaging_interface when it is not a
/// `Handle`.
template <class Handle>
caf::expected<Handle> connect_link_within(caf::actor_system& sys, const std::string& host, uint16_t port,
                                          caf::timespan timeout) {
  caf::scoped_actor self{sys};
  caf::expected<Handle> out{caf::make_error(caf::sec::request_timeout)};
  self->request(link_connect_detail::connector(sys), timeout, caf::connect_atom::value, host, port)
      .receive(
          [&](const caf::node_id&, caf::strong_actor_ptr& ptr, const std::set<std::string>& ifs) {
            out = link_connect_detail::handle_from<Handle>(sys, ptr, ifs);
          },
          [&](caf::error& e) { out = std::move(e); });
  return out;
}

/// The same connection from an event-based actor, without blocking a thread: `done`
/// (called as done(caf::expected<Handle>)) runs in `self`'s context once it is known.
template <class Handle, class Self, class Done>
void connect_link_async(Self* self, const std::string& host, uint16_t port, caf::timespan timeout, Done done) {
  auto& sys = self->home_system();
  self->request(link_connect_detail::connector(sys), timeout, caf::connect_atom::value, host, port)
      .then(
          [self, done](const caf::node_id&, caf::strong_actor_ptr& ptr, const std::set<std::string>& ifs) mutable {
            done(link_connect_detail::handle_from<Handle>(self->home_system(), ptr, ifs));
          },
          [done](caf::error& e) mutable { done(caf::expected<Handle>{std::move(e)}); });
}

/// Why a connection failed, in words: "no actor is published there", "the actor published
/// there is not a <what>", else CAF's rendering of the error.
inline std::string connect_failure(caf::actor_system& sys, const caf::error& e, const std::string& what) {
  if (e == caf::sec::no_actor_published_at_port) return "no actor is published there";
  if (e == caf::sec::unexpected_actor_messaging_interface) return "the actor published there is not a " + what;
  return sys.render(e);
}

}  // namespace troupe
