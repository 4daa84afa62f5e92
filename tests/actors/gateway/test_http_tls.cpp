// The gateway's HTTP port under TLS (server.tls), across real processes and sockets: with
// security.tls required it answers only HTTPS clients that show a certificate of the cluster
// CA; with server.tls: server any client that trusts the head's certificate; never plaintext.
// The clients are curl, run as docs/security.md shows: they call the head by its certificate's
// name ("head", resolved to 127.0.0.1) and check it.
#include <fstream>
#include <nlohmann/json.hpp>

#include "actors/cluster/security_cluster.h"
#include "actors/gateway/http_tls.h"

namespace {

using namespace troupe;
using namespace troupe::test;
using namespace troupe::test::security;

/// What curl got: its exit code, the body, the HTTP status ("000": no HTTP answer) and stderr.
struct curl_reply {
  int code = -1;
  std::string body;
  std::string status;
  std::string err;
};

/// Runs `curl -sS <options> <url>` (shell syntax), writing the status after the body.
curl_reply curl(const std::string& options, const std::string& url, const std::filesystem::path& dir) {
  const auto r = run_command("curl -sS --max-time 30 " + options + " -w '\\n%{http_code}' " + url, dir / "curl.err");
  curl_reply out;
  out.code = r.code;
  out.err = r.err;
  const auto cut = r.out.rfind('\n');
  out.body = cut == std::string::npos ? "" : r.out.substr(0, cut);
  out.status = cut == std::string::npos ? r.out : r.out.substr(cut + 1);
  return out;
}

/// The head's HTTPS url on `port`: its certificate's name, which curl resolves to 127.0.0.1.
std::string head_url(uint16_t port) {
  const auto p = std::to_string(port);
  return "--resolve head:" + p + ":127.0.0.1 https://head:" + p;
}

/// curl's options for a client that trusts the cluster CA and shows certificate `name` of `dir`.
std::string client_options(const std::filesystem::path& dir, const std::string& name) {
  return "--cacert " + (dir / "ca.pem").string() + " --cert " + (dir / (name + ".pem")).string() + " --key " +
         (dir / (name + ".key")).string();
}

/// The body of a short greedy completion of the served model, `stream` or not.
std::string completion_body(const tls_cluster& cluster, bool stream) {
  const nlohmann::json j = {{"model", served_model_name(cluster.config())},
                            {"prompt", "The capital of France is"},
                            {"max_tokens", 4},
                            {"temperature", 0},
                            {"stream", stream}};
  return "-H 'Content-Type: application/json' -d '" + j.dump() + "'";
}

/// True when the server closes `fd` (having sent nothing) before `deadline`; closes `fd`.
bool closed_by_server(int fd, std::chrono::steady_clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
  pollfd p{fd, POLLIN, 0};
  char c;
  const bool closed = ::poll(&p, 1, std::max<int>(0, static_cast<int>(left.count()))) == 1 && ::read(fd, &c, 1) <= 0;
  ::close(fd);
  return closed;
}

/// Checks that a plaintext HTTP client and a raw TCP client get no HTTP answer on `port`.
void check_plaintext_refused(uint16_t port, const std::filesystem::path& dir) {
  const auto http = curl("", "http://127.0.0.1:" + std::to_string(port) + "/health", dir);
  INFO("plaintext HTTP: curl exit " << http.code << ", status " << http.status << ", " << http.err);
  CHECK(http.code != 0);
  CHECK(http.status == "000");
  const auto raw = talk_raw(port);
  INFO("raw TCP client received: " << raw.received);
  CHECK(raw.closed);
  CHECK(raw.received.find("HTTP/") == std::string::npos);
}

}  // namespace

TEST_CASE("server.tls resolves against security.tls, and off beside TLS links warns on a reachable address",
          "[actors][security][http]") {
  auto c = default_cluster_config();
  CHECK(http_tls_of(c).mode == http_tls_mode::plain);
  CHECK(describe(http_tls_of(c)) == "plain http (server.tls: cluster, security.tls: off)");
  c.security = {"required", "ca.pem", "head.pem", "head.key"};
  const auto mutual = http_tls_of(c);
  CHECK(mutual.mode == http_tls_mode::mutual);
  CHECK(mutual.identity.ca == "ca.pem");
  CHECK(mutual.identity.certificate == "head.pem");
  CHECK(mutual.identity.key == "head.key");
  CHECK_THAT(describe(mutual), Catch::StartsWith("https with client certificates of the cluster CA ca.pem"));
  c.server.tls = "server";
  const auto https = http_tls_of(c);
  CHECK(https.mode == http_tls_mode::https);
  CHECK(https.identity.ca.empty());  // no client certificate asked
  CHECK_THAT(describe(https), Catch::StartsWith("https with the certificate head.pem"));
  c.server.tls = "off";
  CHECK(http_tls_of(c).mode == http_tls_mode::plain);
  CHECK(http_tls_of(c).warning.empty());  // loopback: for a proxy on this host
  c.server.host = "0.0.0.0";
  CHECK_THAT(http_tls_of(c).warning, Catch::Contains("server.tls is off: the HTTP port on 0.0.0.0 is plain HTTP"));
}

TEST_CASE("with security.tls required, the HTTP port answers only HTTPS clients with a certificate of the cluster CA",
          "[actors][security][http][slow]") {
  tls_cluster cluster("https-mutual");
  const auto url = head_url(cluster.http_port());
  const auto certs = cluster.dir() / "certs";
  const auto& dir = cluster.dir();
  CHECK(read_text(cluster.log()).find("http: https with client certificates of the cluster CA") != std::string::npos);
  // A client that connects and says nothing: the handshake timeout (10 s) ends it.
  const int silent = connect_loopback(cluster.http_port());
  const auto silent_deadline = std::chrono::steady_clock::now() + 20s;

  const auto health = curl(client_options(certs, "client"), url + "/health", dir);
  INFO("member /health: curl exit " << health.code << ", " << health.err);
  CHECK(health.status == "200");
  CHECK(health.body == R"({"status":"ok"})");
  const auto completion = curl(client_options(certs, "client") + " " + completion_body(cluster, false),
                               url + "/v1/completions", dir);
  INFO("member completion: " << completion.body << " " << completion.err);
  REQUIRE(completion.status == "200");
  const auto answer = nlohmann::json::parse(completion.body);
  CHECK(answer.at("object") == "text_completion");
  CHECK_FALSE(answer.at("choices").at(0).at("text").get<std::string>().empty());
  CHECK(answer.at("usage").at("completion_tokens").get<int>() >= 1);

  // No certificate, and a certificate of another CA: the handshake fails, no HTTP answer.
  const auto bare = curl("--cacert " + (certs / "ca.pem").string(), url + "/health", dir);
  INFO("no certificate: curl exit " << bare.code << ", status " << bare.status << ", " << bare.err);
  CHECK(bare.code != 0);
  CHECK(bare.status == "000");
  const auto stranger = cluster.stranger();
  const auto foreign = curl("--cacert " + (certs / "ca.pem").string() + " --cert " + stranger.certificate +
                                " --key " + stranger.key,
                            url + "/health", dir);
  INFO("another CA's certificate: curl exit " << foreign.code << ", status " << foreign.status << ", " << foreign.err);
  CHECK(foreign.code != 0);
  CHECK(foreign.status == "000");
  check_plaintext_refused(cluster.http_port(), dir);

  // The refusals touched nothing else: the member is still served, the head still runs.
  CHECK(curl(client_options(certs, "client"), url + "/health", dir).status == "200");
  CHECK(closed_by_server(silent, silent_deadline));
  CHECK(cluster.head_alive());
  CHECK(read_text(cluster.log()).find("http: TLS handshake with 127.0.0.1:") != std::string::npos);
}

TEST_CASE("with server.tls server, a client without a certificate that trusts the CA gets answers and SSE streams, "
          "and plaintext gets none",
          "[actors][security][http][slow]") {
  tls_cluster cluster("https-server", {}, "server");
  const auto url = head_url(cluster.http_port());
  const auto ca = "--cacert " + (cluster.dir() / "certs" / "ca.pem").string();
  const auto& dir = cluster.dir();
  CHECK(read_text(cluster.log()).find("http: https with the certificate") != std::string::npos);
  const auto health = curl(ca, url + "/health", dir);
  INFO("/health: curl exit " << health.code << ", " << health.err);
  CHECK(health.status == "200");
  CHECK(health.body == R"({"status":"ok"})");
  // A streamed completion over HTTPS: SSE data events, the last one [DONE].
  const auto stream = curl(ca + " -N " + completion_body(cluster, true), url + "/v1/completions", dir);
  INFO("stream: " << stream.body << " " << stream.err);
  REQUIRE(stream.status == "200");
  CHECK(stream.body.rfind("data: {", 0) == 0);
  CHECK(stream.body.find("\"text_completion\"") != std::string::npos);
  const std::string done = "data: [DONE]";
  REQUIRE(stream.body.size() > done.size());
  CHECK(stream.body.find(done) == stream.body.find_last_not_of("\r\n") + 1 - done.size());
  check_plaintext_refused(cluster.http_port(), dir);
  CHECK(curl(ca, url + "/health", dir).status == "200");
}

TEST_CASE("server.tls server with a missing certificate file stops troupe serve naming the key and the file",
          "[actors][security][http]") {
  const auto dir = scratch_dir("https-missing-cert");
  make_certs(dir / "certs", "head");
  const auto base = static_cast<uint16_t>(reserve_ports(3));
  auto c = default_cluster_config();
  c.head.port = base;
  c.nodes.front().port = static_cast<uint16_t>(base + 1);
  c.server.port = static_cast<uint16_t>(base + 2);
  c.server.tls = "server";
  const auto missing = (dir / "certs" / "missing.pem").string();
  c.security.certificate = missing;
  c.security.key = (dir / "certs" / "head.key").string();
  std::ofstream(dir / "cluster.yaml") << to_yaml(c);
  const auto r = run_command("timeout 60 " + troupe_exe() + " serve --config " + (dir / "cluster.yaml").string(),
                             dir / "serve.err");
  CHECK(r.code == 1);
  CHECK_THAT(r.err, Catch::Contains("security.certificate: " + missing + ": cannot read it: No such file or directory"));
  CHECK(port_is_free(c.server.port));
  CHECK(port_is_free(base));
}
