#pragma once
/// Security of the cluster's CAF links: mutual TLS through CAF's OpenSSL module
/// (security.tls: required) and the sender checks that keep control messages to the
/// head's own actors. docs/security.md describes the model.
#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <caf/openssl/all.hpp>
#include <string>

#include "cluster-config/cluster_config.h"

namespace troupe {

/// The TLS identity of one process: the cluster CA, its own certificate and key (PEM
/// files), and where each came from (a key path or a flag) for error messages.
struct tls_identity {
  std::string ca;           ///< "" = TLS off (plaintext links)
  std::string certificate;
  std::string key;
  std::string ca_from = "security.ca";
  std::string certificate_from = "security.certificate";
  std::string key_from = "security.key";
  /// True when the links of this process are TLS.
  bool enabled() const { return !ca.empty(); }
};

/// The head's identity under `c.security` (none when security.tls is off).
tls_identity head_identity(const cluster_config& c);

/// Node `n`'s identity: its own certificate and key when set, else the section's.
tls_identity node_identity(const cluster_config& c, const node_section& n);

/// Checks the files of `id`: the certificate and the key are readable PEM files, the key
/// matches the certificate, and, when `id.ca` is set, the CA signed the certificate. Throws
/// std::runtime_error naming the key and the file ("security.key: <file>: ...").
void check_identity(const tls_identity& id);

/// Checks the files of `id` (each a readable PEM file, the key matches the certificate, the
/// certificate is signed by the CA), throwing std::runtime_error that names the key and the
/// file, then loads CAF's OpenSSL module into `cfg` with them. Does nothing when TLS is off.
/// Call before the actor_system is built from `cfg`.
void use_tls(caf::actor_system_config& cfg, const tls_identity& id);

/// True when `sys` was built with use_tls (its links are mutual TLS).
inline bool links_are_tls(const caf::actor_system& sys) { return sys.has_openssl_manager(); }

/// "mutual TLS (CA <file>)" or "plaintext", for logs.
std::string describe_links(const caf::actor_system& sys);

/// The line the head or a node logs about its links at start; `warn` is set when the
/// links are plaintext on an address other hosts can reach.
std::string links_notice(const caf::actor_system& sys, const std::string& host, bool& warn);

/// Publishes `whom` on host:port, over TLS when the system has the OpenSSL module. With
/// SO_REUSEADDR: a head or node started again right after its predecessor died binds its port
/// at once instead of failing for a minute while the dead process's connections sit in
/// TIME_WAIT; a port another process listens on is still refused (Linux allows one listener).
template <class Handle>
caf::expected<uint16_t> publish_link(caf::actor_system& sys, const Handle& whom, uint16_t port,
                                     const std::string& host) {
  if (links_are_tls(sys)) return caf::openssl::publish(whom, port, host.c_str(), true);
  return sys.middleman().publish(whom, port, host.c_str(), true);
}

/// Closes what publish_link opened. (CAF 0.17.6's caf::openssl::unpublish does not
/// compile: it leaves out the actor; this asks the OpenSSL manager directly.)
template <class Handle>
void unpublish_link(caf::actor_system& sys, const Handle& whom, uint16_t port) {
  if (!links_are_tls(sys)) {
    sys.middleman().unpublish(whom, port);
    return;
  }
  auto f = caf::make_function_view(sys.openssl_manager().actor_handle());
  f(caf::unpublish_atom::value, caf::actor_cast<caf::actor_addr>(whom), port);
}

/// The actor published at host:port, over TLS when the system has the OpenSSL module.
template <class Handle>
caf::expected<Handle> connect_link(caf::actor_system& sys, const std::string& host, uint16_t port) {
  if (links_are_tls(sys)) return caf::openssl::remote_actor<Handle>(sys, host, port);
  return sys.middleman().remote_actor<Handle>(host, port);
}

/// Whether `sender` (a message's sender) is an actor of node `node`. An anonymous sender
/// never is: across the network it could be anyone.
inline bool sent_from(const caf::strong_actor_ptr& sender, const caf::node_id& node) {
  return sender != nullptr && sender->node() == node;
}

/// "an actor of node <id>" or "an anonymous sender", for refusal messages.
std::string describe_sender(const caf::strong_actor_ptr& sender);

}  // namespace troupe
