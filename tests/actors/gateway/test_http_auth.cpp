// Who may call the HTTP API (actors/gateway/http_auth.h): key comparison, the admin key rule,
// and the warning for an API that other hosts can reach without a key.
#include <catch2/catch.hpp>

#include "actors/gateway/http_auth.h"

using namespace troupe;
using namespace troupe::http;

namespace {

server_section with_keys(std::vector<std::string> api, std::vector<std::string> admin, std::string host = "127.0.0.1") {
  server_section s;
  s.host = std::move(host);
  s.api_keys = std::move(api);
  s.admin_keys = std::move(admin);
  return s;
}

}  // namespace

TEST_CASE("a key matches only an equal key, whatever its length or prefix", "[http][auth]") {
  const std::vector<std::string> keys{"secret-1", "other"};
  CHECK(key_matches(keys, "secret-1"));
  CHECK(key_matches(keys, "other"));
  CHECK_FALSE(key_matches(keys, "secret-"));
  CHECK_FALSE(key_matches(keys, "secret-12"));
  CHECK_FALSE(key_matches(keys, "Secret-1"));
  CHECK_FALSE(key_matches(keys, ""));
  CHECK_FALSE(key_matches({}, "secret-1"));
  CHECK_FALSE(key_matches({""}, ""));
}

TEST_CASE("a bearer header gives its key and any other header gives none", "[http][auth]") {
  CHECK(bearer_key("Bearer abc") == "abc");
  CHECK(bearer_key("bearer abc") == "abc");
  CHECK(bearer_key("Basic abc").empty());
  CHECK(bearer_key("Bearer ").empty());
  CHECK(bearer_key("").empty());
}

TEST_CASE("inference endpoints take any API key, or everyone when none is set", "[http][auth]") {
  CHECK(inference_access(with_keys({}, {}), "") == access::allowed);
  CHECK(inference_access(with_keys({"k"}, {}), "") == access::missing_key);
  CHECK(inference_access(with_keys({"k"}, {}), "Bearer x") == access::wrong_key);
  CHECK(inference_access(with_keys({"k"}, {}), "Bearer k") == access::allowed);
  CHECK(inference_access(with_keys({"k"}, {"a"}), "Bearer a") == access::wrong_key);
}

TEST_CASE("the admin API takes only an admin key, or without admin keys only loopback clients", "[http][auth]") {
  const auto admin = with_keys({"k"}, {"a"});
  CHECK(admin_access(admin, "Bearer a", false) == access::allowed);
  CHECK(admin_access(admin, "Bearer k", true) == access::wrong_key);
  CHECK(admin_access(admin, "", true) == access::missing_key);
  const auto none = with_keys({"k"}, {});
  CHECK(admin_access(none, "Bearer k", false) == access::not_loopback);
  CHECK(admin_access(none, "Bearer k", true) == access::allowed);
  CHECK(admin_access(none, "Bearer x", true) == access::wrong_key);
  CHECK(admin_access(with_keys({}, {}), "", true) == access::allowed);
  CHECK(admin_access(with_keys({}, {}), "", false) == access::not_loopback);
}

TEST_CASE("an API on a reachable address without keys gets a warning naming the fix", "[http][auth]") {
  CHECK(exposure_warning(with_keys({}, {}, "127.0.0.1")).empty());
  CHECK(exposure_warning(with_keys({}, {}, "localhost")).empty());
  CHECK(exposure_warning(with_keys({"k"}, {}, "0.0.0.0")).empty());
  const auto w = exposure_warning(with_keys({}, {}, "0.0.0.0"));
  CHECK(w.find("0.0.0.0") != std::string::npos);
  CHECK(w.find("server.api_keys") != std::string::npos);
}
