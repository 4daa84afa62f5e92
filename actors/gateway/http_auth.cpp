#include "actors/gateway/http_auth.h"

#include <algorithm>
#include <cctype>

namespace troupe::http {

namespace {

/// 0 when a == b, else non-zero; reads max(|a|, |b|) bytes of each (zero past the end).
unsigned difference(std::string_view a, std::string_view b) {
  unsigned d = a.size() == b.size() ? 0u : 1u;
  const size_t n = std::max(a.size(), b.size());
  for (size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    const unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    d |= static_cast<unsigned>(x ^ y);
  }
  return d;
}

}  // namespace

bool key_matches(const std::vector<std::string>& keys, std::string_view presented) {
  unsigned found = 0;
  for (const auto& k : keys) found |= difference(k, presented) == 0 ? 1u : 0u;
  return found != 0 && !presented.empty();
}

std::string bearer_key(std::string_view authorization) {
  constexpr std::string_view scheme = "bearer ";
  if (authorization.size() <= scheme.size()) return "";
  for (size_t i = 0; i < scheme.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(authorization[i])) != scheme[i]) return "";
  return std::string(authorization.substr(scheme.size()));
}

access inference_access(const server_section& s, std::string_view authorization) {
  if (s.api_keys.empty()) return access::allowed;
  if (authorization.empty()) return access::missing_key;
  return key_matches(s.api_keys, bearer_key(authorization)) ? access::allowed : access::wrong_key;
}

access admin_access(const server_section& s, std::string_view authorization, bool client_is_loopback) {
  if (!s.admin_keys.empty()) {
    if (authorization.empty()) return access::missing_key;
    return key_matches(s.admin_keys, bearer_key(authorization)) ? access::allowed : access::wrong_key;
  }
  if (!client_is_loopback) return access::not_loopback;
  return inference_access(s, authorization);
}

std::string exposure_warning(const server_section& s) {
  if (is_loopback_host(s.host) || !s.api_keys.empty()) return "";
  return "the HTTP API listens on " + s.host +
         ", which other hosts can reach, and has no API key: anyone who reaches it can use it "
         "(set server.api_keys, or listen on 127.0.0.1)";
}

}  // namespace troupe::http
