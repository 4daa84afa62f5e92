#pragma once
/// TLS of the gateway's HTTP port (server.tls over security.*): which mode the port is in,
/// the lines the head logs about it, and the OpenSSL context of its HTTPS connections.
/// docs/security.md describes the modes.
#include <boost/asio/ssl/context.hpp>
#include <memory>
#include <string>

#include "actors/link_security.h"
#include "cluster-config/cluster_config.h"

namespace troupe {

/// How the HTTP port speaks.
enum class http_tls_mode {
  plain,   ///< plain HTTP
  https,   ///< HTTPS with the head's certificate; no client certificate asked
  mutual,  ///< HTTPS that requires a client certificate signed by the cluster CA
};

/// The HTTP port's TLS settings.
struct http_tls {
  http_tls_mode mode = http_tls_mode::plain;
  /// The head's certificate and key (https, mutual); `ca` is the CA whose client
  /// certificates are required (mutual only, else "").
  tls_identity identity;
  std::string settings;  ///< "server.tls: cluster, security.tls: required", for logs
  /// What to warn about at start, or "": server.tls is off while the cluster links are TLS
  /// and the HTTP port listens on an address other hosts can reach.
  std::string warning;
};

/// server.tls resolved against security.tls: cluster follows it (required: mutual, off:
/// plain), server is https, off is plain.
http_tls http_tls_of(const cluster_config& c);

/// "https with client certificates of the cluster CA (...)", "https (...)" or "plain http
/// (...)": what the head logs about its HTTP port at start.
std::string describe(const http_tls& t);

/// Checks the files of `t` (errors name the key and the file, as use_tls's) and builds the
/// context of the HTTPS connections: TLS 1.2 or later, the head's certificate and key, and
/// for mutual a required client certificate that the cluster CA signed. Null for plain.
std::shared_ptr<boost::asio::ssl::context> make_tls_context(const http_tls& t);

}  // namespace troupe
