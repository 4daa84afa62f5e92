#include "actors/link_security.h"

#include <dlfcn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>

// -- a fix for CAF 0.17.6's OpenSSL module ---------------------------------------------------
//
// libcaf_openssl calls SSL_get_error after SSL_read, SSL_write, SSL_accept and SSL_connect
// without emptying the thread's error queue first, as SSL_get_error(3) requires, and never
// drains it after a failure. So one failed handshake (a plaintext or uncertified peer) leaves
// an error in the multiplexer thread's queue, and that thread's next read on a healthy link
// that merely has no data yet (SSL_ERROR_WANT_READ) is taken for a fatal error: the link to
// the head or a node is closed (remote_link_unreachable). These definitions take the place of
// libssl's for libcaf_openssl (the executable's symbols come first in the dynamic lookup) and
// empty the queue before each call, then call libssl's own.

namespace {

template <class Fn>
Fn libssl_function(const char* name) {
  auto* f = reinterpret_cast<Fn>(::dlsym(RTLD_NEXT, name));
  if (!f) std::abort();  // libssl is linked: it always has them
  return f;
}

}  // namespace

extern "C" {

int SSL_read(SSL* ssl, void* buf, int num) {
  static const auto real = libssl_function<int (*)(SSL*, void*, int)>("SSL_read");
  ERR_clear_error();
  return real(ssl, buf, num);
}

int SSL_write(SSL* ssl, const void* buf, int num) {
  static const auto real = libssl_function<int (*)(SSL*, const void*, int)>("SSL_write");
  ERR_clear_error();
  return real(ssl, buf, num);
}

int SSL_accept(SSL* ssl) {
  static const auto real = libssl_function<int (*)(SSL*)>("SSL_accept");
  ERR_clear_error();
  return real(ssl);
}

int SSL_connect(SSL* ssl) {
  static const auto real = libssl_function<int (*)(SSL*)>("SSL_connect");
  ERR_clear_error();
  return real(ssl);
}

}  // extern "C"

namespace troupe {

namespace {

template <class T, void (*Free)(T*)>
struct openssl_deleter {
  void operator()(T* p) const { Free(p); }
};
using x509_ptr = std::unique_ptr<X509, openssl_deleter<X509, X509_free>>;
using pkey_ptr = std::unique_ptr<EVP_PKEY, openssl_deleter<EVP_PKEY, EVP_PKEY_free>>;
using store_ptr = std::unique_ptr<X509_STORE, openssl_deleter<X509_STORE, X509_STORE_free>>;
using store_ctx_ptr = std::unique_ptr<X509_STORE_CTX, openssl_deleter<X509_STORE_CTX, X509_STORE_CTX_free>>;

/// "<from>: <file>: <why>".
std::runtime_error identity_error(const std::string& from, const std::string& file, const std::string& why) {
  return std::runtime_error(from + ": " + file + ": " + why);
}

/// Opens `file` for reading; throws naming `from` and the OS's reason.
std::unique_ptr<FILE, int (*)(FILE*)> open_pem(const std::string& from, const std::string& file) {
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(file.c_str(), "r"), &std::fclose);
  if (!f) throw identity_error(from, file, std::string("cannot read it: ") + std::strerror(errno));
  return f;
}

x509_ptr read_certificate(const std::string& from, const std::string& file) {
  auto f = open_pem(from, file);
  x509_ptr cert(PEM_read_X509(f.get(), nullptr, nullptr, nullptr));
  ERR_clear_error();
  if (!cert) throw identity_error(from, file, "not a PEM certificate");
  return cert;
}

pkey_ptr read_key(const std::string& from, const std::string& file) {
  auto f = open_pem(from, file);
  pkey_ptr key(PEM_read_PrivateKey(f.get(), nullptr, nullptr, nullptr));
  ERR_clear_error();
  if (!key) throw identity_error(from, file, "not an unencrypted PEM private key");
  return key;
}

/// Throws unless `cert` is signed by `ca` (and both are in their validity period).
void check_signed_by(const tls_identity& id, X509* cert, X509* ca) {
  store_ptr store(X509_STORE_new());
  store_ctx_ptr ctx(X509_STORE_CTX_new());
  if (!store || !ctx || X509_STORE_add_cert(store.get(), ca) != 1 ||
      X509_STORE_CTX_init(ctx.get(), store.get(), cert, nullptr) != 1)
    throw std::runtime_error("cannot set up the certificate check (out of memory)");
  if (X509_verify_cert(ctx.get()) != 1)
    throw identity_error(id.certificate_from, id.certificate,
                         std::string("not accepted by the cluster CA ") + id.ca + " (" + id.ca_from + "): " +
                             X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx.get())));
}

}  // namespace

void check_identity(const tls_identity& id) {
  if (id.certificate.empty()) throw std::runtime_error(id.certificate_from + ": TLS is on but no certificate is set");
  if (id.key.empty()) throw std::runtime_error(id.key_from + ": TLS is on but no private key is set");
  x509_ptr ca;
  if (!id.ca.empty()) ca = read_certificate(id.ca_from, id.ca);
  auto cert = read_certificate(id.certificate_from, id.certificate);
  auto key = read_key(id.key_from, id.key);
  if (X509_check_private_key(cert.get(), key.get()) != 1) {
    ERR_clear_error();
    throw identity_error(id.key_from, id.key, "does not belong to the certificate " + id.certificate);
  }
  if (ca) check_signed_by(id, cert.get(), ca.get());
}

tls_identity head_identity(const cluster_config& c) {
  tls_identity id;
  if (c.security.tls != "required") return id;
  id.ca = c.security.ca;
  id.certificate = c.security.certificate;
  id.key = c.security.key;
  return id;
}

tls_identity node_identity(const cluster_config& c, const node_section& n) {
  auto id = head_identity(c);
  if (!id.enabled() || n.certificate.empty()) return id;
  for (size_t i = 0; i < c.nodes.size(); ++i)
    if (c.nodes[i].name == n.name) {
      const auto path = "nodes[" + std::to_string(i) + "].";
      id.certificate_from = path + "certificate";
      id.key_from = path + "key";
    }
  id.certificate = n.certificate;
  id.key = n.key;
  return id;
}

void use_tls(caf::actor_system_config& cfg, const tls_identity& id) {
  if (!id.enabled()) return;
  check_identity(id);
  cfg.load<caf::openssl::manager>();
  cfg.openssl_cafile = id.ca;
  cfg.openssl_certificate = id.certificate;
  cfg.openssl_key = id.key;
}

std::string describe_links(const caf::actor_system& sys) {
  if (!links_are_tls(sys)) return "plaintext";
  return "mutual TLS (CA " + sys.config().openssl_cafile + ")";
}

std::string links_notice(const caf::actor_system& sys, const std::string& host, bool& warn) {
  warn = false;
  if (links_are_tls(sys))
    return "cluster links: " + describe_links(sys) + "; peers without a certificate of this CA are refused";
  const bool loopback = is_loopback_host(host);
  warn = !loopback;
  if (loopback)
    return "cluster links: plaintext (security.tls: off) on the loopback address " + host +
           ": only processes of this host can reach them (docs/security.md)";
  return "cluster links: plaintext (security.tls: off) on " + host +
         ": any host that reaches this port can join the cluster and read its traffic; set security.tls: "
         "required (docs/security.md)";
}

std::string describe_sender(const caf::strong_actor_ptr& sender) {
  if (!sender) return "an anonymous sender";
  return "an actor of node " + to_string(sender->node());
}

}  // namespace troupe
