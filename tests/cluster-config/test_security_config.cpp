// The cluster file's `security:` section and the nodes' own certificates: defaults (plaintext
// links), every key read and written back, and errors that name the key.
#include <catch2/catch.hpp>

#include "cluster-config/cluster_config.h"
#include "config_test_util.h"

using namespace troupe;

namespace {

const char* const tls_file =
    "nodes:\n"
    "  - {name: n0, host: 127.0.0.1, port: 7101, certificate: certs/n0.pem, key: certs/n0.key}\n"
    "  - {name: n1, host: 127.0.0.1, port: 7102}\n"
    "security:\n"
    "  tls: required\n"
    "  ca: certs/ca.pem\n"
    "  certificate: certs/head.pem\n"
    "  key: certs/head.key\n";

}  // namespace

TEST_CASE("cluster links are plaintext by default and need no certificate", "[config][security]") {
  const auto c = parse_cluster_config("", "test.yaml");
  CHECK(c.security.tls == "off");
  CHECK(c.security.ca.empty());
  CHECK(c.security.certificate.empty());
  CHECK(c.security.key.empty());
  CHECK(c.nodes.front().certificate.empty());
}

TEST_CASE("every security key and a node's own certificate are read and written back", "[config][security]") {
  const auto c = parse_cluster_config(tls_file, "test.yaml");
  CHECK(c.security.tls == "required");
  CHECK(c.security.ca == "certs/ca.pem");
  CHECK(c.security.certificate == "certs/head.pem");
  CHECK(c.security.key == "certs/head.key");
  CHECK(c.nodes[0].certificate == "certs/n0.pem");
  CHECK(c.nodes[0].key == "certs/n0.key");
  CHECK(c.nodes[1].certificate.empty());
  const auto back = parse_cluster_config(to_yaml(c), "back.yaml");
  CHECK(back.security.tls == c.security.tls);
  CHECK(back.security.ca == c.security.ca);
  CHECK(back.security.certificate == c.security.certificate);
  CHECK(back.security.key == c.security.key);
  CHECK(back.nodes[0].certificate == c.nodes[0].certificate);
  CHECK(back.nodes[0].key == c.nodes[0].key);
  auto o = c;
  apply_overrides(o, {"security.tls=off", "nodes[1].certificate=certs/n1.pem", "nodes[1].key=certs/n1.key"});
  CHECK(o.security.tls == "off");
  CHECK(o.nodes[1].certificate == "certs/n1.pem");
}

TEST_CASE("bad security values are refused naming the key", "[config][security]") {
  const auto bad_mode = test::parse_error("security: {tls: maybe}\n");
  CHECK(bad_mode.path == "security.tls");
  CHECK_THAT(bad_mode.what(), Catch::Contains("must be off or required, got \"maybe\""));
  const auto no_ca = test::parse_error("security: {tls: required, certificate: h.pem, key: h.key}\n");
  CHECK(no_ca.path == "security.ca");
  const auto no_cert = test::parse_error("security: {tls: required, ca: ca.pem}\n");
  CHECK(no_cert.path == "security.certificate");
  CHECK_THAT(no_cert.what(), Catch::Contains("name the head's certificate and key"));
  const auto lone_cert = test::parse_error("security: {certificate: h.pem}\n");
  CHECK(lone_cert.path == "security.key");
  const auto lone_node_key = test::parse_error("nodes:\n  - {name: n0, key: n0.key}\n");
  CHECK(lone_node_key.path == "nodes[0].certificate");
  CHECK_THAT(lone_node_key.what(), Catch::Contains("go together"));
  const auto typo = test::parse_error("security: {tsl: required}\n");
  CHECK_THAT(typo.what(), Catch::Contains("tsl"));
}

TEST_CASE("the HTTP port follows the cluster links' TLS by default, and server.tls is read and written back",
          "[config][security]") {
  CHECK(parse_cluster_config("", "test.yaml").server.tls == "cluster");
  const auto c = parse_cluster_config(std::string(tls_file) + "server: {tls: server}\n", "test.yaml");
  CHECK(c.server.tls == "server");
  CHECK(parse_cluster_config(to_yaml(c), "back.yaml").server.tls == "server");
  auto o = c;
  apply_overrides(o, {"server.tls=off"});
  CHECK(o.server.tls == "off");
}

TEST_CASE("a bad server.tls, or server.tls server without the head's certificate, is refused naming the key",
          "[config][security]") {
  const auto bad = test::parse_error("server: {tls: mutual}\n");
  CHECK(bad.path == "server.tls");
  CHECK_THAT(bad.what(), Catch::Contains("test.yaml: server.tls: must be cluster (as security.tls), server "
                                         "(HTTPS, no client certificate) or off (plain HTTP), got \"mutual\""));
  const auto no_cert = test::parse_error("server: {tls: server}\n");
  CHECK(no_cert.path == "security.certificate");
  CHECK_THAT(no_cert.what(), Catch::Contains("server.tls is server (HTTPS): name the head's certificate and key"));
  // Links off, HTTPS on: the head's pair is all it needs (no CA).
  const auto ok = parse_cluster_config("server: {tls: server}\nsecurity: {certificate: h.pem, key: h.key}\n");
  CHECK(ok.security.tls == "off");
  CHECK(ok.server.tls == "server");
}
