#include "actors/gateway/http_tls.h"

#include <openssl/ssl.h>

#include <stdexcept>

namespace troupe {

namespace {

/// Runs `load` (an Asio call that reads `file`), turning its error into one naming `from`.
template <class Load>
void load_file(const std::string& from, const std::string& file, Load load) {
  boost::system::error_code ec;
  load(ec);
  if (ec) throw std::runtime_error(from + ": " + file + ": cannot load it for HTTPS: " + ec.message());
}

}  // namespace

http_tls http_tls_of(const cluster_config& c) {
  http_tls t;
  const auto& mode = c.server.tls;
  t.settings = "server.tls: " + mode + ", security.tls: " + c.security.tls;
  if (mode == "off" && c.security.tls == "required" && !is_loopback_host(c.server.host))
    t.warning = "server.tls is off: the HTTP port on " + c.server.host +
                " is plain HTTP, which other hosts can reach and read, while the cluster links are TLS; listen "
                "on 127.0.0.1 behind a TLS-terminating proxy, or set server.tls: cluster or server "
                "(docs/security.md)";
  if (mode == "off" || (mode == "cluster" && c.security.tls != "required")) return t;
  t.mode = mode == "server" ? http_tls_mode::https : http_tls_mode::mutual;
  t.identity.certificate = c.security.certificate;
  t.identity.key = c.security.key;
  if (t.mode == http_tls_mode::mutual) t.identity.ca = c.security.ca;
  return t;
}

std::string describe(const http_tls& t) {
  switch (t.mode) {
    case http_tls_mode::mutual:
      return "https with client certificates of the cluster CA " + t.identity.ca + " (" + t.settings +
             "): clients without one are refused";
    case http_tls_mode::https:
      return "https with the certificate " + t.identity.certificate + " (" + t.settings +
             "): no client certificate asked";
    case http_tls_mode::plain:
      break;
  }
  return t.settings.empty() ? "plain http" : "plain http (" + t.settings + ")";
}

std::shared_ptr<boost::asio::ssl::context> make_tls_context(const http_tls& t) {
  namespace ssl = boost::asio::ssl;
  if (t.mode == http_tls_mode::plain) return nullptr;
  check_identity(t.identity);
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_server);
  ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                   ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1 | ssl::context::single_dh_use);
  SSL_CTX_set_min_proto_version(ctx->native_handle(), TLS1_2_VERSION);
  const auto& id = t.identity;
  load_file(id.certificate_from, id.certificate,
            [&](auto& ec) { ctx->use_certificate_chain_file(id.certificate, ec); });
  load_file(id.key_from, id.key, [&](auto& ec) { ctx->use_private_key_file(id.key, ssl::context::pem, ec); });
  if (t.mode == http_tls_mode::https) return ctx;
  load_file(id.ca_from, id.ca, [&](auto& ec) { ctx->load_verify_file(id.ca, ec); });
  // The CA names clients are told to pick a certificate of.
  if (STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(id.ca.c_str()))
    SSL_CTX_set_client_CA_list(ctx->native_handle(), names);
  ctx->set_verify_mode(ssl::verify_peer | ssl::verify_fail_if_no_peer_cert);
  // Sessions resumed under a verified peer need an id context (else resumption fails).
  static const unsigned char session_context[] = "troupe-http";
  SSL_CTX_set_session_id_context(ctx->native_handle(), session_context, sizeof session_context - 1);
  return ctx;
}

}  // namespace troupe
